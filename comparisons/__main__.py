r"""``python -m comparisons [subcommand] [flags]``: see :mod:`comparisons.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
