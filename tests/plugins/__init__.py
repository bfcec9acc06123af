"""Test-only components, one file each: what adding a backend, quantizer, export target, zoo model
or data format takes (see ARCHITECTURE.md). Importing a module registers its component."""
