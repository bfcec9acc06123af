"""Built-in models, one module each; every module here registers its entries in
``edgemm.models.registry.ZOO`` (see ARCHITECTURE.md)."""
