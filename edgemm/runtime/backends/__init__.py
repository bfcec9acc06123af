"""Bench and inference backends, one module each; every module here registers itself (see ARCHITECTURE.md)."""
