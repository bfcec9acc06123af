"""The export-target registry. Targets register here (one module each in ``targets/``); profiles read it
to check the target they name and to validate each target's own section."""
from __future__ import annotations

from edgemm.registry import Registry

EXPORT_TARGETS: Registry = Registry("export target", "edgemm.export.targets", entry_points="edgemm.export_targets")
