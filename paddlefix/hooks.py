"""Deferred application: run a callback when a module is imported (wrapt post-import hooks)."""

from __future__ import annotations

import types
from typing import Callable

__all__ = ["when_imported"]


def when_imported(module: str, callback: Callable[[types.ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``module`` has been imported (at once if it already is).

    The callback runs after the module's code has finished executing, inside the
    importing thread, before the ``import`` statement returns to user code.
    """
    import wrapt

    wrapt.register_post_import_hook(callback, module)
