"""same_randomness: Paddle and PyTorch draw the same dropout masks and random numbers.

    from paddlefix import align
    with align.same_randomness(seed=0, models=(paddle_model, torch_model)) as rnd:
        pd_out = paddle_model(**pd_batch)       # train mode, dropout on
        pt_out = torch_model(**pt_batch)        # the same masks, in the same order
    print(rnd.report)

One framework-independent stream: the k-th random call a framework makes inside the context
draws from ``numpy.random.Generator(PCG64(SeedSequence([seed, k])))``. Each framework has its
own counter ``k``, so the Paddle run and the torch run can come in either order (or be
interleaved), and the k-th dropout of one gets the same mask as the k-th of the other. The
masks are made with NumPy on the host and converted once per call, then applied with each
framework's own arithmetic (Paddle's ``upscale_in_train`` / ``downscale_in_infer``, torch's
scaling, each one's alpha-dropout formula).

What is covered, per framework, is listed in ``COVERED``. Calls with ``p == 0`` (or
``p == 1``, which is not random) or in eval mode draw nothing, on either side. When the k-th
calls of the two frameworks do not correspond (different mask shape, ``p`` or function) a
:class:`~paddlefix.align.RandomnessError` names both call sites: the framework, the layer
path (for models given to ``models=`` / :meth:`SameRandomness.watch`), and file:line. Shapes
differing only by merged leading dimensions (torch ``MultiheadAttention``'s
``[batch * heads, L, S]`` against ``[batch, heads, L, S]``) correspond: NumPy fills both in the
same row-major order. A torch dropout during backward (activation recomputation) is refused.

For the duration the context also seeds both frameworks' own generators with ``seed`` (for
random operations it does not cover), turns on deterministic algorithms (torch
``use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic / no benchmark;
Paddle ``FLAGS_cudnn_deterministic`` / ``FLAGS_cpu_deterministic`` where the build has them)
and restores all of it on exit, also when the body raises. TF32 is left to
``paddlefix.set_float32_matmul_precision``. What was set is in ``rnd.report``.

Thread safety: the functions are replaced process-wide, so only one context can be active
at a time in the process (a second one, nested or from another thread, is refused). The
counters are updated under a lock, but calls made from several threads at once are counted
in whatever order they arrive: run each framework's model from one thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
import warnings
from typing import Any, Callable, Iterable, NamedTuple

from .._errors import PaddlefixWarning
from ._errors import RandomnessError

__all__ = ["same_randomness", "SameRandomness", "RandomnessReport", "RandomCall", "Setting", "COVERED", "Replacement"]

_log = logging.getLogger("paddlefix.align")

COVERED: dict[str, dict[str, tuple[str, ...]]] = {
    "paddle": {
        "dropout": (
            "paddle.nn.functional.dropout (any axis=, both modes; so nn.Dropout, dropout1d, dropout2d, "
            "dropout3d, nn.Dropout2D/3D and the attention-weights dropout of nn.MultiHeadAttention)",
            "paddle.nn.functional.alpha_dropout (nn.AlphaDropout)",
            "paddle.nn.functional.feature_alpha_dropout (where it exists)",
        ),
        "tensors": (
            "paddle.rand",
            "paddle.randn",
            "paddle.standard_normal (as randn)",
            "paddle.randint",
            "paddle.normal",
            "paddle.bernoulli",
            "paddle.randperm",
            "paddle.multinomial",
        ),
    },
    "torch": {
        "dropout": (
            "torch.nn.functional.dropout / dropout1d / dropout2d / dropout3d / alpha_dropout / "
            "feature_alpha_dropout, in place or not (so nn.Dropout*, nn.AlphaDropout, Hugging Face "
            "eager attention's probability dropout), and torch.dropout / feature_dropout / alpha_dropout",
            "torch.nn.functional.scaled_dot_product_attention with dropout_p > 0 (a math path with the "
            "shared mask; so Hugging Face attn_implementation='sdpa' and nn.MultiheadAttention)",
        ),
        "tensors": (
            "torch.rand",
            "torch.randn",
            "torch.randint",
            "torch.normal",
            "torch.bernoulli",
            "torch.randperm",
            "torch.multinomial",
        ),
    },
}
"""What same_randomness takes from the shared stream, per framework."""


# -- data -------------------------------------------------------------------------------
class RandomCall(NamedTuple):
    """One random call made inside the context."""

    framework: str  # "paddle" | "torch"
    k: int  # the k-th random call of this framework in the context (from 0)
    kind: str  # "dropout" for every dropout flavour, else the tensor function ("randn", ...)
    function: str  # what was called, e.g. "paddle.nn.functional.dropout(axis=[0, 1])"
    shape: tuple[int, ...]  # the mask / result shape
    params: tuple[Any, ...]  # ("p", 0.1) pairs etc.: what must agree besides the shape
    site: str  # file:line of the caller
    module: str | None  # layer path in a watched model, if any

    def describe(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params)
        where = f"layer {self.module!r}, " if self.module is not None else ""
        return f"{self.framework}: {self.function} shape {list(self.shape)} {params} ({where}{self.site})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "k": self.k,
            "kind": self.kind,
            "function": self.function,
            "shape": list(self.shape),
            "params": {k: v for k, v in self.params},
            "site": self.site,
            "module": self.module,
        }


class Setting(NamedTuple):
    """A framework setting the context changed (or could not change) for its duration."""

    name: str
    before: Any
    during: Any
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "before": self.before, "during": self.during, "note": self.note}


class RandomnessReport:
    """What a :func:`same_randomness` context did: data first (:meth:`to_dict`), text by ``str()``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.frameworks: list[str] = []
        self.drawn: dict[str, int] = {}
        """Random calls served from the shared stream, per framework."""
        self.skipped: dict[str, int] = {}
        """Dropout calls that drew nothing (eval mode, p == 0 or p == 1), per framework."""
        self.settings: list[Setting] = []
        self.patched: list[str] = []
        self.watched: list[str] = []
        self.notes: list[str] = []
        self.active = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "active": self.active,
            "frameworks": list(self.frameworks),
            "drawn": dict(self.drawn),
            "skipped": dict(self.skipped),
            "settings": [s.to_dict() for s in self.settings],
            "patched": list(self.patched),
            "watched": list(self.watched),
            "notes": list(self.notes),
            "covered": {fw: {k: list(v) for k, v in d.items()} for fw, d in COVERED.items() if fw in self.frameworks},
        }

    def __str__(self) -> str:
        lines = [f"same_randomness(seed={self.seed}): frameworks {', '.join(self.frameworks) or 'none'}"]
        for fw in self.frameworks:
            lines.append(
                f"  {fw}: {self.drawn.get(fw, 0)} random calls from the shared stream, "
                f"{self.skipped.get(fw, 0)} dropout calls drew nothing (eval / p=0)"
            )
        if self.settings:
            lines.append("  settings for the duration:")
            for s in self.settings:
                note = f"  ({s.note})" if s.note else ""
                lines.append(f"    {s.name}: {s.before!r} -> {s.during!r}{note}")
        lines.append(f"  replaced {len(self.patched)} function references; watching {len(self.watched)} model(s)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<RandomnessReport seed={self.seed} drawn={self.drawn}>"


# -- patch journal ----------------------------------------------------------------------
_MISSING = object()


class _Journal:
    """Attribute replacements, undone newest first and by identity."""

    def __init__(self) -> None:
        self._changes: list[tuple[Any, str, Any, Any, bool]] = []

    def replace(self, owner: Any, attr: str, new: Any) -> None:
        own = vars(owner)
        had_own = attr in own
        original = own[attr] if had_own else _MISSING
        setattr(owner, attr, new)
        self._changes.append((owner, attr, original, new, had_own))

    def places(self) -> list[str]:
        return [f"{_owner_name(o)}.{a}" for o, a, *_ in self._changes]

    def restore(self) -> list[str]:
        """Undo everything; returns the places left alone because someone replaced them since."""
        left: list[str] = []
        while self._changes:
            owner, attr, original, new, had_own = self._changes.pop()
            if vars(owner).get(attr, _MISSING) is not new:
                left.append(f"{_owner_name(owner)}.{attr}")
                continue
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
        return left


def _owner_name(owner: Any) -> str:
    return str(getattr(owner, "__name__", type(owner).__name__))


class Replacement(NamedTuple):
    """One function to replace for the duration: everywhere a loaded module holds ``original``."""

    original: Any
    new: Any
    skip_prefixes: tuple[str, ...] = ()  # modules (by name prefix) left alone
    extra: tuple[tuple[Any, str], ...] = ()  # more places, e.g. torch._VF's lazily resolved kernels


def apply_replacements(journal: _Journal, replacements: list[Replacement]) -> None:
    """One pass over ``sys.modules``: every (module, attribute) holding an original gets its new."""
    by_id = {id(r.original): r for r in replacements}
    ids = set(by_id)
    places: list[tuple[Any, str, Replacement]] = []
    for name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        try:
            if ids.isdisjoint(map(id, namespace.values())):  # the common case, looped in C
                continue
            hits = [k for k, v in list(namespace.items()) if id(v) in ids]
        except RuntimeError:  # pragma: no cover - the namespace changed while we looked
            hits = [k for k, v in list(namespace.items()) if id(v) in ids]
        for attr in hits:
            value = namespace.get(attr)
            r = by_id.get(id(value))
            if r is not None and r.original is value and not (r.skip_prefixes and name.startswith(r.skip_prefixes)):
                places.append((module, attr, r))
    for r in replacements:
        for owner, attr in r.extra:
            journal.replace(owner, attr, r.new)
    for module, attr, r in places:
        journal.replace(module, attr, r.new)


# -- call sites -------------------------------------------------------------------------
_skip_cache: dict[str, bool] = {}
_SKIP_PARTS = (
    os.sep + os.path.join("torch", "nn", "functional.py"),
    os.sep + os.path.join("torch", "nn", "modules") + os.sep,
    os.sep + os.path.join("torch", "_tensor.py"),
    os.sep + os.path.join("torch", "utils") + os.sep,
    os.sep + os.path.join("paddle", "nn", "functional") + os.sep,
    os.sep + os.path.join("paddle", "nn", "layer", "layers.py"),
    os.sep + os.path.join("paddle", "nn", "layer", "common.py"),
    os.sep + os.path.join("paddle", "nn", "layer", "container.py"),
    os.sep + os.path.join("paddle", "base") + os.sep,
    os.sep + os.path.join("paddle", "utils") + os.sep,
    os.sep + os.path.join("paddle", "tensor", "random.py"),
    os.sep + "decorator.py",
)


def _skipped(filename: str) -> bool:
    hit = _skip_cache.get(filename)
    if hit is None:
        here = os.path.dirname(os.path.abspath(__file__)) + os.sep
        hit = (
            filename.startswith(here)
            or filename.startswith("<decorator-gen")
            or any(part in filename for part in _SKIP_PARTS)
        )
        _skip_cache[filename] = hit
    return hit


def call_site() -> str:
    """file:line of the first caller outside paddlefix.align and the frameworks' dropout plumbing."""
    frame = sys._getframe(1)
    fallback = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _skipped(filename):
            return f"{_short(filename)}:{frame.f_lineno}"
        if fallback is None and not filename.startswith(os.path.dirname(os.path.abspath(__file__))):
            fallback = f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return fallback or "<unknown>"


def _short(filename: str) -> str:
    marker = os.sep + "site-packages" + os.sep
    i = filename.rfind(marker)
    return filename[i + len(marker):] if i >= 0 else filename


# -- the context ------------------------------------------------------------------------
_lock = threading.RLock()
_active: SameRandomness | None = None
_PENDING_LIMIT = 100_000
"""Calls kept while waiting for the other framework's k-th call (one framework alone never waits)."""


def current() -> SameRandomness | None:
    """The active context, or None."""
    return _active


class SameRandomness:
    """The context manager returned by :func:`same_randomness` (see the module docstring)."""

    def __init__(self, seed: int, *, deterministic: bool, tensors: bool, models: Iterable[Any]) -> None:
        self.seed = seed
        self.deterministic = deterministic
        self.tensors = tensors
        self.report = RandomnessReport(seed)
        self._models = list(models)
        self._count: dict[str, int] = {}
        self._pending: dict[int, RandomCall] = {}
        self._stack: dict[str, list[str]] = {}
        self._journal = _Journal()
        self._restore: list[tuple[str, Callable[[], None]]] = []
        self._hooks: list[Any] = []
        self._entered = False
        self._count_lock = threading.Lock()
        self._overflow = False

    # -- public ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The report as data (see :class:`RandomnessReport`)."""
        return self.report.to_dict()

    def calls(self, framework: str) -> int:
        """How many random calls ``framework`` ("paddle" / "torch") has drawn so far."""
        return self._count.get(framework, 0)

    def watch(self, *models: Any) -> SameRandomness:
        """Name layer paths in error messages for these models (paddle ``nn.Layer`` / torch ``nn.Module``)."""
        if not self._entered:
            self._models.extend(models)
            return self
        for model in models:
            self._watch(model)
        return self

    def __enter__(self) -> SameRandomness:
        global _active
        with _lock:
            if _active is not None:
                raise RandomnessError(
                    "same_randomness: a context is already active in this process "
                    f"(seed={_active.seed}); nested or concurrent use is not supported: "
                    "exit the first one before entering another"
                )
            if self._entered:
                raise RandomnessError("same_randomness: this context object was already used; create a new one")
            self._entered = True
            _active = self
        try:
            self._setup()
        except BaseException:
            self._teardown()
            raise
        self.report.active = True
        _log.debug("same_randomness(seed=%s) entered: %s", self.seed, ", ".join(self.report.frameworks))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._teardown()
        counts = [(fw, n) for fw, n in sorted(self.report.drawn.items()) if n]
        if exc_type is None and len(counts) == 2 and counts[0][1] != counts[1][1]:
            (fa, na), (fb, nb) = counts
            message = (
                f"same_randomness: {fa} made {na} random calls and {fb} {nb}: the last "
                f"{abs(na - nb)} had no counterpart in the other framework"
            )
            self.report.notes.append(message)
            warnings.warn(message, PaddlefixWarning, stacklevel=2)

    # -- used by the framework modules ------------------------------------------------------
    def draw(self, framework: str, kind: str, function: str, shape: tuple[int, ...], params: tuple[Any, ...]) -> Any:
        """Register the next random call of ``framework`` and return its NumPy Generator."""
        import numpy as np

        site = call_site()
        stack = self._stack.get(framework)
        module = stack[-1] if stack else None
        with self._count_lock:
            k = self._count.get(framework, 0)
            self._count[framework] = k + 1
            self.report.drawn[framework] = k + 1
            mine = RandomCall(framework, k, kind, function, tuple(int(s) for s in shape), params, site, module)
            other = self._pending.get(k)
            if other is None or other.framework == framework:
                if len(self._pending) < _PENDING_LIMIT:
                    self._pending[k] = mine
                elif not self._overflow:
                    self._overflow = True
                    self.report.notes.append(
                        f"more than {_PENDING_LIMIT} calls without a counterpart yet: later ones are not checked"
                    )
            else:
                del self._pending[k]
                if (other.kind, other.params) != (mine.kind, mine.params) or not same_layout(other.shape, mine.shape):
                    raise RandomnessError(_mismatch(k, other, mine))
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, k])))

    def skip(self, framework: str) -> None:
        """Count a dropout call that draws nothing (eval mode, p == 0 or 1)."""
        with self._count_lock:
            self.report.skipped[framework] = self.report.skipped.get(framework, 0) + 1

    # -- internals ------------------------------------------------------------------------------
    def _setup(self) -> None:
        frameworks: list[str] = [fw for fw in ("paddle", "torch") if fw in sys.modules]
        if not frameworks:
            raise RandomnessError(
                "same_randomness: neither paddle nor torch is imported; import the framework(s) "
                "before entering the context (only functions loaded at entry are replaced)"
            )
        self.report.frameworks = frameworks
        replacements: list[Replacement] = []
        for fw in frameworks:
            replacements.extend(_framework_module(fw).replacements(tensors=self.tensors))
        apply_replacements(self._journal, replacements)
        for fw in frameworks:
            mod = _framework_module(fw)
            restore = mod.enter_settings(self.seed, self.deterministic, self.report.settings)
            self._restore.append((fw, restore))
            self.report.drawn.setdefault(fw, 0)
            self.report.skipped.setdefault(fw, 0)
        self.report.patched = self._journal.places()
        for model in self._models:
            self._watch(model)

    def _watch(self, model: Any) -> None:
        from .adapters import adapter_for, framework_of

        if model is None:  # e.g. the torch side of an offline comparison
            return
        fw = framework_of(model)
        adapter = adapter_for(model) if fw is not None else None
        if adapter is None or not adapter.is_model(model):
            raise RandomnessError(
                f"same_randomness: models= / watch() takes paddle nn.Layer or torch nn.Module objects; "
                f"got {type(model).__module__}.{type(model).__qualname__}"
            )
        if fw not in self.report.frameworks:
            raise RandomnessError(f"same_randomness: {fw} was not imported when the context was entered")
        for path, layer in adapter.named_layers(model):

            def pre(layer: Any, inputs: Any, _path: str = path, _fw: str = fw) -> None:
                if _path == "":
                    self._stack[_fw] = []  # a new forward of the root: forget a stale stack
                self._stack.setdefault(_fw, []).append(_path)

            def post(layer: Any, inputs: Any, output: Any, _path: str = path, _fw: str = fw) -> None:
                stack = self._stack.get(_fw)
                if stack and stack[-1] == _path:
                    stack.pop()

            self._hooks.append(adapter.register_forward_pre_hook(layer, pre))
            self._hooks.append(adapter.register_forward_hook(layer, post))
        self.report.watched.append(f"{fw}:{type(model).__name__}")

    def _teardown(self) -> None:
        global _active
        errors: list[str] = []
        for handle in reversed(self._hooks):
            try:
                handle.remove()
            except Exception as exc:  # pragma: no cover - a framework refusing to remove a hook
                errors.append(f"hook: {exc}")
        self._hooks.clear()
        left = self._journal.restore()
        for fw, restore in reversed(self._restore):
            try:
                restore()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(f"{fw} settings: {exc}")
        self._restore.clear()
        self.report.active = False
        with _lock:
            if _active is self:
                _active = None
        if left:
            message = (
                "same_randomness: left alone (replaced again by someone else while the context was "
                f"active): {', '.join(left)}"
            )
            self.report.notes.append(message)
            warnings.warn(message, PaddlefixWarning, stacklevel=3)
        if errors:
            self.report.notes.extend(errors)
            _log.warning("same_randomness: restoring failed for %s", "; ".join(errors))


def same_layout(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal shapes, or shapes that differ only by merged leading dimensions.

    torch's ``nn.MultiheadAttention`` drops its attention weights as ``[batch * heads, L, S]``
    where Paddle's ``nn.MultiHeadAttention`` has ``[batch, heads, L, S]``: the same elements in
    the same row-major order, and NumPy fills both from the same stream in that order.
    """
    if a == b:
        return True
    short, long = (a, b) if len(a) < len(b) else (b, a)
    if not short or len(short) == len(long):
        return False
    merged = len(long) - len(short) + 1
    lead = 1
    for d in long[:merged]:
        lead *= d
    return short[0] == lead and short[1:] == long[merged:]


def _mismatch(k: int, first: RandomCall, second: RandomCall) -> str:
    paddle_call, torch_call = (first, second) if first.framework == "paddle" else (second, first)
    what = []
    if paddle_call.kind != torch_call.kind:
        what.append(f"function {paddle_call.kind} vs {torch_call.kind}")
    if not same_layout(paddle_call.shape, torch_call.shape):
        what.append(f"shape {list(paddle_call.shape)} vs {list(torch_call.shape)}")
    if paddle_call.params != torch_call.params:
        what.append(f"{dict(paddle_call.params)} vs {dict(torch_call.params)}")
    return (
        f"same_randomness: random call #{k} differs between the frameworks ({'; '.join(what)}):\n"
        f"  {paddle_call.describe()}\n"
        f"  {torch_call.describe()}\n"
        "The k-th random call of each framework takes the k-th draw of the shared stream, so both "
        "runs must make the same calls in the same order (dropout with p > 0 in train mode, random "
        "tensors). Check the order, the p and the shape of the dropouts of the port at these two sites."
    )


def _framework_module(fw: str) -> Any:
    if fw == "paddle":
        from . import _random_paddle as mod
    else:
        from . import _random_torch as mod  # type: ignore[no-redef]
    return mod


def _framework_of(obj: Any) -> str | None:
    from .adapters import framework_of

    return framework_of(obj)


def same_randomness(
    seed: int = 0, *, models: Iterable[Any] = (), deterministic: bool = True, tensors: bool = True
) -> SameRandomness:
    """A context in which Paddle and PyTorch draw the same dropout masks and random tensors.

    Args:
        seed: the stream's seed (a non-negative int); the same seed gives the same masks.
        models: paddle / torch models whose layer paths should appear in error messages
            (forward pre-hooks for the duration; also :meth:`SameRandomness.watch`); ``None``
            entries are ignored.
        deterministic: turn on the frameworks' deterministic settings for the duration.
        tensors: also serve ``rand`` / ``randn`` / ``randint`` / ``normal`` / ``bernoulli`` /
            ``randperm`` / ``multinomial`` from the stream (``False``: dropout only).

    Returns the context manager; ``with same_randomness(0) as rnd:`` gives it, and
    ``rnd.report`` / ``rnd.to_dict()`` say what it did.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"same_randomness: seed must be a non-negative int, got {seed!r}")
    for label, value in (("deterministic", deterministic), ("tensors", tensors)):
        if not isinstance(value, bool):
            raise TypeError(f"same_randomness: {label} must be True or False, got {value!r}")
    if not isinstance(models, (list, tuple)):
        models = list(models) if not _framework_of(models) else [models]
    return SameRandomness(seed, deterministic=deterministic, tensors=tensors, models=models)
