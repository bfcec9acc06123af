"""Compression stages, one module each; every module here registers itself in
``edgemm.compress.stage.STAGES`` (see ARCHITECTURE.md)."""
