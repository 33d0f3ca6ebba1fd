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
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import AlignError
from ._metrics import Metrics, check_tolerance, missing_metrics, reduce_broadcast, tensor_metrics, work_dtype
from ._report import AlignResult, Divergence, Finding, Row

if TYPE_CHECKING:
    import numpy as np

    from ._trace import ForwardEvent, Trace

__all__ = ["diff_traces", "HintContext", "current_context", "to_paddle_layout"]

_IDENTITY = frozenset({"copy", "rename", "", "same", "identity"})
_K = 4.0  # margin on the update's sensitivity to gradient differences
_CHUNK = 1 << 20  # elements per chunk of the elementwise parameter checks


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


def to_paddle_layout(param_pair: Any, array: "np.ndarray", rule: Any = None) -> "np.ndarray | None":
    """The torch ``array`` of ``param_pair`` in the Paddle layout, or None if the transform is unknown.

    ``copy`` / ``rename``: as is; ``transpose``: axes reversed (a Linear weight); any other
    transform: the pair's own ``to_paddle`` callable if it has one, else the ``to_paddle`` of the
    rules-table ``rule``'s ParamRule for this Paddle local name.
    """
    import numpy as np

    how = getattr(param_pair, "how", "copy") or "copy"
    if how in _IDENTITY:
        return array
    if how == "transpose":
        return np.transpose(array)  # a view: no copy of every Linear weight and gradient
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
        self.rel_hist: dict[str, "np.ndarray"] = {}
        self.grad_acc: dict[str, tuple] = {}
        self.params_differ_from: int | None = None  # first step after which parameters differ
        self.param_pairs = [pp for pp in view.params]
        self.opt_pd, self.opt_pt = normalise_optimizer(pd.optimizer), normalise_optimizer(pt.optimizer)
        for info in (self.opt_pd, self.opt_pt):
            info["decayed_set"] = frozenset(info.get("decayed") or ())

    def layout(self, pp: Any, array: Any) -> Any:
        rule = _rule_of(self.view.pairs[pp.pair]) if _valid_pair(pp, self.view) else None
        return to_paddle_layout(pp, array, rule)

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

    # ------------------------------------------------------------------ forward
    def forward(self, s: int, follows: bool) -> None:
        ps, ts = self.pd.steps[s], self.pt.steps[s]
        pt_events = {(e.path, e.call): e for e in ts.forward}
        rows: list[tuple[Row, list[int], bool]] = []
        order = 0
        for ev in ps.forward:
            pair = self.view.by_paddle.get(ev.path)
            if pair is None:
                continue
            te = pt_events.get((pair.torch_path, ev.call))
            row = Row("forward", s, order, ev.path, pair.torch_path, pair.paddle_type, ev.call)
            order += 1
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
            row = Row("forward", s, order, "", "", "(model output)", 0)
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
        pt_grads = {(g.path, g.call): g for g in ts.grads}
        rows = []
        order = 0
        for g in ps.grads:
            pair = self.view.by_paddle.get(g.path)
            if pair is None:
                continue
            tg = pt_grads.get((pair.torch_path, g.call))
            row = Row("backward", s, order, g.path, pair.torch_path, pair.paddle_type, g.call)
            order += 1
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
                m = self.metrics(a, bt)
                if a.shape == bt.shape:
                    self._track_grads(pp.paddle_name, a, bt)
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
        pd_before = self.pd.params_before if s == 0 else self.pd.steps[s - 1].params_after
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
            m = self.metrics(a, b)
            row.metrics, row.tensors = m, [(pp.paddle_name, m)]
            a0, b0 = pd_before.get(pp.paddle_name), pt_before.get(pp.torch_name)
            buffer = ps.param_grads.get(pp.paddle_name) is None and ts.param_grads.get(pp.torch_name) is None
            if buffer:
                # a buffer (BatchNorm running statistics): updated by the forward, not by the optimizer
                # from a gradient, so there is no gradient noise to magnify: judged by tolerance alone
                explained = m.ok
                if not m.ok:
                    m.extra.update(update_diff_max=m.max_abs, allowed_at_worst=0.0, buffer=True,
                                   update_max=float(np.abs(np.asarray(b, np.float64) -
                                                           np.asarray(self.layout(pp, b0) if b0 is not None else b,
                                                                      np.float64)).max()))
            elif a0 is not None and b0 is not None and m.problem is None:
                b0 = self.layout(pp, b0)
                verdict = self._update_check(pp, a0, a, b0, b, s)
                m.extra.update(verdict)
                explained = verdict["unexplained"] == 0
            else:
                explained = m.ok
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

    def _track_grads(self, name: str, a: Any, b: Any) -> None:
        """Update the per-element history of relative gradient differences of parameter ``name``:
        the largest of each step's ``|g_pd - g_pt| / |g_pt|`` and of ``sum |g_pd - g_pt| / |sum g_pt|``
        (momentum-style optimizers add the gradients up; where the sum cancels it is sensitive).
        Kept flat in float32, computed in chunks (no float64 copy of a whole embedding matrix)."""
        import numpy as np

        fa, fb = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
        w = work_dtype(fa, fb)
        hist = self.grad_acc.get(name)
        if hist is None or hist[0].size != fa.size:
            # the ratio in float16 (it is used clipped at 1), the sums in float32
            hist = (np.zeros(fa.size, np.float16), np.zeros(fa.size, np.float32), np.zeros(fa.size, np.float32))
            self.grad_acc[name] = hist
        rmax, sdiff, sg = hist
        for lo in range(0, fa.size, _CHUNK):
            hi = lo + _CHUNK
            x, y = fa[lo:hi].astype(w, copy=False), fb[lo:hi].astype(w, copy=False)
            d = np.abs(x - y)
            sd = sdiff[lo:hi] + d
            sy = sg[lo:hi] + y
            sdiff[lo:hi], sg[lo:hi] = sd, sy
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(d == 0, 0.0, d / np.abs(y))
                summed = np.where(sd == 0, 0.0, sd / np.abs(sy))
            r = np.nan_to_num(np.maximum(r, summed), nan=1.0, posinf=1.0)
            rmax[lo:hi] = np.maximum(rmax[lo:hi], np.minimum(r, 6e4))
        self.rel_hist[name] = rmax

    def _update_check(self, pp: Any, a0: Any, a1: Any, b0: Any, b1: Any, s: int = 0) -> dict[str, Any]:
        """How far the two updates of one parameter differ beyond what rounding explains (chunked)."""
        import numpy as np

        name = pp.paddle_name
        arrays = [np.asarray(x) for x in (a0, a1, b0, b1)]
        dt = arrays[1].dtype if arrays[1].dtype.kind == "f" else np.dtype(np.float64)
        flat = [x.reshape(-1) for x in arrays]
        w = work_dtype(*arrays)  # float32 for float32 parameters: a small update's difference is exact
        n = flat[1].size
        rel = self.rel_hist.get(name)
        if rel is not None and rel.size != n:
            rel = None
        dec_pd, dec_pt = self._decoupled_decay("paddle", name), self._decoupled_decay("torch", pp.torch_name)
        bias_rel = 8 * float(np.finfo(dt).eps) + self._bias_correction_rel(s)

        def parts(lo: int) -> tuple:
            f = [x[lo:lo + _CHUNK].astype(w, copy=False) for x in flat]
            u_pd, u_pt = f[1] - f[0], f[3] - f[2]
            # the gradient-driven part of each update (decoupled weight decay removed): decay may cancel
            # it in the net update, and it is what gradient differences move
            g_pd, g_pt = u_pd + dec_pd * f[0], u_pt + dec_pt * f[2]
            u_max = np.maximum(np.maximum(np.abs(u_pd), np.abs(u_pt)), np.maximum(np.abs(g_pd), np.abs(g_pt)))
            return f, u_pd, u_pt, u_max

        # pass 1: the tensor's update size (the sensitivity of an element's update to gradient differences
        # scales with it: where Adam's first moment cancels, the update is tiny but its error is not),
        # and the sums for the weight-decay fit
        u_scale = update_max = 0.0
        s_dp = s_pp = s_dd = 0.0
        for lo in range(0, n, _CHUNK):
            f, u_pd, u_pt, u_max = parts(lo)
            u_scale = max(u_scale, float(u_max.max()))
            update_max = max(update_max, float(np.abs(u_pt).max()))
            dd = u_pd - u_pt
            s_dp += float(np.dot(dd.astype(np.float64), f[2].astype(np.float64)))
            s_pp += float(np.dot(f[2].astype(np.float64), f[2].astype(np.float64)))
            s_dd += float(np.dot(dd.astype(np.float64), dd.astype(np.float64)))
        # pass 2: elementwise judgement
        unexplained, du_max, worst, allowed_at_worst = 0, 0.0, -math.inf, 0.0
        for lo in range(0, n, _CHUNK):
            f, u_pd, u_pt, u_max = parts(lo)
            du = np.abs(u_pd - u_pt)
            d_before = np.abs(f[0] - f[2])
            r = np.minimum(1.0, rel[lo:lo + _CHUNK]).astype(w) if rel is not None else 1.0
            big = np.maximum(np.maximum(np.abs(f[1]), np.abs(f[3])), np.abs(f[2])).astype(dt)
            rounding = 4 * np.spacing(big).astype(w) + bias_rel * u_max
            allowed = _K * u_scale * r + 0.1 * d_before + rounding
            unexplained += int(np.count_nonzero(du > allowed))
            du_max = max(du_max, float(du.max()))
            k = int(np.argmax(du - allowed))
            if float(du[k] - allowed[k]) > worst:
                worst, allowed_at_worst = float(du[k] - allowed[k]), float(allowed[k])
        decay_fit = None
        if s_pp > 0 and s_dd > 0:
            c = s_dp / s_pp
            if max(s_dd - s_dp * s_dp / s_pp, 0.0) <= (0.05 ** 2) * s_dd:
                decay_fit = c
        return {
            "unexplained": unexplained,
            "update_max": update_max,
            "update_diff_max": du_max,
            "allowed_at_worst": allowed_at_worst,
            "grad_rel_max": float(rel.max()) if rel is not None and rel.size else 0.0,  # capped at 6e4
            "decay_fit": decay_fit,
        }

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
