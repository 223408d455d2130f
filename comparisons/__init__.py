r"""Comparisons, benchmarks and the main report (``python -m comparisons``)."""
