r"""The typed summaries to and from JSON-ready dicts, by their type hints
(:func:`encode`, :func:`decode`): every job writes its summary with
:func:`encode` and its renderers read a saved one back with :func:`decode`.

A field's ``metadata`` can ask for a different layout: ``"key"`` (its JSON
name), ``"omit_none"`` (left out when None), ``"flatten"`` (a dict merged into
its parent; on reading it takes the keys no other field claims). A ``float``
written as null (``nan`` in JSON-safe files) reads back as ``nan``; a field
missing from an older file takes its default.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections import abc
from typing import Any, Dict, Type, TypeVar, Union

__all__ = ["encode", "decode"]

T = TypeVar("T")


def _name(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def encode(obj: Any) -> Any:
    r"""``obj`` (dataclasses, lists, dicts, scalars) as plain JSON-ready data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("flatten"):
                out.update(encode(value))
            else:
                out[_name(f)] = encode(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    return obj


def _decode_dataclass(cls: Any, data: Any) -> Any:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    claimed = {_name(f) for f in fields if not f.metadata.get("flatten")}
    kwargs: Dict[str, Any] = {}
    for f in fields:
        if f.metadata.get("flatten"):
            rest = {k: v for k, v in data.items() if k not in claimed}
            kwargs[f.name] = decode(hints[f.name], rest)
        elif _name(f) in data:
            kwargs[f.name] = decode(hints[f.name], data[_name(f)])
    return cls(**kwargs)


def decode(tp: Any, data: Any) -> Any:
    r"""``data`` (as :func:`encode` wrote it) read back as the type ``tp``."""
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        if data is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return decode(inner[0], data) if len(inner) == 1 else data
    if origin in (list, tuple, abc.Sequence) or tp in (list, tuple):
        item = args[0] if args else Any
        return [decode(item, v) for v in data]
    if origin is dict:
        key, value = args if args else (Any, Any)
        return {decode(key, k): decode(value, v) for k, v in data.items()}
    if tp is float:
        return math.nan if data is None else float(data)
    if tp is int and data is not None:
        return int(data)
    return data


def decoded(cls: Type[T], data: Any) -> T:
    r"""Typed :func:`decode` of a dataclass."""
    return decode(cls, data)
