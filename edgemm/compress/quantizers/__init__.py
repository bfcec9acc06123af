"""Quantizers, one module each; every module here registers itself in
``edgemm.compress.quantizer.QUANTIZERS`` (see ARCHITECTURE.md)."""
