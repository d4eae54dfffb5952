"""Benchmarks that print ratios measured side by side; run as `python -m bench.NAME`."""
