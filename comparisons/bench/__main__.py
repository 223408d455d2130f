r"""``python -m comparisons.bench``: the same as ``python -m comparisons bench``."""

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
