"""Compression: recipes of registered stages (``stages/``) and quantizers (``quantizers/``) under gates."""
