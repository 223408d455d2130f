"""The README's Quickstart runs as written, and its set-up commands are what CI
runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


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


def test_set_up_commands_are_what_ci_runs():
    text = README.read_text()
    section = text[text.index("## Set up and run") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    run, check = block.strip().splitlines()
    install = 'pip install torch==2.14.1 torchvision==0.29.1 -e "'
    assert (
        run
        == "pip install torch==2.14.1 torchvision==0.29.1 -e . && python -m comparisons"
    )
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert check == ci and check.startswith(install)
    for script in re.findall(r"\.ci/\w+", check):
        assert (ROOT / script).exists(), script
