"""Benchmarks of defenses and attacks that reproduce the papers' tables (``advkit bench``).

`run_bench(BenchConfig(...), out)` runs the AdvFilter robustness suite (oblivious and adaptive PGD
against each defense) or the Pasadena suite, resumably, and writes ``results.json``,
``results.csv``, ``results.md`` and PNG plots into ``out``.
"""

from advkit.bench.runner import MODES, SUITES, BenchConfig, run_bench

__all__ = ["MODES", "SUITES", "BenchConfig", "run_bench"]
