import re

import pytest

from comparisons.cli import main


def test_coverage_table_rows(capsys):
    # mlp, cross-entropy, no truncation: about 200 evaluations per run
    assert (
        main(
            [
                "coverage",
                "--seeds",
                "4",
                "--games",
                "mlp",
                "--metrics",
                "cross-entropy",
                "--truncation",
                "none",
                "--bounds",
                "anytime,fixed",
                "--max-evaluations",
                "3000",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith("| mlp")]
    assert [r.split(" | ")[3] for r in rows] == ["anytime", "fixed"]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        miss = float(cells[4])
        assert 0.0 <= miss <= 1.0 and miss * 4 == int(miss * 4)
        assert re.fullmatch(r"\d+/40", cells[7])  # unit misses out of 4 x 10 units
        assert re.fullmatch(r"\d/4", cells[8])
    assert "at most 3000 evaluations per run" in out


def test_coverage_rejects_unknown_metric():
    with pytest.raises(SystemExit):
        main(["coverage", "--metrics", "brier"])
