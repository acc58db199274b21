"""Benchmarks run by ``make bench``: each prints figures measured side by side in one run, as ratios."""
