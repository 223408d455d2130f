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
    assert [r.split(" | ")[4] for r in rows] == ["anytime", "fixed"]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert cells[3] == "64"  # the default sampler's batches of 300 examples
        for miss in map(float, cells[5:8]):
            assert 0.0 <= miss <= 1.0 and miss * 4 == int(miss * 4)
        # no truncation: the target is the Shapley value, known exactly
        assert float(cells[9]) == 0.0 and float(cells[8]) == 0.0
        assert re.fullmatch(r"\d+/40", cells[11])  # unit misses of 4 x 10 units
        assert re.fullmatch(r"\d/4", cells[12])
    assert "at most 3000 evaluations per run" in out


def test_coverage_rejects_unknown_metric():
    with pytest.raises(SystemExit):
        main(["coverage", "--metrics", "brier"])
