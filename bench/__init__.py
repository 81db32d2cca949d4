"""Benchmarks of deploystream against its performance targets and its peers.

Run ``python -m bench --help``. Nothing here is imported by the product; the no-op
executor in :mod:`bench.noop_executor` exists only for the dispatch benchmark and is
never reachable from the wire.
"""
