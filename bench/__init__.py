"""Benchmarks: each module prints one JSON document (see bench/common.py)."""
