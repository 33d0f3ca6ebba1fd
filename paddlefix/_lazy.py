"""Module-level ``__getattr__`` / ``__dir__`` for public names defined in modules imported on first use.

``import paddlefix`` (and ``paddlefix.align``) must stay cheap: their public functions live in
modules that import NumPy, Paddle or torch, resolved the first time the name is read (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package`` whose ``names`` map public name -> module.

    A module path may be relative to ``package``; a name that is the module's own last component
    resolves to the module itself. Each resolved value is stored in ``namespace`` (the package's
    globals), so later reads are plain attribute reads.
    """

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(target, package)
        value = module if module.__name__.endswith("." + name) else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
