"""paddlefix: make PaddlePaddle / PaddleNLP behave as a PyTorch / Hugging Face user expects.

    import paddlefix; paddlefix.apply()

Each patch is version-gated and confirmed by a behaviour probe against the installed
library; ``paddlefix.status()`` (or ``paddlefix doctor``) says what was done and why.
Importing paddlefix imports neither paddle nor paddlenlp.
"""

from __future__ import annotations

# Paddle 2.6.2's libpaddle exports its own zlib symbols globally: a zlib extension module
# loaded after ``import paddle`` binds to them and fails ("inconsistent stream state") or
# crashes. Loading Python's zlib first binds it to the system library. See README.
import zlib as _zlib  # noqa: F401

from typing import Any, Iterable

from ._errors import ConfigError, PaddlefixWarning, PatchError
from . import patches as patches  # the subpackage: one module per patch
from .patches import load_specs as _load_specs
from .registry import Finding, Patch, PatchStatus, Registry, State

__version__ = "0.1.0"

__all__ = [
    "apply",
    "revert",
    "status",
    "specs",
    "get_original",
    "is_patched",
    "PatchStatus",
    "State",
    "Finding",
    "Patch",
    "PaddlefixWarning",
    "PatchError",
    "ConfigError",
    "set_float32_matmul_precision",
    "get_float32_matmul_precision",
    "nan_guard_stats",
    "torch_init",
    "InitRecord",
    "fakedata",
    "align",
    "__version__",
]

_registry = Registry()
for _spec in _load_specs():
    _registry.register(_spec)
del _spec


def apply(
    *names: str,
    exclude: str | Iterable[str] = (),
    force: str | Iterable[str] = (),
    strict: bool | None = None,
) -> dict[str, PatchStatus]:
    """Apply patches where the installed libraries need them; return ``status()``.

    - no ``names``: the default set (``PADDLEFIX_PATCHES`` if set). ``names`` may include
      ``"default"`` and ``"all"``, e.g. ``apply("default", "nan_guard")``.
    - ``exclude``: names to leave off (added to ``PADDLEFIX_DISABLE``).
    - ``force``: apply these even where the gate says the problem is absent (their
      distribution must still be installed); forced names join the selection.
    - ``strict``: raise :class:`PatchError` if a patch fails, or a patch named
      explicitly cannot apply (default ``PADDLEFIX_STRICT``, else False).

    Patches whose module is not imported yet are ``pending`` and apply on its import.
    Calling ``apply()`` again wraps nothing twice.
    """
    return _registry.apply(*names, exclude=exclude, force=force, strict=strict)


def revert(*names: str) -> dict[str, PatchStatus]:
    """Undo the named patches (all if none), newest change first; return ``status()``.

    Every replaced attribute gets back the identical original object. An attribute that
    something else replaced since paddlefix patched it is left alone, with a warning.
    """
    return _registry.revert(*names)


def status() -> dict[str, PatchStatus]:
    """``{name: PatchStatus}`` for every known patch, in registry order."""
    return _registry.status()


def specs() -> list[Patch]:
    """The specs of every known patch, in registry order (the code is in ``paddlefix.patches``)."""
    return [_registry.patch(n) for n in _registry.names]


def get_original(owner: Any, attr: str) -> Any:
    """The original ``owner.attr`` saved before paddlefix replaced it (or its current value).

    Raises:
        AttributeError: paddlefix added ``owner.attr`` (there was no original), or
            ``owner`` has no such attribute.
    """
    return _registry.get_original(owner, attr)


def is_patched(owner: Any, attr: str) -> bool:
    """Whether ``owner.attr`` currently holds a paddlefix replacement."""
    return _registry.is_patched(owner, attr)


# Public functions that live with their patch (or feature) module, resolved on first use.
_LAZY = {
    "set_float32_matmul_precision": "paddlefix.patches.matmul_precision",
    "get_float32_matmul_precision": "paddlefix.patches.matmul_precision",
    "nan_guard_stats": "paddlefix.patches.nan_guard",
    "torch_init": "paddlefix._torch_init",
    "InitRecord": "paddlefix._torch_init",
    "fakedata": "paddlefix.fakedata",
    "align": "paddlefix.align",
}


from ._lazy import lazy_names as _lazy_names  # noqa: E402

__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals())  # keeps ``import paddlefix`` cheap
