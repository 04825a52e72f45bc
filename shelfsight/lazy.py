"""Package APIs whose names load on first use (packages whose modules are heavy to import), and
optional dependencies checked before use."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.<module>`` only when one of its names is used."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
    return __getattr__


@functools.lru_cache(maxsize=None)
def have_optional(module: str, extra: str, skipped: str) -> bool:
    """Whether an optional dependency is installed; when not, one warning says what is
    skipped and which extra adds it (once per process)."""
    if importlib.util.find_spec(module) is not None:
        return True
    log.warning("%s skipped: %s is not installed (pip install 'shelfsight[%s]')", skipped, module, extra)
    return False
