"""Data sources, one module each: named datasets (``edgemm-digits``) and file formats. Every module
here registers itself in ``edgemm.data.datasets.DATASETS`` (see ARCHITECTURE.md)."""
