"""Benchmarks (make bench); docs/RESULTS.md keeps the results with their commands."""
