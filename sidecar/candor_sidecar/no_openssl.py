"""Keep OpenSSL out of the sidecar: about 9 MiB of every pod's memory that buys it nothing.

asyncio imports ssl in case a caller wants TLS, and hmac (which `secrets` imports) loads hashlib's OpenSSL
backend; the sidecar serves plain HTTP and the agent protocol and hashes nothing. A None entry in
sys.modules makes those optional imports fail (the import system's documented way): asyncio then runs
without TLS support, and hashlib falls back to its built-in implementations.

The sidecar's entry points (`candor sidecar`, `python -m candor_sidecar`) call it before importing any other
module of Candor's: the tracer package, which the sidecar's modules import (its pod contract, its journal
reader), loads asyncio and secrets. This module imports only sys, so importing it loads neither.
"""

from __future__ import annotations

import sys
from typing import cast


def keep_openssl_out() -> None:
    """Block ssl and _hashlib for this process, unless asyncio or hashlib is loaded already (then too late)."""
    modules = cast("dict[str, object]", sys.modules)  # typeshed allows modules only; None is the blocker
    if "asyncio" not in modules and "hashlib" not in modules:
        modules.setdefault("ssl", None)
        modules.setdefault("_hashlib", None)
