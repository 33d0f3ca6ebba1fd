"""cross_entropy: PyTorch's reductions for ignored labels, label smoothing and pos_weight.

What: ``paddle.nn.functional.cross_entropy`` (and so ``paddle.nn.CrossEntropyLoss``), and two
neighbours, give PyTorch's result where both frameworks define the same thing. Each defect
below is probed on its own and fixed only where the installed release has it:

- ``mean_ignore_negative`` (Paddle 3.x): hard labels, ``reduction="mean"``, no ``weight`` and a
  negative ``ignore_index`` (the default ``-100``, Hugging Face's padding label): the summed
  loss is divided by *all* labels, ignored ones included (``nn/functional/loss.py`` counts the
  valid labels only when ``ignore_index >= 0``). Logits ``[6, 5]`` with labels
  ``[1, -100, 3, -100, 0, 2]``: 1.2851 on 3.3.1, 1.9276 on 2.6.2 and in torch. Gradients are
  scaled the same way. Fix: the stock ``reduction="sum"`` divided by the number of labels
  that are not ``ignore_index`` (Paddle's own ``ignore_index >= 0`` arithmetic).
- ``all_ignored`` (every version): every label ignored with ``reduction="mean"`` gives 0
  (Paddle divides by ``count + (count == 0)``); torch gives NaN (0 / 0) with zero gradients.
  Fix: NaN is added to the result when the count (or the summed weights) is 0; gradients stay
  zero, other results are unchanged bit for bit (``x + 0.0``).
- ``label_smoothing_ignore`` (every version): ``label_smoothing > 0`` with ignored labels raises
  for a negative ``ignore_index`` (``one_hot`` of -100) and includes the ignored labels for a
  non-negative one.
- ``label_smoothing_weight`` (every version): with ``label_smoothing > 0`` and ``weight``,
  Paddle weights each sample by the smoothed label times ``weight``; torch weights the
  label's term by ``weight[label]`` and the uniform term by each class's weight, and divides
  the mean by the summed ``weight[label]``. Fix for both: torch's formula,
  ``(1 - e) * nll + e / C * sum_c w_c * (-log q_c)`` over the non-ignored labels, from the
  stock hard-label loss and a log-softmax. Calls without ignored labels and without
  ``weight`` keep the stock path.
- ``nll_all_ignored`` (every version): ``nll_loss`` with every label ignored: 0, torch NaN.
- ``nll_ignore_memory`` (every version, CPU): the CPU ``nll_loss`` kernel, reducing (``mean`` /
  ``sum``), writes ``out[i] = 0`` for each ignored label ``i`` into its one-element output: a
  heap overflow (float64 input aborts the process with a malloc assertion on 2.6.2 and 3.3.1;
  float32 corrupts memory silently). It cannot be probed without corrupting memory, so it is
  reported present for the CPU kernel. Fix: calls with an ignored label (one host read) take the
  stock ``reduction="none"`` losses, which are written in bounds, and reduce them as torch does.
- ``bce_pos_weight`` (Paddle 2.6): ``binary_cross_entropy_with_logits(pos_weight=...)`` leaves
  the ``max(-x, 0)`` part of the loss unweighted for positive labels with negative logits
  (logit -1, label 1, pos_weight 3: 1.9398, torch 3.9398). Fix: torch's formula,
  ``(1 - y) x + (1 + (pw - 1) y) (log1p(exp(-|x|)) + max(-x, 0))``.

Not changed (documented differences of definition, see the README): soft labels with
``weight`` (Paddle weights each sample by ``label @ weight`` and divides by the summed
sample weights, as its docstring says; torch weights each class and divides by N),
``reduction="none"`` with soft labels or label smoothing keeps a trailing axis of size 1,
``smooth_l1_loss(delta)`` is torch's ``huber_loss(delta)``, ``kl_div`` has no ``log_target``
on 2.6.

Where: every module of ``paddle`` / ``paddlenlp`` holding the function
(``paddle.nn.functional``, ``paddle.nn.functional.loss``); ``CrossEntropyLoss.forward`` looks
``paddle.nn.functional.cross_entropy`` up at call time, so the layer follows. Static graph
mode (``paddle.enable_static()``, programs built by ``paddle.jit.to_static``) calls the stock
functions unchanged. Anything the wrappers do not handle (bad arguments, float labels,
``use_softmax=False`` with label smoothing, ...) goes to the stock function with the same
arguments, so its results and errors are Paddle's own.

Upstream: Paddle PR #76033 (open), issues #47418, #48663, #23708.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from ..registry import Finding, Patch, Patcher
from ._util import bind_arguments, signature

__all__ = ["SPEC", "DEFECTS", "detect"]

#: Every defect this patch knows, in the order the probe reports them.
DEFECTS = (
    "mean_ignore_negative",
    "all_ignored",
    "label_smoothing_ignore",
    "label_smoothing_weight",
    "nll_all_ignored",
    "nll_ignore_memory",
    "bce_pos_weight",
)

_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8")


class _Seen(NamedTuple):
    present: bool
    detail: str


# -- probe ------------------------------------------------------------------------------
# Small fixed inputs; references computed with NumPy in float64 from torch's definitions.


def _logits() -> Any:
    import numpy as np

    return np.array(
        [
            [0.13, -0.13, 0.64, 0.10, -0.54],
            [0.36, 1.30, 0.95, -0.70, -1.27],
            [-0.62, 0.04, -2.33, -1.25, -0.22],
            [0.36, 0.81, 0.12, 0.62, -0.47],
        ]
    )


def _log_softmax(x: Any) -> Any:
    import numpy as np

    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _torch_smoothed(x: Any, labels: Any, eps: float, weight: Any, ignore: int) -> float:
    """torch's ``cross_entropy(label_smoothing=eps, reduction="mean")`` in NumPy."""
    import numpy as np

    lq = _log_softmax(x)
    c = x.shape[1]
    w = np.ones(c) if weight is None else weight
    valid = labels != ignore
    safe = np.where(valid, labels, 0)
    nll = -lq[np.arange(len(labels)), safe] * w[safe]
    smooth = -(lq * w).sum(axis=1)
    total = ((1 - eps) * nll + eps / c * smooth)[valid].sum()
    return float(total / w[safe][valid].sum())


def _check(fn: Callable[[], _Seen]) -> _Seen:
    try:
        return fn()
    except Exception as exc:  # a defect that raises
        text = str(exc).strip().splitlines()
        return _Seen(True, f"raises {type(exc).__name__}: {text[0][:80] if text else ''}")


def detect() -> dict[str, _Seen]:
    """Run each defect's check on the real library (milliseconds): {defect: (present, detail)}."""
    import numpy as np
    import paddle

    F = paddle.nn.functional
    x = _logits()
    xt = paddle.to_tensor(x.astype("float32"))
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    wt = paddle.to_tensor(w.astype("float32"))

    def mean_ignore_negative() -> _Seen:
        labels = np.array([1, -100, 3, 0])
        got = float(F.cross_entropy(xt, paddle.to_tensor(labels)))
        lq = _log_softmax(x)
        want = float(-(lq[0, 1] + lq[2, 3] + lq[3, 0]) / 3)
        return _Seen(abs(got - want) > 1e-4, f"ignore_index=-100 mean {got:.4f}, torch {want:.4f}")

    def all_ignored() -> _Seen:
        got = float(F.cross_entropy(xt, paddle.to_tensor(np.array([2, 2, 2, 2])), ignore_index=2))
        return _Seen(not np.isnan(got), f"all labels ignored: mean {got:.4g}, torch nan")

    def label_smoothing_ignore() -> _Seen:
        labels = np.array([1, 0, 3, 0])
        got = float(F.cross_entropy(xt, paddle.to_tensor(labels), ignore_index=0, label_smoothing=0.1))
        want = _torch_smoothed(x, labels, 0.1, None, 0)
        if abs(got - want) > 1e-4:
            return _Seen(True, f"label_smoothing=0.1 with ignore_index=0: {got:.4f}, torch {want:.4f}")
        labels = np.array([1, -100, 3, 0])
        got = float(F.cross_entropy(xt, paddle.to_tensor(labels), label_smoothing=0.1))
        want = _torch_smoothed(x, labels, 0.1, None, -100)
        return _Seen(abs(got - want) > 1e-4, f"label_smoothing=0.1 with ignore_index=-100: {got:.4f}, torch {want:.4f}")

    def label_smoothing_weight() -> _Seen:
        labels = np.array([1, 2, 3, 0])
        got = float(F.cross_entropy(xt, paddle.to_tensor(labels), weight=wt, label_smoothing=0.1))
        want = _torch_smoothed(x, labels, 0.1, w, -100)
        return _Seen(abs(got - want) > 1e-4, f"label_smoothing=0.1 with weight: {got:.4f}, torch {want:.4f}")

    def nll_all_ignored() -> _Seen:
        got = float(F.nll_loss(paddle.to_tensor(_log_softmax(x).astype("float32")), paddle.to_tensor(np.array([2, 2, 2, 2])), ignore_index=2))
        return _Seen(not np.isnan(got), f"nll_loss, all labels ignored: mean {got:.4g}, torch nan")

    def nll_ignore_memory() -> _Seen:
        # Not run: it corrupts the heap (float64 aborts the process). Every Paddle whose CPU
        # nll_loss kernel is known (2.6.2 to 3.3.1) has it; a CPU kernel is in every build.
        if "nll_ignore_memory" in getattr(F.nll_loss, "__paddlefix_fixes__", ()):
            return _Seen(False, "nll_loss reduces ignored labels from the per-label losses (patched)")
        return _Seen(
            True,
            "CPU nll_loss kernel writes past its output for ignored labels (from its source; not run)",
        )

    def bce_pos_weight() -> _Seen:
        logit, label, pw = -1.0, 1.0, 3.0
        got = float(
            F.binary_cross_entropy_with_logits(
                paddle.to_tensor([[logit]]), paddle.to_tensor([[label]]), pos_weight=paddle.to_tensor([pw])
            )
        )
        want = pw * float(np.log1p(np.exp(-abs(logit))) + max(-logit, 0.0))
        return _Seen(abs(got - want) > 1e-4, f"bce_with_logits logit -1, label 1, pos_weight 3: {got:.4f}, torch {want:.4f}")

    checks = {
        "mean_ignore_negative": mean_ignore_negative,
        "all_ignored": all_ignored,
        "label_smoothing_ignore": label_smoothing_ignore,
        "label_smoothing_weight": label_smoothing_weight,
        "nll_all_ignored": nll_all_ignored,
        "nll_ignore_memory": nll_ignore_memory,
        "bce_pos_weight": bce_pos_weight,
    }
    with paddle.no_grad():
        return {name: _check(fn) for name, fn in checks.items()}


def problem_present() -> Finding:
    """Probe: which of :data:`DEFECTS` the installed Paddle has (eager mode only)."""
    import paddle

    if not paddle.in_dynamic_mode():
        return Finding(False, "static graph mode: the patch only changes eager calls")
    seen = detect()
    present = [f"{name} ({s.detail})" for name, s in seen.items() if s.present]
    if present:
        return Finding(True, "; ".join(present))
    return Finding(False, "every reduction, smoothing and pos_weight check equals torch's")


# -- replacements -----------------------------------------------------------------------


def _nan_if_zero(denominator: Any) -> Any:
    """0 where ``denominator != 0``, NaN where it is 0 (torch's 0 / 0), without a host read."""
    return (denominator * 0) / (denominator != 0).astype(denominator.dtype)


def _valid_weight_sum(paddle: Any, label: Any, weight: Any, ignore_index: int, dtype: Any) -> Any:
    """Number of labels that are not ``ignore_index``, or their summed class weights."""
    valid = label != ignore_index
    if weight is None:
        return paddle.sum(valid.astype(dtype))
    flat = label.reshape([-1])
    safe = paddle.where(valid.reshape([-1]), flat, paddle.zeros_like(flat))
    return paddle.sum(paddle.gather(weight.astype(dtype), safe) * valid.reshape([-1]).astype(dtype))


def _is_int_tensor(paddle: Any, t: Any) -> bool:
    return isinstance(t, paddle.Tensor) and str(t.dtype).replace("paddle.", "") in _INT_DTYPES


def _make_cross_entropy(original: Any, fixes: frozenset) -> Any:
    sig = signature(original)
    # Paddle 3.x decorates the function to accept ``target=`` for ``label`` (torch's name).
    takes_target = getattr(original, "__wrapped__", None) is not None

    @functools.wraps(original)
    def cross_entropy(*args: Any, **kwargs: Any) -> Any:
        import paddle

        a = bind_arguments(sig, args, kwargs)
        if a is None and takes_target and "target" in kwargs and "label" not in kwargs:
            renamed = dict(kwargs)
            renamed["label"] = renamed.pop("target")
            a = bind_arguments(sig, args, renamed)
        if a is None or not paddle.in_dynamic_mode():
            return original(*args, **kwargs)
        x, label, weight = a.get("input"), a.get("label"), a.get("weight")
        ignore, reduction, axis = a.get("ignore_index", -100), a.get("reduction", "mean"), a.get("axis", -1)
        smoothing = a.get("label_smoothing", 0.0)
        if (
            not isinstance(x, paddle.Tensor)
            or not _is_int_tensor(paddle, label)
            or a.get("soft_label", False)
            or not isinstance(ignore, int)
            or isinstance(ignore, bool)
            or reduction not in ("mean", "sum", "none")
            or not isinstance(axis, int)
            or isinstance(smoothing, bool)
            or not isinstance(smoothing, (int, float))
            or (weight is not None and not isinstance(weight, paddle.Tensor))
            or len(x.shape) == 0
            or 0 in x.shape
            or not -len(x.shape) <= axis < len(x.shape)
        ):
            return original(*args, **kwargs)
        hard_shape = len(label.shape) == len(x.shape) - 1
        if not hard_shape and not (len(label.shape) == len(x.shape) and label.shape[axis] == 1):
            return original(*args, **kwargs)
        if smoothing > 0:
            if not hard_shape or not a.get("use_softmax", True) or smoothing > 1:
                return original(*args, **kwargs)
            needs = ("label_smoothing_weight" in fixes and weight is not None) or (
                "label_smoothing_ignore" in fixes and bool(paddle.any(label == ignore))
            )
            if not needs:
                return original(*args, **kwargs)
            return _smoothed(paddle, original, x, label, weight, ignore, reduction, axis, float(smoothing), a.get("name"))
        if reduction != "mean":
            return original(*args, **kwargs)
        kw = dict(a)
        if weight is None and ignore < 0 and "mean_ignore_negative" in fixes:
            half = str(x.dtype).replace("paddle.", "") in ("float16", "bfloat16")
            if half:
                kw["reduction"] = "none"
                total = paddle.sum(original(**kw).astype("float32"))
            else:
                kw["reduction"] = "sum"
                total = original(**kw)
            count = paddle.sum((label != ignore).astype(total.dtype))
            if "all_ignored" in fixes:
                out = _mean(total, count)
            else:  # Paddle's own ignore_index >= 0 arithmetic: 0 when every label is ignored
                out = total / (count + (count == 0).astype(count.dtype))
            return out.astype(x.dtype) if half else out
        out = original(**a)
        if "all_ignored" in fixes:
            out = out + _nan_if_zero(_valid_weight_sum(paddle, label, weight, ignore, out.dtype))
        return out

    return cross_entropy


def _smoothed(paddle: Any, original: Any, x: Any, label: Any, weight: Any, ignore: int, reduction: str,
              axis: int, eps: float, name: Any) -> Any:
    """torch's label-smoothed cross entropy for hard labels, from the stock hard-label loss."""
    axis = axis % len(x.shape)
    classes = int(x.shape[axis])
    if weight is not None and int(weight.shape[-1]) != classes:
        return original(x, label, weight=weight, ignore_index=ignore, reduction=reduction, axis=axis, label_smoothing=eps, name=name)
    nll = original(x, label, weight=weight, ignore_index=ignore, reduction="none", axis=axis, name=name)
    logq = paddle.nn.functional.log_softmax(x, axis=axis)
    if weight is not None:
        shape = [1] * len(x.shape)
        shape[axis] = classes
        logq = logq * weight.astype(logq.dtype).reshape(shape)
    valid = (label != ignore).astype(nll.dtype)
    smooth = -paddle.sum(logq, axis=axis).astype(nll.dtype) * valid
    loss = nll * (1.0 - eps) + smooth * (eps / classes)
    if reduction == "none":
        return loss.unsqueeze(axis)  # the stock smoothed path keeps the class axis with size 1
    if reduction == "sum":
        return paddle.sum(loss)
    return _mean(paddle.sum(loss), _valid_weight_sum(paddle, label, weight, ignore, loss.dtype))


def _mean(total: Any, denominator: Any) -> Any:
    """``total / denominator``; 0 / 0 is NaN as in torch, with zero gradients (not NaN ones)."""
    safe = denominator + (denominator == 0).astype(denominator.dtype)
    return total / safe + _nan_if_zero(denominator)


def _make_nll_loss(original: Any, fixes: frozenset) -> Any:
    sig = signature(original)

    @functools.wraps(original)
    def nll_loss(*args: Any, **kwargs: Any) -> Any:
        import paddle

        a = bind_arguments(sig, args, kwargs)
        reduction = a.get("reduction", "mean") if a is not None else None
        if a is None or not paddle.in_dynamic_mode() or reduction not in ("mean", "sum"):
            return original(*args, **kwargs)
        x, label, weight, ignore = a.get("input"), a.get("label"), a.get("weight"), a.get("ignore_index", -100)
        if (
            not isinstance(x, paddle.Tensor)
            or not _is_int_tensor(paddle, label)
            or not isinstance(ignore, int)
            or isinstance(ignore, bool)
            or (weight is not None and not isinstance(weight, paddle.Tensor))
        ):
            return original(*args, **kwargs)
        if "nll_ignore_memory" in fixes and x.place.is_cpu_place() and bool(paddle.any(label == ignore)):
            # The CPU kernel writes 0 at out[i] for each ignored label i, past its one-element
            # output when reducing: take the per-label losses and reduce them here.
            kw = dict(a)
            kw["reduction"] = "none"
            total = paddle.sum(original(**kw))
            if reduction == "sum":
                return total
            count = _valid_weight_sum(paddle, label, weight, ignore, total.dtype)
            if "nll_all_ignored" in fixes:
                return _mean(total, count)
            return total / (count + (count == 0).astype(count.dtype))
        out = original(*args, **kwargs)
        if reduction == "mean" and "nll_all_ignored" in fixes:
            out = out + _nan_if_zero(_valid_weight_sum(paddle, label, weight, ignore, out.dtype))
        return out

    nll_loss.__paddlefix_fixes__ = fixes  # type: ignore[attr-defined]
    return nll_loss


def _make_bce_with_logits(original: Any) -> Any:
    sig = signature(original)

    @functools.wraps(original)
    def binary_cross_entropy_with_logits(*args: Any, **kwargs: Any) -> Any:
        import paddle

        a = bind_arguments(sig, args, kwargs)
        if a is None or not paddle.in_dynamic_mode():
            return original(*args, **kwargs)
        x, y, weight, pw = a.get("logit"), a.get("label"), a.get("weight"), a.get("pos_weight")
        reduction = a.get("reduction", "mean")
        if (
            pw is None
            or not all(isinstance(t, paddle.Tensor) for t in (x, y, pw))
            or (weight is not None and not isinstance(weight, paddle.Tensor))
            or reduction not in ("mean", "sum", "none")
            or x.dtype != y.dtype
            or list(x.shape) != list(y.shape)
        ):
            return original(*args, **kwargs)
        # torch: (1 - y) x + (1 + (pw - 1) y) (log1p(exp(-|x|)) + max(-x, 0))
        log_weight = (pw.astype(x.dtype) - 1) * y + 1
        loss = (1 - y) * x + log_weight * (paddle.log1p(paddle.exp(-paddle.abs(x))) + paddle.nn.functional.relu(-x))
        loss = paddle.where(y == -100, paddle.zeros_like(loss), loss)  # the stock kernel's ignore label
        if weight is not None:
            loss = loss * weight.astype(loss.dtype)
        if reduction == "sum":
            return paddle.sum(loss)
        if reduction == "mean":
            return paddle.mean(loss)
        return loss

    return binary_cross_entropy_with_logits


def enabled_fixes(forced: bool) -> frozenset:
    """The defects to fix: those the probe sees, or all of them when the patch is forced."""
    if forced:
        return frozenset(DEFECTS)
    return frozenset(name for name, seen in detect().items() if seen.present)


def apply(patcher: Patcher) -> None:
    import paddle.nn.functional as F

    fixes = enabled_fixes(patcher.forced)
    packages = ("paddle", "paddlenlp")
    if fixes & {"mean_ignore_negative", "all_ignored", "label_smoothing_ignore", "label_smoothing_weight"}:
        original = patcher.original(F, "cross_entropy")
        patcher.replace_everywhere(original, _make_cross_entropy(original, fixes), packages=packages)
    if fixes & {"nll_all_ignored", "nll_ignore_memory"}:
        original = patcher.original(F, "nll_loss")
        patcher.replace_everywhere(original, _make_nll_loss(original, fixes), packages=packages)
    if "bce_pos_weight" in fixes:
        original = patcher.original(F, "binary_cross_entropy_with_logits")
        patcher.replace_everywhere(original, _make_bce_with_logits(original), packages=packages)


SPEC = Patch(
    name="cross_entropy",
    summary="cross_entropy, nll_loss and BCE-with-logits losses as in PyTorch (ignored labels, smoothing, pos_weight)",
    requires={"paddlepaddle|paddlepaddle-gpu": ">=2.0"},
    module="paddle",
    probe=problem_present,
    apply=apply,
    links=("Paddle#76033", "Paddle#47418", "Paddle#48663", "Paddle#23708"),
)
