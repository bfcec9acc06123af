"""Benchmarks: timing loop, typed report (``schema.py``), rendering, regression gate, per-modality breakdown."""
