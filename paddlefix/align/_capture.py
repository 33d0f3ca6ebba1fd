"""Trace one framework's run of a model into a :class:`~paddlefix.align._trace.Trace`.

``capture`` runs a Paddle or a torch model (chosen by the adapter) for one or more steps and records,
as NumPy arrays, what ``compare`` needs to find where a port diverges:

- every call of every hooked layer, in completion order: its tensor inputs and its tensor outputs
  (nested outputs flattened: dicts and Hugging Face ``ModelOutput`` objects by key order, tuples
  and lists in order);
- with a loss: the loss, the gradient w.r.t. every recorded module output (in the order backward
  produces them), and every parameter's gradient;
- with an optimizer: the parameters and persistable buffers after every step, and the optimizer's
  class and hyper-parameters (see :func:`optimizer_info`).

Hooks are always removed, the layers' train / eval flags restored, and no framework tensor is kept
once a step is over (torch arrays may share memory with tensors the framework has released).
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ._errors import AlignError
from ._trace import ForwardEvent, GradEvent, ModuleInfo, StepTrace, Trace

if TYPE_CHECKING:
    import numpy as np

__all__ = ["capture", "optimizer_info", "flatten_tensors", "call_model", "versions"]

log = logging.getLogger("paddlefix.align")

LossFn = Callable[[Any, Any], Any]


# --------------------------------------------------------------------------- structure helpers


def _is_tensor(obj: Any, framework: str) -> bool:
    if framework == "torch":
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, torch.Tensor)
    paddle = sys.modules.get("paddle")
    if paddle is None:
        return False
    kinds: tuple[type, ...] = (paddle.Tensor,)
    eager = getattr(getattr(paddle, "base", None), "framework", None)
    eager_param = getattr(eager, "EagerParamBase", None)
    if isinstance(eager_param, type):
        kinds += (eager_param,)
    return isinstance(obj, kinds)


def flatten_tensors(obj: Any, framework: str, _depth: int = 0) -> list[Any]:
    """Every tensor in ``obj`` in a fixed order: dicts (and ``ModelOutput``) by key order, sequences
    in order; other values (None, ints, strings) are skipped."""
    if _is_tensor(obj, framework):
        return [obj]
    if _depth > 50:
        return []
    out: list[Any] = []
    if isinstance(obj, dict) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__") and not isinstance(obj, str)):
        try:
            keys = list(obj.keys())
        except Exception:  # pragma: no cover - an object that only looks like a mapping
            return out
        for key in keys:
            out.extend(flatten_tensors(obj[key], framework, _depth + 1))
        return out
    if isinstance(obj, (list, tuple)):
        for item in obj:
            out.extend(flatten_tensors(item, framework, _depth + 1))
    return out


def call_model(model: Any, batch: Any) -> Any:
    """Call ``model`` with ``batch``: a dict as keyword arguments, a tuple / list as positional ones,
    anything else as the one positional argument."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def versions(framework: str) -> dict[str, str]:
    """Installed versions of the framework, its model library and paddlefix."""
    from importlib import metadata

    names = ["torch", "transformers"] if framework == "torch" else ["paddlepaddle", "paddlenlp"]
    out: dict[str, str] = {}
    for name in names + ["paddlefix"]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "paddlepaddle" and "paddle" in sys.modules:
                out[name] = str(getattr(sys.modules["paddle"], "__version__", "unknown"))
    if "paddlefix" not in out:
        import paddlefix

        out["paddlefix"] = paddlefix.__version__
    return out


# --------------------------------------------------------------------------- framework specifics


class _Ops:
    """The handful of operations the adapter surface does not cover."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.mod = sys.modules["torch" if framework == "torch" else "paddle"]

    def no_grad(self) -> Any:
        return self.mod.no_grad()

    def numel(self, tensor: Any) -> int:
        n = tensor.numel()
        return int(n.item() if hasattr(n, "item") else n)

    def requires_grad(self, tensor: Any) -> bool:
        if self.framework == "torch":
            return bool(tensor.requires_grad)
        return not bool(tensor.stop_gradient)

    def clear_grads(self, params: Iterable[Any], optimizer: Any) -> None:
        if optimizer is not None:
            if self.framework == "torch":
                optimizer.zero_grad(set_to_none=True)
            else:
                optimizer.clear_grad(set_to_zero=False)
        for p in params:
            if self.framework == "torch":
                p.grad = None
            elif p.grad is not None:
                p.clear_gradient(False)

    def version(self, tensor: Any) -> int:
        """The tensor's in-place modification counter (0 where the framework has none)."""
        try:
            return int(tensor._version if self.framework == "torch" else tensor.inplace_version)
        except (AttributeError, RuntimeError):
            return 0

    def is_floating(self, tensor: Any) -> bool:
        if self.framework == "torch":
            return bool(tensor.is_floating_point() or tensor.is_complex())
        return "float" in str(tensor.dtype) or "complex" in str(tensor.dtype)


# --------------------------------------------------------------------------- optimizer


def _num(value: Any) -> Any:
    """A float from a Python number, a 0-d tensor or a scheduler; other values as their repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "last_lr") and hasattr(value, "step"):  # paddle LRScheduler
        return float(value.last_lr)
    for attr in ("item",):
        if hasattr(value, attr):
            try:
                return float(value.item())
            except Exception:
                break
    if hasattr(value, "_coeff"):  # paddle L2Decay / L1Decay
        return float(value._coeff)
    if hasattr(value, "_regularization_coeff"):
        return float(value._regularization_coeff)
    return repr(value)


def optimizer_info(optimizer: Any, framework: str, names: dict[int, str]) -> dict[str, Any]:
    """The optimizer's class and hyper-parameters, in one vocabulary for both frameworks.

    Keys: ``class`` (class name), ``framework``, ``lr``, ``eps``, ``betas`` ([beta1, beta2]) or
    ``momentum`` where the optimizer has them, ``weight_decay`` (the coefficient), ``decay``
    (``"decoupled"`` for AdamW-style decay applied to the weights, ``"l2"`` for a gradient penalty,
    ``None`` without decay), ``params`` (full names of the parameters it updates) and ``decayed``
    (full names of those actually decayed: for Paddle's ``apply_decay_param_fun`` the decision is
    the function's answer for each parameter's ``param.name``, e.g. ``linear_3.w_0``, which is
    why a Hugging Face style name filter decays everything), ``raw`` (the framework's own names).
    """
    cls = type(optimizer).__name__
    info: dict[str, Any] = {"class": cls, "framework": framework}
    if framework == "torch":
        groups = optimizer.param_groups
        g0 = groups[0] if groups else {}
        info["lr"] = _num(g0.get("lr"))
        if "eps" in g0:
            info["eps"] = _num(g0["eps"])
        if "betas" in g0:
            info["betas"] = [_num(b) for b in g0["betas"]]
        if "momentum" in g0:
            info["momentum"] = _num(g0["momentum"])
        wd = _num(g0.get("weight_decay", 0.0))
        info["weight_decay"] = wd
        decoupled = cls in ("AdamW",) or bool(g0.get("decoupled_weight_decay", False))
        params: list[str] = []
        decayed: list[str] = []
        for g in groups:
            gwd = _num(g.get("weight_decay", 0.0))
            for p in g["params"]:
                name = names.get(id(p), f"<unnamed {tuple(p.shape)}>")
                params.append(name)
                if gwd:
                    decayed.append(name)
        info["decay"] = (("decoupled" if decoupled else "l2") if decayed else None)
        info["raw"] = {k: _num(v) if not isinstance(v, (list, tuple)) else [_num(x) for x in v]
                       for k, v in g0.items() if k != "params"}
    else:
        info["lr"] = _num(getattr(optimizer, "_learning_rate", None))
        if hasattr(optimizer, "_epsilon"):
            info["eps"] = _num(optimizer._epsilon)
        if hasattr(optimizer, "_beta1"):
            info["betas"] = [_num(optimizer._beta1), _num(optimizer._beta2)]
        if hasattr(optimizer, "_momentum"):
            info["momentum"] = _num(optimizer._momentum)
        fun = getattr(optimizer, "_apply_decay_param_fun", None)
        decoupled = cls in ("AdamW",) or hasattr(optimizer, "_apply_decay_param_fun")
        if decoupled:
            wd = _num(getattr(optimizer, "_weight_decay", 0.0))
        else:
            wd = _num(getattr(optimizer, "regularization", None)) or 0.0
        info["weight_decay"] = wd
        params = []
        decayed = []
        groups = getattr(optimizer, "_param_groups", None) or []
        if groups and isinstance(groups[0], dict):
            entries = [(p, g.get("weight_decay", wd)) for g in groups for p in g["params"]]
        else:
            entries = [(p, wd) for p in (getattr(optimizer, "_parameter_list", None) or groups)]
        for p, gwd in entries:
            name = names.get(id(p), getattr(p, "name", "?"))
            params.append(name)
            gwd = _num(gwd)
            own = getattr(p, "regularizer", None)
            if decoupled:
                if gwd and (fun is None or fun(p.name)):
                    decayed.append(name)
            elif gwd or own is not None:
                decayed.append(name)
        info["decay"] = (("decoupled" if decoupled else "l2") if decayed else None)
        raw = {}
        for attr in ("_learning_rate", "_epsilon", "_beta1", "_beta2", "_momentum", "_weight_decay", "_lr_ratio",
                     "_grad_clip", "regularization"):
            if hasattr(optimizer, attr):
                value = getattr(optimizer, attr)
                raw[attr.lstrip("_")] = _num(value) if value is None or not callable(value) else repr(value)
        raw["apply_decay_param_fun"] = None if fun is None else getattr(fun, "__qualname__", repr(fun))
        info["raw"] = raw
    info["params"] = params
    info["decayed"] = decayed
    return info


# --------------------------------------------------------------------------- configuration


def _module_config(adapter: Any, layer: Any) -> dict[str, Any]:
    """The configuration values the rules table compares for this layer's type: ``{label: value}``,
    each value already in the rule's one convention (a Paddle BatchNorm's momentum as torch's)."""
    from . import rules

    framework = adapter.framework
    type_name = adapter.type_name(layer)
    qualified = adapter.qualified_type(layer)
    out: dict[str, Any] = {}
    for rule in rules.RULES:
        names = rule.torch_types if framework == "torch" else rule.paddle_types
        if not rule.config or not rules._matches(names, type_name, qualified):
            continue
        for c in rule.config:
            if c.label in out:
                continue
            get = c.torch_get if framework == "torch" else c.paddle_get
            try:
                value = get(layer)
                out[c.label] = c.normalise(value) if c.normalise is not None else value
            except Exception as exc:  # a getter that does not fit this version's attributes
                log.debug("config %r of %s not read: %s", c.label, type_name, exc)
    return out


# --------------------------------------------------------------------------- capture


class _Recorder:
    """Hooks on the layers of one model; one instance per capture."""

    def __init__(self, adapter: Any, ops: _Ops, layers: list[tuple[str, Any]], want_grads: bool) -> None:
        self.adapter = adapter
        self.ops = ops
        self.layers = layers
        self.want_grads = want_grads
        self.handles: list[Any] = []
        self.grad_handles: list[Any] = []
        self.stack: list[tuple[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        self.forward: list[ForwardEvent] = []
        self.grads: list[GradEvent] = []
        self.calls: dict[str, int] = {}
        self.pending_inputs: dict[tuple[str, int], list[np.ndarray]] = {}
        self.cache: dict[tuple[int, int], tuple[Callable[[], Any], np.ndarray]] = {}
        for h in self.grad_handles:
            _remove(h)
        self.grad_handles = []

    def array(self, tensor: Any) -> "np.ndarray":
        """The tensor as NumPy, converted once per step (the same tensor passed on is not copied again)."""
        key = (id(tensor), self.ops.version(tensor))  # an in-place change makes it a new value
        hit = self.cache.get(key)
        if hit is not None and hit[0]() is tensor:
            return hit[1]
        value = _own(self.adapter.to_numpy(tensor))
        try:  # a weak reference: the trace never keeps a framework tensor alive
            ref: Callable[[], Any] = weakref.ref(tensor)
        except TypeError:  # pragma: no cover - a tensor type without weak references
            ref = (lambda t: lambda: t)(tensor)
        self.cache[key] = (ref, value)
        return value

    def install(self) -> None:
        for path, layer in self.layers:
            self.handles.append(self.adapter.register_forward_pre_hook(layer, self._pre(path)))
            self.handles.append(self.adapter.register_forward_hook(layer, self._post(path)))

    def remove(self) -> None:
        for h in self.handles + self.grad_handles:
            _remove(h)
        self.handles = []
        self.grad_handles = []
        self.cache = {}

    def _pre(self, path: str) -> Callable[..., None]:
        def hook(layer: Any, inputs: Any, *rest: Any) -> None:
            call = self.calls.get(path, 0)
            self.calls[path] = call + 1
            self.stack.append((path, layer))
            self.pending_inputs[(path, call)] = [
                self.array(t) for t in flatten_tensors(inputs, self.ops.framework)
            ]

        return hook

    def _post(self, path: str) -> Callable[..., None]:
        def hook(layer: Any, inputs: Any, output: Any, *rest: Any) -> None:
            if self.stack and self.stack[-1][0] == path:
                self.stack.pop()
            call = self.calls.get(path, 1) - 1
            tensors = flatten_tensors(output, self.ops.framework)
            self.forward.append(
                ForwardEvent(path, call, self.pending_inputs.pop((path, call), []), [self.array(t) for t in tensors])
            )
            if self.want_grads:
                self._hook_grads(path, call, tensors)

        return hook

    def _hook_grads(self, path: str, call: int, tensors: list[Any]) -> None:
        slots: list[np.ndarray | None] = [None] * len(tensors)
        event: list[GradEvent] = []

        def receive(index: int) -> Callable[[Any], None]:
            def on_grad(grad: Any) -> None:
                if not event:
                    event.append(GradEvent(path, call, slots))
                    self.grads.append(event[0])
                slots[index] = self.array(grad)

            return on_grad

        for i, t in enumerate(tensors):
            if not self.ops.is_floating(t) or not self.ops.requires_grad(t):
                continue
            try:
                self.grad_handles.append(self.adapter.register_tensor_grad_hook(t, receive(i)))
            except (RuntimeError, ValueError) as exc:  # e.g. a leaf or a tensor that needs no grad
                log.debug("no gradient hook on %s output %d: %s", path, i, exc)


def _own(array: "np.ndarray") -> "np.ndarray":
    """``array`` if it owns its memory, else a copy (torch's ``numpy()`` shares the tensor's memory,
    which a later in-place operation or optimizer step would change under the trace)."""
    return array if array.base is None else array.copy()


def _live_view(adapter: Any, tensor: Any) -> "np.ndarray":
    """A NumPy array sharing the CPU tensor's memory (DLPack), or a copy where that is not possible."""
    import numpy as np

    try:
        if adapter.framework == "torch":
            t = tensor.detach()
            if t.device.type == "cpu" and str(t.dtype) != "torch.bfloat16":
                return t.numpy()
        else:
            from paddle.utils.dlpack import to_dlpack

            if tensor.place.is_cpu_place() and adapter.dtype_name(tensor) != "bfloat16":
                class _Capsule:  # numpy.from_dlpack wants the protocol, older paddle gives a capsule
                    def __dlpack__(self, stream: Any = None) -> Any:
                        return to_dlpack(tensor)

                    def __dlpack_device__(self) -> tuple[int, int]:
                        return (1, 0)

                return np.from_dlpack(_Capsule())
    except Exception as exc:  # any framework / NumPy version without it: a copy
        log.debug("no shared view of a %s tensor: %s", adapter.framework, exc)
    return _own(adapter.to_numpy(tensor))


def owns_memory(array: Any, live: set[int]) -> bool:
    """Whether ``array`` (or the array it views) is not one of the ``live`` shared views."""
    import numpy as np

    base = array
    while isinstance(base, np.ndarray):
        if id(base) in live:
            return False
        if base.base is None:
            return True
        base = base.base
    return False  # memory owned by something else (a framework tensor)


def _remove(handle: Any) -> None:
    try:
        handle.remove()
    except Exception as exc:  # pragma: no cover - a framework that already dropped it
        log.debug("hook removal failed: %s", exc)


def _named_params(adapter: Any, layers: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(parameters, persistable buffers) with full dotted names, each tensor once."""
    seen: set[int] = set()
    params: list[tuple[str, Any]] = []
    buffers: list[tuple[str, Any]] = []
    for path, layer in layers:
        for kind, out in ((adapter.own_params, params), (adapter.own_buffers, buffers)):
            for local, tensor in kind(layer):
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                out.append((f"{path}.{local}" if path else local, tensor))
    return params, buffers


def capture(
    model: Any,
    batches: Sequence[Any],
    *,
    loss_fn: LossFn | None = None,
    optimizer: Any = None,
    steps: int = 1,
    train: bool = False,
    paths: Iterable[str] | None = None,
    progress: Callable[[], None] | None = None,
    loss_arg: str = "loss_fn",
    share_last: bool = False,
) -> Trace:
    """Run ``model`` for ``steps`` steps on ``batches`` (already in the model's framework) and trace it.

    Args:
        model: a ``paddle.nn.Layer`` or ``torch.nn.Module``.
        batches: one batch per step (a single batch is reused for every step). A dict is passed as
            keyword arguments, a tuple / list as positional arguments, anything else as one argument.
        loss_fn: ``fn(outputs, batch) -> scalar tensor``; with it, backward runs and gradients are traced.
        optimizer: stepped once per step after backward (needs ``loss_fn``).
        steps: number of steps (more than one needs ``optimizer``).
        train: run in train mode (default eval); the layers' modes are restored afterwards.
        paths: hook only these layer paths (default: every named layer).
        progress: called after each step (a progress bar's update).
        loss_arg: the argument name used in error messages about the loss.
        share_last: the last step's ``params_after`` share memory with the live parameters instead of
            being copied (one model's worth of memory less); only for a caller that reads them before
            the model changes again and copies what it keeps (``compare`` does).

    Raises:
        AlignError: bad arguments, a loss that is not a scalar, or the model raised inside forward
            (the message names the framework and the innermost module running; the original
            exception is chained).
    """
    from .adapters import adapter_for

    try:
        adapter = adapter_for(model)
    except TypeError:
        adapter = None
    if adapter is None or not adapter.is_model(model):
        raise AlignError(f"model must be a paddle.nn.Layer or a torch.nn.Module; got {type(model).__name__}")
    framework = adapter.framework
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AlignError(f"steps must be a positive int; got {steps!r}")
    if optimizer is not None and loss_fn is None:
        raise AlignError(f"an optimizer needs a loss: pass {loss_arg}")
    if steps > 1 and optimizer is None:
        raise AlignError(f"steps={steps} needs an optimizer (without one every step would repeat the first)")
    batches = list(batches)
    if not batches:
        raise AlignError("batches is empty: give one batch, or one per step")
    if len(batches) not in (1, steps):
        raise AlignError(f"got {len(batches)} batches for steps={steps}; give one batch, or one per step")

    all_layers = adapter.named_layers(model)
    if paths is None:
        hooked = all_layers
    else:
        wanted = set(paths)
        hooked = [(p, m) for p, m in all_layers if p in wanted]
        missing = wanted - {p for p, _ in hooked}
        if missing:
            raise AlignError(f"paths names layers {framework} model does not have: {sorted(missing)[:5]}")
    modules = [ModuleInfo(p, adapter.type_name(m), _module_config(adapter, m)) for p, m in all_layers]
    params, buffers = _named_params(adapter, all_layers)
    names = {id(t): n for n, t in params + buffers}
    ops = _Ops(framework)

    def snapshot() -> dict[str, np.ndarray]:
        return {n: _own(adapter.to_numpy(t)) for n, t in params + buffers}

    params_before = snapshot()
    opt_info = optimizer_info(optimizer, framework, names) if optimizer is not None else {}
    modes = [(m, adapter.is_training(m)) for _, m in all_layers]
    recorder = _Recorder(adapter, ops, hooked, want_grads=loss_fn is not None)
    step_traces: list[StepTrace] = []
    try:
        adapter.train(model, train)
        recorder.install()
        for step in range(steps):
            batch = batches[step if len(batches) > 1 else 0]
            recorder.reset()
            if loss_fn is not None:
                ops.clear_grads([t for _, t in params], optimizer)
            output = _forward(model, batch, recorder, ops, framework, no_grad=loss_fn is None)
            out_arrays = [recorder.array(t) for t in flatten_tensors(output, framework)]
            loss_value: float | None = None
            param_grads: dict[str, np.ndarray | None] = {}
            after: dict[str, np.ndarray] = {}
            if loss_fn is not None:
                loss = loss_fn(output, batch)
                if not _is_tensor(loss, framework) or ops.numel(loss) != 1:
                    what = type(loss).__name__ if not _is_tensor(loss, framework) else f"shape {adapter.shape(loss)}"
                    raise AlignError(
                        f"{loss_arg}: the {framework} loss function must return a scalar tensor; got {what}"
                    )
                loss_value = float(adapter.to_numpy(loss).reshape(()))
                loss.backward()
                del loss
                for name, p in params:
                    g = adapter.grad(p)
                    param_grads[name] = None if g is None else _own(adapter.to_numpy(g))
                if optimizer is not None:
                    optimizer.step()
                    ops.clear_grads([t for _, t in params], optimizer)
                    if share_last and step == steps - 1:
                        after = {n: _live_view(adapter, t) for n, t in params + buffers}
                    else:
                        after = snapshot()
            del output
            step_traces.append(
                StepTrace(recorder.forward, out_arrays, loss_value, recorder.grads, param_grads, after)
            )
            recorder.reset()
            if progress is not None:
                progress()
    finally:
        recorder.remove()
        _restore_modes(adapter, model, modes)
    return Trace(framework, versions(framework), modules, params_before, opt_info, step_traces)


def _restore_modes(adapter: Any, model: Any, modes: list[tuple[Any, bool]]) -> None:
    """Put every layer back in the train / eval mode it had (the root through the adapter, so the
    framework's own global state follows; layers that differed from the root by their flag)."""
    if not modes:
        return
    adapter.train(model, modes[0][1])
    for layer, mode in modes[1:]:
        if adapter.is_training(layer) != mode:
            layer.training = mode


def _forward(model: Any, batch: Any, recorder: _Recorder, ops: _Ops, framework: str, *, no_grad: bool) -> Any:
    recorder.stack = []
    try:
        if no_grad:
            with ops.no_grad():
                return call_model(model, batch)
        return call_model(model, batch)
    except AlignError:
        raise
    except Exception as exc:
        where = recorder.stack[-1] if recorder.stack else ("", model)
        path = where[0] or "<root>"
        raise AlignError(
            f"the {framework} model raised inside forward, in module {path!r} "
            f"({type(where[1]).__name__}): {type(exc).__name__}: {exc}"
        ) from exc
