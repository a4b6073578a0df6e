"""The folder where brats-seg keeps what it can make again: downloaded examples, converted networks."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the cache folder.
CACHE_ENV = "BRATS_SEG_CACHE"


def default_cache_dir() -> Path:
    """``$BRATS_SEG_CACHE``, else ``$XDG_CACHE_HOME/brats_seg``, else ``~/.cache/brats_seg``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "brats_seg"
