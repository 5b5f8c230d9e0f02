"""Candor's benchmarks: each module is run from the repository root as `python -m bench.<name>` (`make bench`
runs them all, then `python -m bench.report` renders docs/benchmarks.md from what they measured)."""
