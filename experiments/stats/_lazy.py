"""Third-party numerical modules loaded on first use, not at import.

scipy.stats/optimize/special, statsmodels and pandas cost ~0.9 s of CPU to import, and
``experiments.stats`` is reached at Django setup (services -> metric kinds -> stats), so every
``manage.py`` command, worker and importer paid it although few of them run a statistic.
``lazy_module("scipy.special")`` returns a stand-in whose first attribute access imports the
real module; after that each access is one attribute lookup more.

Hand-written rather than ``importlib.util.LazyLoader`` (or the ``lazy_loader`` package built
on it): those need the module's spec, and finding the spec of ``scipy.special`` imports the
parent package ``scipy`` (numpy and scipy._lib with it) at once, which is what we avoid.
No Django (import-linter contract "Pure computation has no Django").
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stand-in for the module ``name``; imports it at the first attribute access."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        # Only called for names not found on the stand-in itself, i.e. the module's names.
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first use (typed ``Any``, like a module)."""
    return LazyModule(name)
