"""Export: targets registered by name (``targets/``), per-target profiles, validation against PyTorch."""
