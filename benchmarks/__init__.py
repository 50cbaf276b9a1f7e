"""Benchmarks: each prints a table, writes benchmarks/results/<name>.json and compares with a same-run baseline."""
