"""Hints for recognisable causes of a divergence (attached to findings and divergences).

Each hint is a sentence a porter can act on. Recognised:

- a **configuration mismatch** of the pair (or of a pair inside the diverging module): epsilon,
  momentum (Paddle's BatchNorm momentum is ``1 - torch's``), GELU ``approximate``, ``padding_idx``,
  bias, pooling ``exclusive`` / ``count_include_pad``, ``align_corners``, dropout ``p``, activation;
- a **Linear whose weights equal the other side's untransposed** (torch ``[out, in]``, Paddle ``[in, out]``);
- **relative errors at float32 rounding level** in matmul-heavy modules: rule precision in or out
  with ``paddlefix.set_float32_matmul_precision("float64")`` (or: it was on, so it is not rounding);
- **train-mode dropout** without ``align.same_randomness``;
- **BatchNorm in train mode** (batch statistics; Paddle's inverted momentum);
- **-100 labels** with the ``cross_entropy`` patch off (Paddle 3.x's mean counts ignored labels);
- **optimizer differences**: hyper-parameters, the set of decayed parameters (Paddle's
  ``apply_decay_param_fun`` receives ``param.name``, so a Hugging Face style name filter decays
  everything), an update difference proportional to the parameter (weight decay on one side);
- parameters after a step that differ by **rounding noise amplified by the optimizer** (a note,
  not a divergence).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._diff import _Differ
    from ._report import AlignResult, Divergence, Finding

__all__ = ["attach", "config_hint", "MATMUL_TYPES"]

#: Layer types whose outputs are dominated by float32 matrix products.
MATMUL_TYPES = ("Linear", "Conv1D", "Conv2D", "Conv3D", "Conv1d", "Conv2d", "Conv3d", "Bilinear",
                "MultiHeadAttention", "MultiheadAttention", "LSTM", "GRU", "SimpleRNN", "RNN",
                "Conv1DTranspose", "Conv2DTranspose", "ConvTranspose1d", "ConvTranspose2d")
_ROUNDING_LEVEL = 1e-4  # max |diff| / max |ref| below this, with cosine ~1: float32 rounding, magnified

_CONFIG_HINTS = {
    "eps": "the normalisation epsilon differs (Paddle's LayerNorm / BatchNorm default 1e-5; Hugging Face "
           "BERT uses layer_norm_eps=1e-12): pass the torch value as epsilon",
    "epsilon": "the normalisation epsilon differs: pass the torch value as epsilon",
    "momentum": "Paddle's BatchNorm momentum is 1 - torch's (torch momentum=0.1 is Paddle momentum=0.9)",
    "approximate": "GELU approximation differs: torch approximate='tanh' is Paddle approximate=True, "
                   "torch 'none' is Paddle False (the tanh approximation differs by up to ~1e-3)",
    "padding_idx": "padding_idx differs: the padding row's gradient is zeroed on one side only",
    "bias": "a bias is present on one side only (Paddle: bias_attr=False removes it)",
    "exclusive": "average pooling: Paddle exclusive=True is torch count_include_pad=False",
    "count_include_pad": "average pooling: torch count_include_pad=True is Paddle exclusive=False",
    "align_corners": "align_corners differs (Paddle's interpolate / grid_sample defaults differ from torch's)",
    "p": "dropout probability differs: equal in eval mode, different in training",
    "activation": "the activation function differs",
}


def config_hint(label: str, paddle_value: Any, torch_value: Any) -> str:
    """The hint for a configuration difference ``label`` (values in one convention)."""
    key = label.split(" ")[0].split(".")[-1]  # "momentum (torch convention)" -> "momentum"
    base = _CONFIG_HINTS.get(label, _CONFIG_HINTS.get(key, f"{label} differs"))
    if key == "momentum":
        try:
            if abs(float(paddle_value) + float(torch_value) - 1.0) < 1e-6:
                base += "; these two add up to 1: the value was copied without converting"
        except (TypeError, ValueError):
            pass
    return base


def attach(result: "AlignResult", d: "_Differ") -> None:
    """Fill the ``hint`` of every finding and divergence, and the notes."""
    for f in result.findings:
        if not f.hint:
            f.hint = _finding_hint(f)
    for dv in result.divergences:
        dv.hint = " ".join(_divergence_hints(dv, result, d))
    noise = [r for r in result.rows if r.status == "noise"]
    if noise:
        worst = max(noise, key=lambda r: r.metrics.max_abs if r.metrics else 0.0)
        m = worst.metrics
        ex = m.extra if m is not None else {}
        steps = sorted({r.step for r in noise})
        result.notes.append(
            f"{len(noise)} parameter value(s) after step(s) {', '.join(map(str, steps))} are out of tolerance "
            f"(up to {m.max_abs if m else 0:.3g}, at {worst.paddle}) but explained: their gradients agree within "
            f"tolerance, yet where a gradient is rounding-sized its relative difference reaches "
            f"{ex.get('grad_rel_max', 0):.3g}, and the optimizer magnifies that (update size up to "
            f"{ex.get('update_max', 0):.3g}; Adam-style optimizers turn a gradient near eps into a step of up to "
            "lr). Not a divergence; the next steps' differences are marked 'follows'."
        )


def _finding_hint(f: "Finding") -> str:
    if f.kind == "config":
        return config_hint(f.label, f.paddle_value, f.torch_value)
    if f.kind == "optimizer":
        if f.label == "decayed parameters":
            return _DECAY_NAMES
        if f.label == "eps":
            return "optimizer epsilon differs (torch Adam/AdamW eps=1e-8 is Paddle epsilon=1e-8; Paddle's default " \
                   "is also 1e-8, check what the port passes)"
        if f.label == "decay":
            return "one optimizer decays the weights directly (decoupled, AdamW) and the other adds an L2 " \
                   "penalty to the gradient (Adam with weight_decay / regularization): not the same update"
        if f.label == "weight_decay":
            return "weight decay differs (torch AdamW default 0.01; Paddle AdamW default 0.01, Adam: none)"
        return f"optimizer {f.label} differs"
    return ""


_DECAY_NAMES = (
    "the decayed parameter sets differ: Paddle's apply_decay_param_fun receives param.name "
    "(e.g. 'linear_3.w_0'), not the structured name, so a Hugging Face style filter "
    "(not any(nd in n for nd in ['bias', 'LayerNorm.weight'])) matches nothing and decays everything; "
    "build the set from model.named_parameters() and test p.name in it"
)


def _related_findings(dv: "Divergence", result: "AlignResult") -> list["Finding"]:
    path = dv.paddle_module
    out = []
    for f in result.findings:
        if f.kind != "config":
            continue
        inside = path == "" or f.paddle == path or f.paddle.startswith(path + ".")
        if inside:
            out.append(f)
    return out


def _subtree_types(path: str, d: "_Differ") -> list[str]:
    return [p.paddle_type for p in d.view.pairs
            if p.paddle_path == path or (path == "" or p.paddle_path.startswith(path + "."))]


def _untransposed_linears(path: str, d: "_Differ") -> list[str]:
    import numpy as np

    hits = []
    for pp in d.param_pairs:
        if getattr(pp, "how", None) != "transpose":
            continue
        pair = d.view.pairs[pp.pair] if isinstance(pp.pair, int) and 0 <= pp.pair < len(d.view.pairs) else None
        if pair is None or not (pair.paddle_path == path or path == "" or pair.paddle_path.startswith(path + ".")):
            continue
        a, b = d.pd.params_before.get(pp.paddle_name), d.pt.params_before.get(pp.torch_name)
        if a is None or b is None or a.ndim != 2 or a.shape != b.shape:
            continue
        if np.array_equal(a, b) and not np.array_equal(a, b.T):
            hits.append(pair.paddle_path)
    return hits


def _elementwise_candidates() -> list[tuple[str, Any]]:
    import math

    import numpy as np

    erf = np.frompyfunc(math.erf, 1, 1)

    def gelu(x: Any) -> Any:
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))

    def gelu_tanh(x: Any) -> Any:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def sigmoid(x: Any) -> Any:
        return 1.0 / (1.0 + np.exp(-x))

    return [
        ("identity", lambda x: x),
        ("gelu (exact, erf)", gelu),
        ("gelu (tanh approximation)", gelu_tanh),
        ("relu", lambda x: np.maximum(x, 0.0)),
        ("silu / swish", lambda x: x * sigmoid(x)),
        ("quick_gelu (x * sigmoid(1.702 x))", lambda x: x * sigmoid(1.702 * x)),
        ("tanh", np.tanh),
        ("sigmoid", sigmoid),
        ("leaky_relu (0.01)", lambda x: np.where(x > 0, x, 0.01 * x)),
    ]


def _which_function(x: Any, y: Any) -> str | None:
    """The name of the elementwise function f with y == f(x) (float32 rounding allowed), or None."""
    import numpy as np

    x64 = np.asarray(x, np.float64).ravel()[:65536]
    y64 = np.asarray(y, np.float64).ravel()[:65536]
    scale = float(np.abs(y64).max()) if y64.size else 0.0
    for name, f in _elementwise_candidates():
        with np.errstate(all="ignore"):
            fx = np.asarray(f(x64), np.float64)
        if np.all(np.abs(fx - y64) <= 1e-6 * scale + 1e-6 * np.abs(y64) + 1e-7):
            return name
    return None


def between_hints(dv: "Divergence", d: "_Differ") -> list[str]:
    """For a divergence between two paired modules: which elementwise function each side applies
    between the previous module's output and this module's input (when one of the usual activations
    fits), and which torch modules that are not paired ran in between."""
    out: list[str] = []
    prev = dv.candidates[0] if dv.candidates else None
    j = int(dv.what[len("input["):-1]) if dv.what.startswith("input[") else 0
    if prev is not None and dv.step < len(d.pd.steps):
        pd_f, pt_f = d.pd.steps[dv.step].forward, d.pt.steps[dv.step].forward
        pd_row = next((i for i, e in enumerate(pd_f) if e.path == dv.paddle_module), None)
        pt_row = next((i for i, e in enumerate(pt_f) if e.path == dv.torch_module), None)
        pd_prev = next((e for e in reversed(pd_f[:pd_row or 0]) if e.path == prev[0]), None)
        pt_prev = next((e for e in reversed(pt_f[:pt_row or 0]) if e.path == prev[1]), None)
        if pd_row is not None and pt_row is not None and pd_prev is not None and pt_prev is not None:
            x_pd, x_pt = pd_prev.outputs[0] if pd_prev.outputs else None, pt_prev.outputs[0] if pt_prev.outputs else None
            y_pd = pd_f[pd_row].inputs[j] if j < len(pd_f[pd_row].inputs) else None
            y_pt = pt_f[pt_row].inputs[j] if j < len(pt_f[pt_row].inputs) else None
            if x_pd is not None and all(v is not None and getattr(v, "shape", None) == getattr(x_pd, "shape", 0)
                                        for v in (x_pt, y_pd, y_pt)) and x_pd.dtype.kind == "f":
                f_pd, f_pt = _which_function(x_pd, y_pd), _which_function(x_pt, y_pt)
                if f_pd is not None and f_pt is not None and f_pd != f_pt:
                    out.append(f"Between the output of {prev[0]} and the input of {dv.paddle_module}, Paddle "
                               f"applies {f_pd} and torch {f_pt} (recognised from the values).")
                    if "gelu" in f_pd and "gelu" in f_pt:
                        out.append("GELU approximation differs: torch approximate='tanh' is Paddle "
                                   "approximate=True (F.gelu(x, approximate=True)), torch 'none' is Paddle False.")
            unpaired = [(e.path, t) for e in pt_f[pt_f.index(pt_prev) + 1:pt_row]
                        if d.view.by_torch.get(e.path) is None
                        for t in [next((m.type for m in d.pt.modules if m.path == e.path), "?")]] \
                if pt_prev is not None and pt_row is not None else []
            if unpaired:
                names = ", ".join(f"{p} ({t})" for p, t in unpaired[:3])
                out.append(f"On the torch side, module(s) with no Paddle counterpart run there: {names}; on the "
                           "Paddle side it is code in the container's forward.")
    out.append("Look at the container's forward between the two modules: a functional call "
               "(F.gelu(approximate=...), a scale, a transpose, a mask) that the pairing cannot hook.")
    return out


def _divergence_hints(dv: "Divergence", result: "AlignResult", d: "_Differ") -> list[str]:
    ctx = d.ctx
    hints: list[str] = []
    module = dv.paddle_module if dv.phase in ("forward", "backward") else ""
    for f in _related_findings(dv, result) if dv.phase in ("forward", "backward") else []:
        hints.append(f"Configuration differs at {f.paddle or '(model)'}: {f.label} paddle {f.paddle_value!r} vs "
                     f"torch {f.torch_value!r} ({config_hint(f.label, f.paddle_value, f.torch_value)}).")
    if dv.phase in ("forward", "backward"):
        lin = _untransposed_linears(module, d)
        if lin:
            hints.append(f"The weight of {', '.join(lin[:3])} equals the torch weight untransposed: torch Linear "
                         "stores [out, in], Paddle [in, out]; copy the weights with align.transfer().")
        types = _subtree_types(module, d) if dv.kind != "between" else []
        if ctx.train and not ctx.shared_randomness and any("ropout" in t for t in types + [dv.paddle_module]):
            hints.append("Train-mode dropout draws different masks in the two frameworks: compare under "
                         "align.same_randomness(), or with train=False.")
        if ctx.train and any("BatchNorm" in t or "SyncBatchNorm" in t for t in types):
            hints.append("BatchNorm in train mode normalises with the batch statistics and updates the running "
                         "ones with momentum; Paddle's momentum is 1 - torch's (torch 0.1 is Paddle 0.9).")
        m = dv.metrics
        matmul = any(t in MATMUL_TYPES or "ttention" in t for t in types)
        if (m is not None and m.problem is None and m.dtype in ("float32", "complex64") and
                0 < m.scale_rel < _ROUNDING_LEVEL and (m.cosine is None or m.cosine > 0.99999) and matmul):
            if ctx.matmul_precision in ("float64",):
                hints.append(f"The relative error ({m.scale_rel:.2g}) is near float32 rounding; matmul_precision "
                             f"was {ctx.matmul_precision!r} during this run, so Paddle's matmuls were exact to "
                             "float32 and this is torch's rounding or the module itself: if it stays at this "
                             "level, widen the tolerance; if it grows along the layers, it is not rounding.")
            else:
                hints.append(f"The relative error ({m.scale_rel:.2g}) is at float32 rounding level in a matmul-heavy "
                             "module: rule precision in or out with "
                             "paddlefix.set_float32_matmul_precision('float64') on both runs, or widen tolerance.")
        if dv.kind == "between":
            hints.extend(between_hints(dv, d))
        if dv.phase == "backward":
            if dv.kind == "grad_flow" and "backward of the loss" in dv.detail:
                hints.append(_loss_hint(ctx, "The gradient w.r.t. the model output differs: the loss's backward "
                                             "differs (reduction, ignore_index, label smoothing)."))
            else:
                hints.append("A detach() / stop_gradient=True, an in-place op or a custom backward in the "
                             "module's forward changes the gradient while its output stays equal.")
    elif dv.phase == "loss":
        outputs_agree = not any(r.status == "fail" and r.phase == "forward" and r.step == dv.step
                                for r in result.rows)
        lead = ("The model outputs agree and the losses do not: the loss functions differ."
                if outputs_agree else "The loss differs because the forward already does.")
        hints.append(_loss_hint(ctx, lead) if outputs_agree else lead)
    elif dv.phase == "param_grad":
        owner = dv.paddle_module.rpartition(".")[0]
        for f in result.findings:
            if f.kind == "config" and f.paddle == owner:
                hints.append(f"Configuration differs at {owner}: {f.label} paddle {f.paddle_value!r} vs torch "
                             f"{f.torch_value!r} ({config_hint(f.label, f.paddle_value, f.torch_value)}).")
        lin = _untransposed_linears("", d)
        hints.append("The output gradients agree but this parameter's gradient does not: look at how it "
                     "is used (a shared or tied weight, a stop_gradient / requires_grad setting, a custom op).")
        if lin:
            hints.append(f"Linear weight(s) equal to torch's untransposed: {', '.join(lin[:3])}.")
    elif dv.phase == "step" and dv.kind == "buffer":
        owner = dv.paddle_module.rpartition(".")[0]
        config = [f for f in result.findings if f.kind == "config" and f.paddle == owner]
        for f in config:
            hints.append(f"Configuration differs at {owner or '(model)'}: {f.label} paddle {f.paddle_value!r} vs "
                         f"torch {f.torch_value!r} ({config_hint(f.label, f.paddle_value, f.torch_value)}).")
        local = dv.paddle_module.rpartition(".")[2]
        if not any("momentum" in f.label for f in config) and local in ("_variance", "running_var"):
            hints.append("Paddle's BatchNorm updates the running variance with the biased batch variance "
                         "(divided by N), torch with the unbiased one (N - 1): the two differ by N / (N - 1) "
                         "on the batch term; eval-mode outputs after training differ accordingly.")
        elif not config:
            hints.append("The forward updates this buffer differently on the two sides (running statistics: "
                         "momentum convention, biased vs unbiased variance).")
    elif dv.phase == "step":
        opt = [f for f in result.findings if f.kind == "optimizer"]
        for f in opt:
            hints.append(f"Optimizer {f.label}: paddle {f.paddle_value!r} vs torch {f.torch_value!r}"
                         f" ({_finding_hint(f)}).")
        c = dv.metrics.extra.get("decay_fit") if dv.metrics is not None else None
        if c is not None:
            hints.append(f"The update difference is proportional to the parameter (factor {c:.3g}): weight decay "
                         "is applied on one side only or with another coefficient (lr x weight_decay)."
                         + ("" if any(f.label == "decayed parameters" for f in opt) else " " + _DECAY_NAMES + "."))
        if not opt and c is None:
            hints.append("The updates differ beyond what the gradient differences explain: compare the optimizers' "
                         "epsilon, betas, weight decay and learning-rate schedule.")
    return hints


def _loss_hint(ctx: Any, lead: str) -> str:
    if ctx.cross_entropy_patched:
        return lead
    if ctx.ignore_index_labels is False:
        return lead
    cond = "The labels hold -100" if ctx.ignore_index_labels else "If the labels hold -100"
    return (lead + f" {cond}: Paddle 3.x cross_entropy(reduction='mean') divides by every label, ignored ones "
            "included (torch divides by the labels kept); apply paddlefix's cross_entropy patch.")
