"""Code named inside a file is code: which factories and data functions edgemm may run.

A run directory's ``model.json`` names a ``module:function`` factory and its arguments, and a model
contract may name a ``module:function`` data source. Users download and share run directories like
checkpoints, so loading one must not run whatever it names (``factory: os:system``). As with
Hugging Face's ``trust_remote_code``, code runs when it is

- edgemm's own or an installed zoo entry's factory (installing a package is trusting it),
- named by the user in this process (on the command line or in a Python call), or
- allowed outright: ``edgemm --trust-code`` or ``EDGEMM_TRUST_CODE=1``.

The policy is per process, like the interpreter's import path: a compress run that was given
``mypkg.model:build`` may reload the run directories it writes with that factory.
"""
from __future__ import annotations

import os

from edgemm.errors import CodeNotTrusted

_named: set[str] = set()
_trust_all = False


def trust_everything(flag: bool) -> None:
    """``--trust-code``: every factory and data function named in a loaded file may run."""
    global _trust_all
    _trust_all = flag


def trust(ref: str) -> None:
    """The user named this ``module:function`` themselves, so files naming it may run it."""
    _named.add(ref)


def is_trusted(ref: str) -> bool:
    return _trust_all or ref in _named or os.environ.get("EDGEMM_TRUST_CODE", "").lower() in ("1", "true", "yes")


def require_trusted(ref: str, where: str, what: str = "factory") -> None:
    """Refuse, before importing anything, to run code that ``where`` (a file) names and nobody trusted."""
    if is_trusted(ref):
        return
    raise CodeNotTrusted(
        f"{where} names the {what} {ref!r}: loading it would run that code, and edgemm does not run code "
        "named in a file unless you say you trust it",
        f"if you trust where it came from, run `edgemm --trust-code ...` (or set EDGEMM_TRUST_CODE=1); or name "
        f"the code yourself on the command line ({ref})")
