"""Reproduction and performance benchmarks (``minority benchmark PROTOCOL``).

Protocols (:data:`PROTOCOLS`): ``mp-table1`` (MinorityPrompt Tab. 1), ``mp-table2`` (its ablations),
``mp-table3`` (diversity), ``sgms-table1`` (SGMS Tab. 1 on a pixel model) and ``perf`` (time, memory and
UNet passes per method and backbone). Each generates every method with identical prompts and seeds,
evaluates with :func:`minority.metrics.evaluate` and writes ``results.csv``, ``results.md`` (mean ± 95% CI),
PNG plots, labelled grids and ``benchmark.json``; ``minority report OUT`` renders them as one HTML page.

    from minority.benchmark import BenchmarkConfig, benchmark
    benchmark(BenchmarkConfig("mp-table1", out="outputs/t1", quick=True))
"""

from minority.benchmark.config import BenchmarkConfig, Plan, resolve
from minority.benchmark.protocols import PROTOCOLS, Arm, EvalGroup, Protocol, Size, get_protocol
from minority.benchmark.runner import benchmark

__all__ = ["PROTOCOLS", "Arm", "BenchmarkConfig", "EvalGroup", "Plan", "Protocol", "Size", "benchmark",
           "get_protocol", "resolve"]
