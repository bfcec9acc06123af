"""Export targets, one module each; every module here registers itself in
``edgemm.export.target.EXPORT_TARGETS`` (see ARCHITECTURE.md)."""
