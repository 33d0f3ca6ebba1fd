"""Compare two :class:`~paddlefix.align._trace.Trace` objects along a pairing: the judgement of
``align.compare`` (framework-neutral, NumPy only).

What is compared, for every step, in this order:

1. **forward**: every paired module call's outputs (and inputs), in the Paddle run's execution
   (completion) order, matched with the torch call of the paired module and the same call index;
   the model's outputs;
2. **loss**;
3. **backward**: the gradient w.r.t. every paired module call's outputs, in backward order;
4. **param_grad**: every paired parameter's gradient, the torch one brought into the Paddle layout
   by the pairing's transform (a Linear weight gradient is compared transposed);
5. **step**: every paired parameter after the optimizer step, judged *noise-aware* (below).

Before any number: the **configuration** of every pair (the ``ModuleInfo.config`` values the
rules table's ``ConfigRule`` entries recorded, one key per label, already in one convention) and
the two **optimizers'** hyper-parameters. A difference there is a finding even when the numbers agree.

**First divergence** (forward): the earliest paired module call, in execution order, whose output
is out of tolerance. If its inputs agree it introduces the error (``kind="module"``); if its first
input already differs although every earlier paired module's outputs agree, the error is in code
between the previous paired module and this one that is no paired module, e.g. a functional
activation inside their container (``kind="between"``; ``"inputs"`` when no paired module ran
before: the model inputs differ). A difference only in a later input (an attention mask in another
convention) with agreeing outputs is reported as ``inputs``, never as a divergence.
**Backward**: the first output gradient, in backward order, that differs; the module that
introduces it is its consumer whose own output gradient agrees (found by following the forward
values: which later calls took this output as input). One such consumer: ``kind="module"`` naming
it; several: ``kind="grad_flow"`` naming the module whose output gradient differs, the consumers as
``candidates``.

**Noise-aware steps**: a parameter after a step is judged by its *update* ``after - before`` on each
side. The update difference ``du`` is explained when, elementwise,
``|du| <= 4 U min(1, r) + 0.1 |d_before| + rounding``, where

- ``u`` is the largest of the two updates and of their gradient-driven parts (the update without
  the optimizer's decoupled weight decay, which can cancel it), ``U`` its largest value over the
  tensor (where Adam's first moment cancels, an element's update is tiny but its error is relative
  to the terms that cancelled);
- ``r`` is the largest relative gradient difference of that element so far: of each step's gradient
  (``|g_pd - g_pt| / |g_pt|``) and of their sum over the steps (``sum |g_pd - g_pt| / |sum g_pt|``:
  Adam's and momentum's moments add gradients up, and where they cancel the sum is sensitive);
- ``rounding`` is 4 float spacings of the parameter plus the relative error of the update's bias
  corrections times ``u`` (Paddle's Adam keeps ``beta^t`` in float32 and ``1 - beta2^t`` is tiny at
  the first steps: ~4e-5 relative at step 2, computed from the betas and the step; 8 float32
  epsilons without betas).

Within tolerance and explained: ``ok``; out of tolerance but explained: ``noise`` (float32 rounding
magnified by the optimizer, e.g. AdamW dividing a 1e-8 gradient by ``eps=1e-8``); not explained:
``fail`` even when the values are within tolerance (a real optimizer difference: epsilon, weight
decay, which parameters decay). After a step whose parameters differ, the next
steps' forward / loss / backward differences are marked ``follows``, not new divergences.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, cast

from ._errors import AlignError
from ._metrics import Metrics, _at, check_tolerance, missing_metrics, reduce_broadcast, tensor_metrics, work_dtype
from ._report import AlignResult, Divergence, Finding, Row

if TYPE_CHECKING:
    import numpy as np

    from ._trace import ForwardEvent, Trace

__all__ = ["diff_traces", "HintContext", "current_context", "to_paddle_layout"]

_IDENTITY = frozenset({"copy", "rename", "", "same", "identity"})
_K = 4.0  # margin on the update's sensitivity to gradient differences


class HintContext(NamedTuple):
    """What the comparison knows about the run beyond the traces (filled by ``compare``)."""

    train: bool = False
    shared_randomness: bool = False
    matmul_precision: str | None = None
    """``paddlefix.get_float32_matmul_precision()`` during the run, when the patch was applied."""
    cross_entropy_patched: bool | None = None
    """Whether paddlefix's ``cross_entropy`` patch was applied (None: unknown)."""
    ignore_index_labels: bool | None = None
    """Whether the batch's labels hold ``-100`` (None: unknown)."""


def current_context(*, train: bool = False, shared_randomness: bool = False, labels: Any = None) -> HintContext:
    """A :class:`HintContext` from paddlefix's own state now: whether the ``matmul_precision`` patch
    is applied (and its mode), whether the ``cross_entropy`` patch is; ``labels`` (arrays, or a list
    / dict of them) are searched for ``-100``. Imports no framework."""
    import paddlefix

    status = paddlefix.status()
    mp = None
    st = status.get("matmul_precision")
    if st is not None and st.state == "applied":
        from ..patches.matmul_precision import get_float32_matmul_precision

        mp = get_float32_matmul_precision()
    ce = status.get("cross_entropy")
    ignore = None
    if labels is not None:
        import numpy as np

        values = labels.values() if isinstance(labels, dict) else labels if isinstance(labels, (list, tuple)) \
            else [labels]
        ignore = any(np.any(np.asarray(v) == -100) for v in values
                     if np.asarray(v).dtype.kind in "iu")
    return HintContext(train=train, shared_randomness=shared_randomness, matmul_precision=mp,
                       cross_entropy_patched=None if ce is None else ce.state == "applied",
                       ignore_index_labels=ignore)


class _PairView:
    """Uniform access to a Pairing (or anything with ``pairs`` / ``params``)."""

    def __init__(self, pairing: Any) -> None:
        if not hasattr(pairing, "pairs"):
            raise AlignError(f"pairing: expected a paddlefix.align Pairing, got {type(pairing).__name__}")
        self.pairs = list(pairing.pairs)
        self.params = list(getattr(pairing, "params", []))
        self.by_paddle = {p.paddle_path: p for p in self.pairs}
        self.by_torch = {p.torch_path: p for p in self.pairs}

    def index_of(self, pair: Any) -> int:
        return self.pairs.index(pair)


def to_paddle_layout(param_pair: Any, array: "np.ndarray", rule: Any = None, *,
                     contiguous: bool = False) -> "np.ndarray | None":
    """The torch ``array`` of ``param_pair`` in the Paddle layout, or None if the transform is unknown.

    ``copy`` / ``rename``: as is; ``transpose``: axes reversed (a Linear weight); any other
    transform: the pair's own ``to_paddle`` callable if it has one, else the ``to_paddle`` of the
    rules-table ``rule``'s ParamRule for this Paddle local name. A transpose is a view, unless
    ``contiguous=True`` asks for a copy.
    """
    import numpy as np

    how = getattr(param_pair, "how", "copy") or "copy"
    if how in _IDENTITY:
        return array
    if how == "transpose":
        # a view by default: no copy of every Linear weight and gradient
        return np.ascontiguousarray(np.transpose(array)) if contiguous else np.transpose(array)
    fn = getattr(param_pair, "to_paddle", None)
    if callable(fn):
        return np.asarray(fn(array))
    if rule is not None:
        local = param_pair.paddle_name.rsplit(".", 1)[-1]
        for pr in getattr(rule, "params", ()):
            if getattr(pr, "paddle", None) == local and callable(getattr(pr, "to_paddle", None)):
                return np.asarray(pr.to_paddle(array))
    return None


def _rule_of(pair: Any) -> Any:
    """The rules-table entry named by ``pair.rule`` (None if unknown or the table is unavailable)."""
    name = getattr(pair, "rule", None)
    if not name:
        return None
    try:
        from . import rules
    except ImportError:
        return None
    try:
        return rules.rule_by_name(name)
    except Exception:
        return None


# --------------------------------------------------------------------------- entry point
def diff_traces(paddle: "Trace", torch: "Trace", pairing: Any, *, tolerance: Any = None,
                context: HintContext | None = None) -> AlignResult:
    """Compare the Paddle ``paddle`` trace with the torch ``torch`` trace (the reference).

    Args:
        paddle, torch: the two runs (see ``paddlefix/align/_trace.py``).
        pairing: the :class:`~paddlefix.align.Pairing` of the two models.
        tolerance: ``None`` (per-dtype defaults), ``"reprod"`` or ``(rtol, atol)``.
        context: what ``compare`` knows about the run, for the hints (default:
            :func:`current_context`, i.e. eval mode and paddlefix's patches as they are now).

    Raises:
        AlignError: a trace is of the wrong framework, the step counts differ, the tolerance is invalid.
    """
    from . import _hints

    check_tolerance(tolerance)
    for name, tr, fw in (("paddle", paddle, "paddle"), ("torch", torch, "torch")):
        if getattr(tr, "framework", None) != fw:
            raise AlignError(f"{name}: expected a {fw} Trace, got framework {getattr(tr, 'framework', None)!r}")
    if len(paddle.steps) != len(torch.steps):
        raise AlignError(f"the traces hold different numbers of steps: paddle {len(paddle.steps)}, "
                         f"torch {len(torch.steps)}")
    ctx = context if context is not None else current_context()
    view = _PairView(pairing)
    d = _Differ(paddle, torch, view, tolerance, ctx)
    d.run()
    result = AlignResult(rows=d.rows, findings=d.findings, divergences=d.divergences,
                         losses={"paddle": [s.loss for s in paddle.steps], "torch": [s.loss for s in torch.steps]},
                         meta={"tolerance": _tol_text(tolerance), "steps": len(paddle.steps),
                               "versions": {"paddle": dict(paddle.versions), "torch": dict(torch.versions)},
                               "context": ctx._asdict(), "pairs": len(view.pairs)},
                         notes=d.notes)
    result._arrays = d.reprod_arrays()
    _hints.attach(result, d)
    return result


def _tol_text(tolerance: Any) -> str:
    if tolerance is None:
        return "per-dtype defaults (float32 rtol 1.3e-06 atol 1e-05)"
    if isinstance(tolerance, str):
        return "reprod (mean abs <= 1e-06 and every element within the dtype default)"
    return f"rtol {tolerance[0]:g} atol {tolerance[1]:g}"


# --------------------------------------------------------------------------- the work
class _Differ:
    def __init__(self, pd: "Trace", pt: "Trace", view: _PairView, tolerance: Any, ctx: HintContext) -> None:
        self.pd, self.pt, self.view, self.tol, self.ctx = pd, pt, view, tolerance, ctx
        self.rows: list[Row] = []
        self.findings: list[Finding] = []
        self.divergences: list[Divergence] = []
        self.notes: list[str] = []
        self.pd_mods = {m.path: m for m in pd.modules}
        self.pt_mods = {m.path: m for m in pt.modules}
        self.grad_acc: dict[str, tuple] = {}
        """paddle name -> (largest relative gradient difference so far, sum of |g_pd - g_pt|, sum of g_pt),
        flat float32; kept only while a later step needs it."""
        self.step_cache: dict[tuple[int, str], tuple] = {}
        """(step, paddle name) -> (metrics after the step, update verdict or None), computed with the gradients."""
        self.keep_history = any(st.params_after for st in pd.steps[1:])
        self.params_differ_from: int | None = None  # first step after which parameters differ
        self.param_pairs = [pp for pp in view.params]
        self.opt_pd, self.opt_pt = normalise_optimizer(pd.optimizer), normalise_optimizer(pt.optimizer)
        for info in (self.opt_pd, self.opt_pt):
            info["decayed_set"] = frozenset(info.get("decayed") or ())

    def layout(self, pp: Any, array: Any) -> Any:
        """The torch ``array`` in the Paddle layout: a view (no copy) for ``copy`` / ``transpose``."""
        rule = _rule_of(self.view.pairs[pp.pair]) if _valid_pair(pp, self.view) else None
        return to_paddle_layout(pp, array, rule, contiguous=False)

    def metrics(self, a: Any, e: Any) -> Metrics:
        return tensor_metrics(a, e, tolerance=self.tol)

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        self.config_findings()
        self.optimizer_findings()
        for s in range(len(self.pd.steps)):
            follows = self.params_differ_from is not None and s > self.params_differ_from
            self.forward(s, follows)
            self.loss(s, follows)
            self.backward(s, follows)
            self.param_grads(s, follows)
            self.step(s)

    # ------------------------------------------------------------------ configuration
    def config_findings(self) -> None:
        for p in self.view.pairs:
            a, b = self.pd_mods.get(p.paddle_path), self.pt_mods.get(p.torch_path)
            if a is None or b is None:
                continue
            for label, va in a.config.items():
                if label not in b.config:
                    continue
                vb = b.config[label]
                if not same_value(va, vb):
                    self.findings.append(Finding("config", p.paddle_path, p.torch_path, label, va, vb))

    def optimizer_findings(self) -> None:
        a, b = normalise_optimizer(self.pd.optimizer), normalise_optimizer(self.pt.optimizer)
        if not a or not b:
            return
        for key in ("type", "lr", "eps", "beta1", "beta2", "weight_decay", "decay", "momentum", "nesterov",
                    "amsgrad"):
            if key in a and key in b and not same_value(a[key], b[key]):
                if key == "type" and a[key].lower() == b[key].lower():
                    continue
                self.findings.append(Finding("optimizer", "", "", key, a[key], b[key]))
        da, db = a.get("decayed"), b.get("decayed")
        if da is not None and db is not None:
            to_pd = {pp.torch_name: pp.paddle_name for pp in self.param_pairs}
            db_pd = {to_pd.get(n, n) for n in db}
            only_pd = sorted(set(da) - db_pd)
            only_pt = sorted(db_pd - set(da))
            if only_pd or only_pt:
                self.findings.append(Finding(
                    "optimizer", "", "", "decayed parameters",
                    f"{len(da)} decayed; {len(only_pd)} only here: {', '.join(only_pd[:4])}",
                    f"{len(db)} decayed; {len(only_pt)} only here: {', '.join(only_pt[:4])}"))

    def _paired_rows(self, phase: str, s: int, mine: list[Any], theirs: list[Any]) -> Iterator[tuple[Row, Any, Any, Any]]:
        """(row, Paddle event, torch event or None, pair) for each Paddle event of a paired module, in order."""
        by_key = {(e.path, e.call): e for e in theirs}
        order = 0
        for ev in mine:
            pair = self.view.by_paddle.get(ev.path)
            if pair is None:
                continue
            yield (Row(phase, s, order, ev.path, pair.torch_path, pair.paddle_type, ev.call), ev,
                   by_key.get((pair.torch_path, ev.call)), pair)
            order += 1

    # ------------------------------------------------------------------ forward
    def forward(self, s: int, follows: bool) -> None:
        ps, ts = self.pd.steps[s], self.pt.steps[s]
        rows: list[tuple[Row, list[int], bool]] = []
        for row, ev, te, pair in self._paired_rows("forward", s, ps.forward, ts.forward):
            if te is None:
                row.status, row.what = "fail", "call"
                row.note = f"call {ev.call} of {pair.torch_path or '(model)'} did not happen on the torch side"
                self.rows.append(row)
                rows.append((row, [], True))
                continue
            in_bad, out_bad = self._compare_call(row, ev, te)
            if out_bad:
                row.status = "fail"
            elif in_bad:
                row.status = "inputs"
                row.note = "input(s) " + ", ".join(map(str, in_bad)) + " differ; the outputs agree"
            if follows and row.status in ("fail", "inputs"):
                row.status = "follows"
            self.rows.append(row)
            rows.append((row, in_bad, out_bad))
        # the model outputs (unless the root module is paired: its row is the same tensors)
        root_paired = self.view.by_paddle.get("") is not None and any(e.path == "" for e in ps.forward)
        if (ps.output or ts.output) and not root_paired:
            row = Row("forward", s, len(rows), "", "", "(model output)", 0)
            bad = self._compare_list(row, ps.output, ts.output, "model_output", outputs=True)
            row.status = ("follows" if follows else "fail") if bad else "ok"
            self.rows.append(row)
            rows.append((row, [], bool(bad)))
        if follows:
            return
        for i, (row, in_bad, out_bad) in enumerate(rows):
            if not out_bad:
                continue
            self.divergences.append(self._forward_divergence(s, i, rows, in_bad))
            break

    def _compare_call(self, row: Row, ev: "ForwardEvent", te: "ForwardEvent") -> tuple[list[int], bool]:
        in_bad = []
        for j, (a, b) in enumerate(zip(ev.inputs, te.inputs)):
            if getattr(a, "shape", None) != getattr(b, "shape", None):
                continue  # positional inputs of two APIs need not correspond; only like shapes are compared
            m = self.metrics(a, b)
            row.tensors.append((f"input[{j}]", m))
            if not m.ok:
                in_bad.append(j)
        out_bad = self._compare_list(row, ev.outputs, te.outputs, "output", outputs=True)
        if len(ev.inputs) != len(te.inputs):
            row.note = (row.note + "; " if row.note else "") + \
                f"{len(ev.inputs)} input tensor(s) vs {len(te.inputs)}: like-shaped ones compared"
        return in_bad, bool(out_bad)

    def _compare_list(self, row: Row, a_list: list, b_list: list, name: str, *, outputs: bool,
                      grads: bool = False) -> list[int]:
        bad = []
        worst: tuple[float, str, Metrics] | None = None
        for j, (a, b) in enumerate(zip(a_list, b_list)):
            if a is None and b is None:
                continue
            if a is None or b is None:
                m = missing_metrics(b if a is None else a, "paddle" if a is None else "torch")
            else:
                if grads and a.shape != b.shape:  # the gradient of a broadcast tensor is summed
                    a, b = reduce_broadcast(a, b.shape), reduce_broadcast(b, a.shape)
                m = self.metrics(a, b)
            what = f"{name}[{j}]"
            row.tensors.append((what, m))
            score = (2.0 + m.fraction_out) if not m.ok else min(m.scale_rel, 1.0)
            if worst is None or score > worst[0]:
                worst = (score, what, m)
            if not m.ok:
                bad.append(j)
        if len(a_list) != len(b_list):
            row.note = (row.note + "; " if row.note else "") + \
                f"{len(a_list)} {name} tensor(s) vs {len(b_list)}: the first {min(len(a_list), len(b_list))} compared"
        if worst is not None:
            row.what, row.metrics = worst[1], worst[2]
        elif not row.what:
            row.status = "skipped"
        return bad

    def _forward_divergence(self, s: int, i: int, rows: list, in_bad: list[int]) -> Divergence:
        row: Row = rows[i][0]
        prev = None
        for r, _ib, ob in reversed(rows[:i]):
            if not ob and r.paddle != "" and not _is_ancestor(row.paddle, r.paddle):
                prev = r
                break
        first_bad_input = bool(in_bad) and min(in_bad) == 0
        if row.what == "call" or not first_bad_input:
            detail = f"{row.paddle or '(model)'} ({row.type}) receives inputs that agree and returns an output " \
                     f"that does not: it introduces the difference"
            if in_bad:
                detail += f" (its input(s) {', '.join(map(str, in_bad))} differ too, e.g. a mask in " \
                          "another convention; its first input agrees)"
            if row.what == "call":
                detail = row.note
            return Divergence("forward", s, row.paddle, row.torch, row.what, "module", row.metrics, "", detail)
        m = next(m for w, m in row.tensors if w == f"input[{min(in_bad)}]")
        if prev is None:
            detail = (f"the first input of {row.paddle or '(model)'} differs and no paired module ran before it: "
                      "the inputs given to the two models differ (or code before the first paired module does)")
            return Divergence("forward", s, row.paddle, row.torch, f"input[{min(in_bad)}]", "inputs", m, "", detail)
        container = _common_parent(prev.paddle, row.paddle)
        detail = (f"the inputs of {row.paddle} differ although the outputs of the previous paired module "
                  f"{prev.paddle} agree: the difference comes from code between them that is not a paired "
                  f"module, inside {container or '(the model)'} (e.g. a functional activation or an "
                  "operation written in its forward)")
        return Divergence("forward", s, row.paddle, row.torch, f"input[{min(in_bad)}]", "between", m, "", detail,
                          [[prev.paddle, prev.torch]])

    # ------------------------------------------------------------------ loss
    def loss(self, s: int, follows: bool) -> None:
        a, b = self.pd.steps[s].loss, self.pt.steps[s].loss
        if a is None and b is None:
            return
        import numpy as np

        row = Row("loss", s, 0, "loss", "loss", "loss")
        if a is None or b is None:
            row.status, row.note = "fail", f"no loss on the {'paddle' if a is None else 'torch'} side"
        else:
            m = self.metrics(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))
            row.what, row.metrics, row.tensors = "loss", m, [("loss", m)]
            row.status = "ok" if m.ok else ("follows" if follows else "fail")
        self.rows.append(row)
        if row.status == "fail":
            self.divergences.append(Divergence("loss", s, "loss", "loss", "loss", "loss", row.metrics, "",
                                               row.note or "the loss values differ"))

    # ------------------------------------------------------------------ backward
    def backward(self, s: int, follows: bool) -> None:
        ps, ts = self.pd.steps[s], self.pt.steps[s]
        if not ps.grads and not ts.grads:
            return
        rows = []
        for row, g, tg, _ in self._paired_rows("backward", s, ps.grads, ts.grads):
            if tg is None:
                row.status, row.what = "fail", "grad_output"
                row.note = "no gradient reached this module's output on the torch side"
            else:
                bad = self._compare_list(row, g.grads, tg.grads, "grad_output", outputs=True, grads=True)
                if bad:
                    row.status = "fail"
            if follows and row.status == "fail":
                row.status = "follows"
            self.rows.append(row)
            rows.append(row)
        if follows:
            return
        for i, row in enumerate(rows):
            if row.status == "fail":
                self.divergences.append(self._backward_divergence(s, row, rows))
                break

    def _backward_divergence(self, s: int, row: Row, rows: list[Row]) -> Divergence:
        import numpy as np

        fwd = self.pd.steps[s].forward
        status = {(r.paddle, r.call): r.status for r in rows}
        j = 0
        if row.what.startswith("grad_output["):
            j = int(row.what[len("grad_output["):-1])
        src_index = next((k for k, e in enumerate(fwd) if (e.path, e.call) == (row.paddle, row.call)), None)
        consumers: list[tuple[str, int]] = []
        if src_index is not None and j < len(fwd[src_index].outputs):
            value = fwd[src_index].outputs[j]
            for e in fwd[src_index + 1:]:
                if e.path == row.paddle or self.view.by_paddle.get(e.path) is None:
                    continue
                if _is_ancestor(e.path, row.paddle):  # a container of the source returns it, not consumes it
                    continue
                if any(isinstance(x, np.ndarray) and x.shape == value.shape and x.size > 1 and
                       np.array_equal(x, value, equal_nan=True) for x in e.inputs):
                    if status.get((e.path, e.call)) == "ok":
                        consumers.append((e.path, e.call))
        # outermost consumers: a container's backward includes its children's
        outer = [c for c in consumers if not any(o != c and _is_ancestor(o[0], c[0]) for o in consumers)]
        names = list(dict.fromkeys(c[0] for c in outer))
        if len(names) == 1:
            p = self.view.by_paddle[names[0]]
            detail = (f"the gradient {p.paddle_path} receives agrees, and the gradient it passes back to "
                      f"{row.paddle or '(model)'} ({row.what}) does not: the backward of {p.paddle_path} "
                      "introduces the difference (e.g. a detach() / stop_gradient, or a custom backward)")
            return Divergence("backward", s, p.paddle_path, p.torch_path, f"grad passed to {row.paddle}",
                              "module", row.metrics, "", detail)
        if names:
            cands = [[n, self.view.by_paddle[n].torch_path] for n in names]
            lca = names[0]
            for n in names[1:]:
                lca = _common_prefix(lca, n)
            lca_pair = self.view.by_paddle.get(lca)
            detail = (f"the gradient w.r.t. the output of {row.paddle} ({row.what}) differs while the gradients "
                      f"received by its consumers {', '.join(names)} agree: the backward of one of them, or "
                      f"code between them inside {lca or '(the model)'}, loses or changes gradient "
                      "(e.g. a detach() in one branch)")
            return Divergence("backward", s, lca, lca_pair.torch_path if lca_pair else lca,
                              f"grad passed to {row.paddle}", "grad_flow", row.metrics, "", detail, cands)
        else:
            cands = []
            detail = (f"the gradient w.r.t. the output of {row.paddle or '(model)'} ({row.what}) is the first "
                      "that differs in backward order" +
                      (": the backward of the loss differs" if row.order == 0 else ""))
        return Divergence("backward", s, row.paddle, row.torch, row.what, "grad_flow", row.metrics, "", detail,
                          cands)

    # ------------------------------------------------------------------ parameter gradients
    def param_grads(self, s: int, follows: bool) -> None:

        ps, ts = self.pd.steps[s], self.pt.steps[s]
        if not ps.param_grads and not ts.param_grads:
            return
        first: Row | None = None
        for order, pp in enumerate(self.param_pairs):
            if pp.paddle_name not in ps.param_grads and pp.torch_name not in ts.param_grads:
                continue
            pair = self.view.pairs[pp.pair] if _valid_pair(pp, self.view) else None
            row = Row("param_grad", s, order, pp.paddle_name, pp.torch_name,
                      pair.paddle_type if pair is not None else "", 0, what=pp.how or "copy")
            a, b = ps.param_grads.get(pp.paddle_name), ts.param_grads.get(pp.torch_name)
            if a is None and b is None:
                row.status, row.note = "skipped", "no gradient on either side"
                self.rows.append(row)
                continue
            if a is None or b is None:
                m = missing_metrics(b if a is None else a, "paddle" if a is None else "torch")
                m.problem = f"no gradient on the {'paddle' if a is None else 'torch'} side"
            else:
                bt = self.layout(pp, b)
                if bt is None:
                    row.status, row.note = "skipped", f"transform {pp.how!r}: no to_paddle known to compare"
                    self.rows.append(row)
                    continue
                m = cast(Metrics, self._param_pass(s, pp, a, bt))  # both gradients given: their metrics
            row.metrics, row.tensors = m, [(pp.paddle_name, m)]
            row.status = "ok" if m.ok else ("follows" if follows else "fail")
            self.rows.append(row)
            if row.status == "fail" and first is None:
                first = row
        if first is not None:
            owner = self._owner(first.paddle)
            self.divergences.append(Divergence(
                "param_grad", s, first.paddle, first.torch, first.paddle, "param", first.metrics, "",
                f"the gradient of {first.paddle} (torch {first.torch}, compared in the Paddle layout: "
                f"{first.what}) is the first parameter gradient that differs" +
                (f"; it belongs to {owner}" if owner is not None else "")))

    def _owner(self, paddle_name: str) -> str | None:
        for pp in self.param_pairs:
            if pp.paddle_name == paddle_name and _valid_pair(pp, self.view):
                return self.view.pairs[pp.pair].paddle_path
        return None

    # ------------------------------------------------------------------ parameters after the step
    def step(self, s: int) -> None:
        import numpy as np

        ps, ts = self.pd.steps[s], self.pt.steps[s]
        if not ps.params_after or not ts.params_after:
            return
        pt_before = self.pt.params_before if s == 0 else self.pt.steps[s - 1].params_after
        first: Row | None = None
        differ = False
        for order, pp in enumerate(self.param_pairs):
            if pp.paddle_name not in ps.params_after or pp.torch_name not in ts.params_after:
                continue
            pair = self.view.pairs[pp.pair] if _valid_pair(pp, self.view) else None
            row = Row("step", s, order, pp.paddle_name, pp.torch_name, pair.paddle_type if pair is not None else "",
                      0, what="after step")
            a = ps.params_after[pp.paddle_name]
            b = self.layout(pp, ts.params_after[pp.torch_name])
            if b is None:
                row.status, row.note = "skipped", f"transform {pp.how!r}: no to_paddle known to compare"
                self.rows.append(row)
                continue
            b0 = pt_before.get(pp.torch_name)
            buffer = ps.param_grads.get(pp.paddle_name) is None and ts.param_grads.get(pp.torch_name) is None
            if buffer:
                # a buffer (BatchNorm running statistics): updated by the forward, not by the optimizer
                # from a gradient, so there is no gradient noise to magnify: judged by tolerance alone
                m = self.metrics(a, b)
                explained = m.ok
                if not m.ok:
                    m.extra.update(update_diff_max=m.max_abs, allowed_at_worst=0.0, buffer=True,
                                   update_max=float(np.abs(np.asarray(b, np.float64) -
                                                           np.asarray(self.layout(pp, b0) if b0 is not None else b,
                                                                      np.float64)).max()))
            else:
                cached = self.step_cache.pop((s, pp.paddle_name), None)
                if cached is None:
                    self._param_pass(s, pp, None, None)
                    cached = self.step_cache.pop((s, pp.paddle_name))
                m, verdict = cached
                if verdict is not None:
                    m.extra.update(verdict)
                    explained = verdict["unexplained"] == 0
                else:
                    explained = m.ok
            row.metrics, row.tensors = m, [(pp.paddle_name, m)]
            if m.ok and explained:
                row.status = "ok"
            elif explained:
                row.status = "noise"
                row.note = (f"explained by rounding: update size {verdict['update_max']:.3g}, largest relative "
                            f"gradient difference {verdict['grad_rel_max']:.3g}")
                differ = True
            else:
                row.status = "fail"
                row.note = ("a buffer the forward updates: out of tolerance" if buffer else
                            f"{m.extra.get('unexplained', '?')} element(s) of the update not explained by the "
                            "gradient and previous-parameter differences")
                differ = True
                if first is None:
                    first = row
            self.rows.append(row)
        if differ and self.params_differ_from is None:
            self.params_differ_from = s
        if first is not None and (first.metrics.extra if first.metrics else {}).get("buffer"):
            self.divergences.append(Divergence(
                "step", s, first.paddle, first.torch, first.paddle, "buffer", first.metrics, "",
                f"{first.paddle} (a buffer the forward updates, e.g. BatchNorm running statistics) differs after "
                f"step {s} while the forward outputs agree: the two layers update it differently"))
        elif first is not None:
            ex = first.metrics.extra if first.metrics else {}
            self.divergences.append(Divergence(
                "step", s, first.paddle, first.torch, first.paddle, "param", first.metrics, "",
                f"{first.paddle} after step {s}: the update differs by up to {ex.get('update_diff_max', 0):.3g} "
                f"where the gradient and previous-parameter differences explain at most "
                f"{ex.get('allowed_at_worst', 0):.3g} (update size {ex.get('update_max', 0):.3g}): the optimizers "
                "do not do the same thing"))

    def _decoupled_decay(self, side: str, name: str) -> float:
        """``lr * weight_decay`` if that side's optimizer decays ``name`` directly (AdamW-style), else 0."""
        info = self.opt_pd if side == "paddle" else self.opt_pt
        if info.get("decay") != "decoupled" or name not in info.get("decayed_set", ()):
            return 0.0
        try:
            return float(info.get("lr") or 0.0) * float(info.get("weight_decay") or 0.0)
        except (TypeError, ValueError):
            return 0.0

    def _bias_correction_rel(self, s: int) -> float:
        """Relative error of an Adam-style update from bias corrections computed with float32 betas.

        Paddle keeps ``beta1 ** t`` / ``beta2 ** t`` in float32 (``float32(0.999)`` is 1.3e-8 off), and
        ``1 - beta2 ** t`` is tiny at the first steps, so its relative error (halved by the square root)
        reaches ~6e-6 of the update at t = 1; torch computes them in float64. 0 without betas."""
        import numpy as np

        betas = normalise_optimizer(self.pd.optimizer)
        t = s + 1
        rel = 0.0
        for key, power in (("beta1", 1.0), ("beta2", 0.5)):
            b = betas.get(key)
            if not isinstance(b, (int, float)) or not 0.0 < float(b) < 1.0:
                continue
            b = float(b)
            # relative error of float32 b ** t: t times the representation error of b, plus half an
            # ulp per multiplication after the first
            pow_rel = t * abs(float(np.float32(b)) - b) / b + (t - 1) * 0.5 * float(np.finfo(np.float32).eps)
            rel += power * b**t * pow_rel / (1.0 - b**t)
        return 2.0 * rel

    def _param_pass(self, s: int, pp: Any, ga: Any, gb: Any) -> Metrics | None:
        import numpy as np

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # once per parameter, not per block
            return self._param_pass_quiet(s, pp, ga, gb)

    def _param_pass_quiet(self, s: int, pp: Any, ga: Any, gb: Any) -> Metrics | None:
        """One pass over one parameter at step ``s``: the metrics of its gradients ``ga`` / ``gb`` (torch's
        in the Paddle layout, possibly a view; None without gradients, then None is returned) and, with an
        optimizer step, the metrics of its values after the step and the noise-aware update verdict,
        left in :attr:`step_cache` for :meth:`step`.

        Every array is read in blocks, once (twice for the update check of a tensor above
        ``_STORE_LIMIT`` elements), in float32 for float32 tensors; no whole-tensor temporary.

        The update ``after - before`` differs by ``du`` between the sides; it is explained when, elementwise,
        ``du <= 4 U min(1, r) + 0.1 |d_before| + rounding`` (see the module docs)."""
        import numpy as np

        from ._metrics import _Acc, finish_metrics, iter_blocks, prepare_metrics

        ps, ts = self.pd.steps[s], self.pt.steps[s]
        name = pp.paddle_name
        g: Any = prepare_metrics(ga, gb, tolerance=self.tol) if ga is not None and gb is not None else None
        st: Any = None
        upd: Any = None
        if ps.params_after.get(name) is not None and ts.params_after.get(pp.torch_name) is not None:
            b1 = self.layout(pp, ts.params_after[pp.torch_name])
            if b1 is not None:
                st = prepare_metrics(ps.params_after[name], b1, tolerance=self.tol)
        if st is not None and not st[5] and st[0].problem is None:
            pd_before = self.pd.params_before if s == 0 else self.pd.steps[s - 1].params_after
            pt_before = self.pt.params_before if s == 0 else self.pt.steps[s - 1].params_after
            a0, b0 = pd_before.get(name), pt_before.get(pp.torch_name)
            b0 = self.layout(pp, b0) if b0 is not None else None
            shape = st[2].shape
            if a0 is not None and b0 is not None and np.size(a0) == st[2].size and np.size(b0) == st[2].size:
                upd = (np.asarray(a0).reshape(shape), st[1], np.asarray(b0).reshape(shape), st[2])
        # gradients that line up with the parameter feed the relative-difference history, in the same pass
        g_live, p_live = g is not None and not g[5], st is not None and not st[5]
        g_fused = g_live and (not p_live or g[2].shape == st[2].shape)
        later = self.keep_history and s < len(self.pd.steps) - 1
        g_for_r = g_fused and (upd is not None or later)
        store = g_for_r and later
        n = upd[3].size if upd is not None else (g[2].size if g_for_r else 0)
        hist = self.grad_acc.get(name)
        if hist is not None and hist[0].size != n:
            hist = None
        if store and hist is None:
            hist = (np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32))
            self.grad_acc[name] = hist
        g_acc: Any = _Acc(g[3]) if g_live else None
        p_acc: Any = _Acc(st[3]) if p_live else None
        if g_live and not g_fused:  # gradients of another shape than the parameter: on their own
            for _pos, at, (x, y) in iter_blocks((g[1], g[2]), work_dtype(g[1], g[2])):
                g_acc.add(x, y, at)
            g_live = False
        u = _UpdateCheck(self, s, pp, upd, hist, store) if upd is not None else None
        arrays: list[Any] = []
        if g_live:
            arrays += [g[1], g[2]]
            gw = work_dtype(g[1], g[2])
        if p_acc is not None:
            arrays += [st[1], st[2]]
            pw = work_dtype(st[1], st[2])
        if u is not None:
            arrays += [upd[0], upd[2]]
        rel_in_pass1 = g_for_r and (u is None or not u.large)
        for lo, at, blocks in (iter_blocks(arrays, None) if arrays else ()):
            i = 0
            r = None
            if g_live:
                x, y = blocks[0].astype(gw, copy=False), blocks[1].astype(gw, copy=False)
                d, finite = g_acc.add(x, y, at)
                if rel_in_pass1:
                    r = u_rel(self, hist, store, lo, d, y, finite)
                    if u is not None:
                        u.note_rel(r)
                i = 2
            elif u is not None and hist is not None:
                r = hist[0][lo:lo + blocks[0].size]
                u.note_rel(r)
            if p_acc is not None:
                a1b, b1b = blocks[i].astype(pw, copy=False), blocks[i + 1].astype(pw, copy=False)
                p_acc.add(a1b, b1b, at)
                i += 2
                if u is not None:
                    u.pass1(at, blocks[i], a1b, blocks[i + 1], b1b, r)
        if u is not None and u.large:
            g_live = g_live and g_for_r
            arrays = ([g[1], g[2]] if g_live else []) + [upd[0], upd[1], upd[2], upd[3]]
            for lo, at, blocks in iter_blocks(arrays, None):
                r = None
                if g_live:
                    x, y = blocks[0].astype(gw, copy=False), blocks[1].astype(gw, copy=False)
                    d = np.abs(x - y)
                    finite = bool(np.isfinite(d).all() and np.isfinite(y).all())
                    if not finite:
                        d = _special_diff(x, y)
                    r = u_rel(self, hist, store, lo, d, y, finite)
                    u.note_rel(r)
                    blocks = blocks[2:]
                elif hist is not None:
                    r = hist[0][lo:lo + blocks[0].size]
                    u.note_rel(r)
                u.pass2(at, blocks[0], blocks[1], blocks[2], blocks[3], r)
        if p_acc is not None:
            m_after = finish_metrics(st[0], p_acc, st[1], st[2], st[4])
            self.step_cache[(s, name)] = (m_after, u.verdict() if u is not None else None)
        elif st is not None:
            self.step_cache[(s, name)] = (st[0], None)
        if g is None:
            return None
        return g[0] if g[5] else finish_metrics(g[0], g_acc, g[1], g[2], g[4])

    # ------------------------------------------------------------------ reprod_log arrays
    def reprod_arrays(self) -> dict[str, Any]:
        import numpy as np

        out: dict[str, Any] = {}
        ps, ts = self.pd.steps, self.pt.steps
        if not ps:
            return out
        fwd_pd = {f"output_{i}": x for i, x in enumerate(ps[0].output) if x is not None}
        fwd_pt = {f"output_{i}": x for i, x in enumerate(ts[0].output) if x is not None}
        keys = [k for k in fwd_pd if k in fwd_pt and np.shape(fwd_pd[k]) == np.shape(fwd_pt[k])]
        out["forward"] = self._triple({k: fwd_pd[k] for k in keys}, {k: fwd_pt[k] for k in keys})
        if ps[0].loss is not None and ts[0].loss is not None:
            out["loss"] = self._triple({"loss": np.array([ps[0].loss])}, {"loss": np.array([ts[0].loss])})
            bp_pd: dict[str, Any] = {}
            bp_pt: dict[str, Any] = {}
            for i, (a, b) in enumerate(zip(ps, ts)):
                if a.loss is not None and b.loss is not None:
                    bp_pd[f"loss_{i}"], bp_pt[f"loss_{i}"] = np.array([a.loss]), np.array([b.loss])
                for pp in self.param_pairs:
                    ga, gb = a.param_grads.get(pp.paddle_name), b.param_grads.get(pp.torch_name)
                    gb = self.layout(pp, gb) if gb is not None else None
                    if ga is not None and gb is not None and ga.shape == gb.shape:
                        bp_pd[f"grad_{i}.{pp.paddle_name}"], bp_pt[f"grad_{i}.{pp.paddle_name}"] = ga, gb
            out["bp_align"] = self._triple(bp_pd, bp_pt)
        tr_pd: dict[str, Any] = {}
        tr_pt: dict[str, Any] = {}
        for i, (a, b) in enumerate(zip(ps, ts)):
            for pp in self.param_pairs:
                va, vb = a.params_after.get(pp.paddle_name), b.params_after.get(pp.torch_name)
                vb = self.layout(pp, vb) if vb is not None else None
                if va is not None and vb is not None and va.shape == vb.shape:
                    tr_pd[f"step_{i}.{pp.paddle_name}"], tr_pt[f"step_{i}.{pp.paddle_name}"] = va, vb
        if tr_pd:
            out["train_align"] = self._triple(tr_pd, tr_pt)
        return out

    def _triple(self, pd: dict, pt: dict) -> tuple[dict, dict, Any]:
        """The two sides' arrays (references, no copies) and how to judge them when the files are written."""
        return pd, pt, self.tol


# --------------------------------------------------------------------------- the update check
_STORE_LIMIT = 1 << 22  # elements: up to this size the update check keeps its per-element terms (16 B each)


def _special_diff(x: Any, y: Any) -> Any:
    """``|x - y|`` where NaN / infinities appear: 0 where both are NaN or the same infinity, inf where
    only one side is not finite (as the metrics count them)."""
    import numpy as np

    finite = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where(finite, np.abs(x - y), np.inf)
    d[(np.isnan(x) & np.isnan(y)) | (np.isinf(x) & np.isinf(y) & (x == y))] = 0.0
    return d


def u_rel(differ: "_Differ", hist: Any, store: bool, lo: int, d: Any, y: Any, finite: bool) -> Any:
    """The largest relative gradient difference so far, for one block (float32): of this step's
    gradient, ``|g_pd - g_pt| / |g_pt|`` (``d`` = ``|g_pd - g_pt|``, ``y`` = ``g_pt``), of the sums over
    the steps, ``sum |g_pd - g_pt| / |sum g_pt|``, and of the earlier steps; 0 where the difference is 0,
    1 where the reference is 0 and the difference not (NaN / inf), capped at 6e4. Updates ``hist``
    (``store``)."""
    import numpy as np

    hi = lo + d.size
    if hist is not None:
        sd = hist[1][lo:hi] + d
        sy = hist[2][lo:hi] + y
        if store:
            hist[1][lo:hi], hist[2][lo:hi] = sd, sy
    else:
        sd, sy = d, y
    # (the caller silences floating-point warnings once for the whole parameter)
    if finite:
        r = np.abs(y)
        np.divide(d, r, out=r)
        np.fmax(r, 0.0, out=r)  # 0 / 0 (no difference, both zero) is 0
        if sd is not d:
            t = np.abs(sy)
            np.divide(sd, t, out=t)
            np.fmax(t, 0.0, out=t)
            np.maximum(r, t, out=r)
        top = float(r.max())
        if not math.isfinite(top):
            r = np.nan_to_num(r, nan=1.0, posinf=1.0)
    else:
        r = np.where(d == 0, 0.0, d / np.abs(y))
        summed = np.where(sd == 0, 0.0, sd / np.abs(sy))
        r = np.nan_to_num(np.maximum(r, summed), nan=1.0, posinf=1.0)
    r = np.minimum(r, 6e4, out=r) if r.dtype == np.float32 else np.minimum(r, 6e4).astype(np.float32)
    if hist is not None:
        np.maximum(r, hist[0][lo:hi], out=r)
        if store:
            hist[0][lo:hi] = r
    return r


class _UpdateCheck:
    """The noise-aware judgement of one parameter's update, fed block by block (see ``_Differ._param_pass``)."""

    def __init__(self, d: "_Differ", s: int, pp: Any, upd: tuple, hist: Any, store: bool) -> None:
        import numpy as np

        self.n = upd[3].size
        self.large = self.n > _STORE_LIMIT
        self.dt = upd[1].dtype if upd[1].dtype.kind == "f" else np.dtype(np.float64)
        self.w = work_dtype(*upd)  # float32 for float32 parameters: a small update's difference is exact
        self.dec_pd = d._decoupled_decay("paddle", pp.paddle_name)
        self.dec_pt = d._decoupled_decay("torch", pp.torch_name)
        self.bias_rel = 8 * float(np.finfo(self.dt).eps) + d._bias_correction_rel(s)
        self.u_scale = self.update_max = 0.0
        self.s_dp = self.s_pp = self.s_dd = 0.0
        self.kept: list[tuple] = []
        self.grad_rel_max: float | None = None
        self.unexplained, self.du_max, self.worst, self.allowed_at_worst = 0, 0.0, -math.inf, 0.0
        self.worst_at = 0

    def note_rel(self, r: Any) -> None:
        top = float(r.max()) if r.size else 0.0
        self.grad_rel_max = top if self.grad_rel_max is None else max(self.grad_rel_max, top)

    def _parts(self, a0: Any, a1: Any, b0: Any, b1: Any) -> tuple:
        import numpy as np

        w = self.w
        a0, a1, b0, b1 = (x.astype(w, copy=False) for x in (a0, a1, b0, b1))
        u_pd, u_pt = a1 - a0, b1 - b0
        # the gradient-driven part of each update (decoupled weight decay removed): decay may cancel
        # it in the net update, and it is what gradient differences move
        au_pt = np.abs(u_pt)
        u_max = np.abs(u_pd)
        np.maximum(u_max, au_pt, out=u_max)
        for dec, u, p in ((self.dec_pd, u_pd, a0), (self.dec_pt, u_pt, b0)):
            if dec:
                gpart = u + dec * p
                np.maximum(u_max, np.abs(gpart, out=gpart), out=u_max)
        dd = np.subtract(u_pd, u_pt, out=u_pd)
        return a0, a1, b0, b1, u_max, au_pt, dd

    def _terms(self, a0: Any, a1: Any, b0: Any, b1: Any, u_max: Any, dd: Any) -> tuple:
        import numpy as np

        du = np.abs(dd)
        t01 = np.abs(a0 - b0)
        t01 *= 0.1
        big = np.abs(a1)
        np.maximum(big, np.abs(b1), out=big)
        np.maximum(big, np.abs(b0), out=big)
        rounding = _spacing(big.astype(self.dt, copy=False)).astype(self.w, copy=False)
        rounding *= 4
        rounding += self.bias_rel * u_max
        return du, t01, rounding

    def pass1(self, at: Any, a0: Any, a1: Any, b0: Any, b1: Any, r: Any) -> None:
        import numpy as np

        a0, a1, b0, b1, u_max, au_pt, dd = self._parts(a0, a1, b0, b1)
        self.u_scale = max(self.u_scale, float(u_max.max()))
        self.update_max = max(self.update_max, float(au_pt.max()))
        self.s_dp += float(np.dot(dd, b0))
        self.s_pp += float(np.dot(b0, b0))
        self.s_dd += float(np.dot(dd, dd))
        if not self.large:
            self.kept.append((at, r) + self._terms(a0, a1, b0, b1, u_max, dd))

    def pass2(self, at: Any, a0: Any, a1: Any, b0: Any, b1: Any, r: Any) -> None:
        a0, a1, b0, b1, u_max, _au, dd = self._parts(a0, a1, b0, b1)
        self._judge(at, r, *self._terms(a0, a1, b0, b1, u_max, dd))

    def _judge(self, at: Any, r: Any, du: Any, t01: Any, rounding: Any) -> None:
        import numpy as np

        ku = _K * self.u_scale
        if r is None:
            allowed = t01 + ku
        else:
            allowed = np.minimum(r, 1.0).astype(self.w, copy=False)
            allowed *= ku
            allowed += t01
        allowed += rounding
        self.unexplained += int(np.count_nonzero(du > allowed))
        self.du_max = max(self.du_max, float(du.max()))
        excess = np.subtract(du, allowed, out=t01)
        k = int(np.argmax(excess))
        v = float(excess[k])
        if v > self.worst or (v == self.worst and _at(at, k) < self.worst_at):  # ties: first in C order
            self.worst, self.worst_at, self.allowed_at_worst = v, _at(at, k), float(allowed[k])

    def verdict(self) -> dict[str, Any]:
        for at, r, du, t01, rounding in self.kept:
            self._judge(at, r, du, t01, rounding)
        self.kept = []
        decay_fit = None
        if self.s_pp > 0 and self.s_dd > 0:
            c = self.s_dp / self.s_pp
            if max(self.s_dd - self.s_dp * self.s_dp / self.s_pp, 0.0) <= (0.05 ** 2) * self.s_dd:
                decay_fit = c
        return {
            "unexplained": self.unexplained,
            "update_max": self.update_max,
            "update_diff_max": self.du_max,
            "allowed_at_worst": self.allowed_at_worst,
            "grad_rel_max": self.grad_rel_max or 0.0,  # capped at 6e4
            "decay_fit": decay_fit,
        }


def _spacing(x: Any) -> Any:
    """``numpy.spacing`` of non-negative ``x``; for float32 from the exponent bits (several times faster)."""
    import numpy as np

    if x.dtype != np.float32:
        return np.spacing(x)
    bits = x.view(np.int32) & np.int32(0x7F800000)
    sp = bits.view(np.float32)
    sp *= np.float32(2.0 ** -23)
    np.maximum(sp, np.float32(2.0 ** -149), out=sp)  # zero and subnormals: the smallest subnormal
    return sp



# --------------------------------------------------------------------------- helpers
def _valid_pair(pp: Any, view: _PairView) -> bool:
    """Whether ``pp.pair`` indexes a layer pair (-1: paired by a parameter-level name rule)."""
    return isinstance(pp.pair, int) and 0 <= pp.pair < len(view.pairs)


def _is_ancestor(container: str, path: str) -> bool:
    """Whether ``container`` is a proper ancestor of ``path`` ("" is the root)."""
    if container == path:
        return False
    return container == "" or path.startswith(container + ".")


def _common_prefix(a: str, b: str) -> str:
    """The deepest common dotted prefix of two paths ("" if none)."""
    common = []
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        common.append(x)
    return ".".join(common)


def _common_parent(a: str, b: str) -> str:
    pa, pb = a.split("."), b.split(".")
    common = []
    for x, y in zip(pa[:-1], pb[:-1]):
        if x != y:
            break
        common.append(x)
    return ".".join(common)


def same_value(a: Any, b: Any) -> bool:
    """Configuration equality: numbers within 1e-6 relative (float32-stored values), sequences
    elementwise, everything else ``==``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-15)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


_OPT_KEYS = {
    "type": ("class", "type", "name"),
    "lr": ("lr", "learning_rate"),
    "eps": ("eps", "epsilon"),
    "weight_decay": ("weight_decay", "coeff", "decay"),
    "momentum": ("momentum",),
    "nesterov": ("nesterov", "use_nesterov"),
    "amsgrad": ("amsgrad",),
    "decay": ("decay",),
    "decayed": ("decayed", "decayed_params", "decay_params", "decayed_parameters"),
}


def normalise_optimizer(info: dict[str, Any]) -> dict[str, Any]:
    """The optimizer hyper-parameters under one set of names: ``type``, ``lr``, ``eps``, ``beta1``,
    ``beta2``, ``weight_decay``, ``decay`` (``"decoupled"`` / ``"l2"``), ``momentum``, ``nesterov``,
    ``amsgrad``, ``decayed`` (the full names
    of the parameters weight decay applies to). Accepts torch's and Paddle's names (``learning_rate``,
    ``epsilon``, ``betas``, ``coeff``, ...)."""
    if not info:
        return {}
    out: dict[str, Any] = {}
    for key, names in _OPT_KEYS.items():
        for n in names:
            if n in info and info[n] is not None:
                out[key] = info[n]
                break
    if "betas" in info and isinstance(info["betas"], (list, tuple)) and len(info["betas"]) == 2:
        out["beta1"], out["beta2"] = info["betas"]
    for k in ("beta1", "beta2"):
        if k in info:
            out[k] = info[k]
    if "decayed" in out:
        out["decayed"] = list(out["decayed"])
    return out
