"""Loops compiled by numba on first use, with numba's on-disk cache placed where it can live.

Some steps are loops by nature (the chord Viterbi, the tempo score, walking the events of a
track byte by byte): in Python they cost microseconds per step, in numpy many small calls.
A function decorated here is compiled by numba with ``cache=True`` the first time it is
called: the first process on a machine compiles (seconds, once), later processes load the
machine code from the cache (well under a second, mostly importing numba), and importing a
module that defines kernels (the daemon, ``midictl status``) never imports numba at all.

Where the cache goes: numba writes to ``NUMBA_CACHE_DIR`` when it is set, else beside the
kernel's module when the package directory is writable; when neither (a read-only system
install), it is set here to ``$XDG_CACHE_HOME/midid/numba`` (or ``~/.cache/midid/numba``, or a
per-user directory under the system temp directory) before numba is imported.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def numba_cache_dir(package_dir: Path, environ: dict[str, str]) -> str | None:
    """The NUMBA_CACHE_DIR to set, or None when numba's own choice works (variable already
    set, or ``package_dir`` writable so the cache sits in its ``__pycache__``)."""
    if environ.get("NUMBA_CACHE_DIR") or os.access(package_dir, os.W_OK | os.X_OK):
        return None
    homes = [environ.get("XDG_CACHE_HOME"), environ.get("HOME") and f"{environ['HOME']}/.cache"]
    candidates = [Path(h) / "midid" / "numba" for h in homes if h]
    candidates.append(Path(tempfile.gettempdir()) / f"midid-numba-{os.getuid()}")
    for candidate in candidates:
        if _writable_dir(candidate):
            return str(candidate)
    return None


def _import_numba(package_dir: Path) -> Any:
    cache_dir = numba_cache_dir(package_dir, dict(os.environ))
    if cache_dir is not None:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    import numba

    if cache_dir is not None:  # numba may have been imported (and configured) before
        numba.config.CACHE_DIR = cache_dir
    return numba


KERNELS: list[str] = []  # every kernel defined (its module imported), as "module.name"
_READY: set[str] = set()  # kernels compiled or loaded from the cache in this process


def compiled_on_first_call(fn: Callable) -> Callable:
    """``fn`` compiled with numba (cached, GIL released) when first called."""
    compiled: Callable | None = None
    package_dir = Path(fn.__code__.co_filename).parent
    name = f"{fn.__module__}.{fn.__name__}"
    KERNELS.append(name)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        nonlocal compiled
        if compiled is None:
            compiled = _import_numba(package_dir).njit(cache=True, nogil=True)(fn)
            result = compiled(*args)  # compiles, or loads from the cache
            _READY.add(name)
            return result
        return compiled(*args)

    return call


def ready_kernels() -> set[str]:
    """The kernels already compiled (or loaded from the cache) in this process."""
    return set(_READY)
