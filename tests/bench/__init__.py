"""Benchmarks: `make bench` runs `python -m tests.bench.run --out bench/results`."""
