"""Deferred application: run a callback when a module is imported (wrapt post-import hooks)."""

from __future__ import annotations

import sys
import types
from typing import Callable

__all__ = ["when_imported"]


def when_imported(module: str, callback: Callable[[types.ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``module`` has been imported (at once if it already is).

    The callback runs after the module's code has finished executing, inside the
    importing thread, before the ``import`` statement returns to user code.

    A module that another thread is still importing is in ``sys.modules`` already, and
    wrapt would call ``callback`` at once on the half-executed module; this waits for
    that import to finish first (the import system's own per-module lock). Call it with
    no lock held. In the importing thread itself (``apply()`` run by the target's own
    import) the module cannot be waited for and ``callback`` sees it as it is.
    """
    import wrapt

    existing = sys.modules.get(module)
    if existing is not None and getattr(getattr(existing, "__spec__", None), "_initializing", False):
        import importlib

        try:
            importlib.import_module(module)  # blocks until the other thread's import is done
        except Exception:  # that import failed: wrapt fires nothing, or fires on what remains
            pass
    wrapt.register_post_import_hook(callback, module)
