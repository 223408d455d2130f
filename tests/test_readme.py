"""The README's Quickstart runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_as_written(capsys):
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README) + ":Quickstart", "exec"), scope)
    res, acc = scope["res"], scope["acc"]
    assert len(res.removal_set) == 10 and res.refine_evaluations > 0
    intact, without_top, without_set = acc.tolist()
    assert intact > 0.95 and without_set < without_top < intact
    assert "removal set (10 units" in capsys.readouterr().out
