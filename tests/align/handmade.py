"""Traces made by hand in NumPy: a tiny model run "in both frameworks", with planted bugs.

Model (paddle paths / torch paths)::

    ""      Net            x -> fc0 -> blk -> head -> out ; loss = mean(out ** 2)
    fc0     Linear         h0 = x @ W0 + b0
    blk     Block          y  = h0 + fc2(act(fc1(h0)))      (torch path: "block")
    blk.fc1 Linear
    blk.act Tanh | GELU    (a module; or a functional call inside blk when functional_act=True)
    blk.fc2 Linear
    head    Linear

Paddle Linear weights are [in, out], torch's [out, in]; the torch side is the reference. Each
bug is planted on the Paddle side only. Everything is computed in float64 and stored as float32,
so the "correct" runs are bit-identical unless ``noise`` adds float32-rounding-level noise.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from paddlefix.align._pairing import Pair, ParamPair
from paddlefix.align._trace import ForwardEvent, GradEvent, ModuleInfo, StepTrace, Trace

D_IN, D, D_OUT, N = 6, 8, 4, 5

PAIRS = [
    # paddle path, torch path, paddle type, torch type, rule
    ("", "", "Net", "Net", None),
    ("fc0", "fc0", "Linear", "Linear", "linear"),
    ("blk", "block", "Block", "Block", None),
    ("blk.fc1", "block.fc1", "Linear", "Linear", "linear"),
    ("blk.act", "block.act", "Tanh", "Tanh", None),
    ("blk.fc2", "block.fc2", "Linear", "Linear", "linear"),
    ("head", "head", "Linear", "Linear", "linear"),
]
LINEARS = ["fc0", "blk.fc1", "blk.fc2", "head"]


def pairing(functional_act: bool = False) -> Any:
    pairs = [Pair(*p, how="name") for p in PAIRS if not (functional_act and p[0] == "blk.act")]
    params = []
    for i, p in enumerate(pairs):
        if p.rule == "linear":
            params.append(ParamPair(f"{p.paddle_path}.weight", f"{p.torch_path}.weight", "transpose", i))
            params.append(ParamPair(f"{p.paddle_path}.bias", f"{p.torch_path}.bias", "copy", i))
    by_pd = {p.paddle_path: p for p in pairs}
    by_pt = {p.torch_path: p for p in pairs}
    return SimpleNamespace(pairs=pairs, params=params, unpaired_paddle=[], unpaired_torch=[],
                           for_paddle=by_pd.get, for_torch=by_pt.get)


def init_params(seed: int = 0) -> dict[str, np.ndarray]:
    """Paddle-layout float64 parameters, keyed by paddle path."""
    rng = np.random.default_rng(seed)
    dims = {"fc0": (D_IN, D), "blk.fc1": (D, D), "blk.fc2": (D, D), "head": (D, D_OUT)}
    p = {}
    for name, (i, o) in dims.items():
        p[f"{name}.weight"] = rng.normal(0, 0.5, (i, o))
        p[f"{name}.bias"] = rng.normal(0, 0.1, (o,))
    return p


def _gelu_erf(x):
    from math import erf, sqrt

    return 0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def run(params: dict[str, np.ndarray], x: np.ndarray, *, act: str = "tanh", untransposed: str | None = None,
        reverse_hidden: str | None = None, detach_residual: bool = False, scale_head: float = 1.0,
        functional_act: bool = False, noise: float = 0.0, seed: int = 1):
    """One forward + backward in float64. Returns (events, output, loss, grad_events, param_grads)."""
    rng = np.random.default_rng(seed)

    def jitter(a):
        return a * (1 + noise * rng.standard_normal(a.shape)) if noise else a

    def weight(name):
        w = params[f"{name}.weight"]
        return w.T if name == untransposed else w  # a square torch weight loaded without transposing

    def lin(name, inp):
        out = jitter(inp @ weight(name) + params[f"{name}.bias"])
        if name == reverse_hidden:
            out = out[:, ::-1]
        return out

    f = {"tanh": np.tanh, "gelu": _gelu_erf, "gelu_tanh": _gelu_tanh, "relu": lambda v: np.maximum(v, 0)}[act]
    ev: list[tuple[str, list, list]] = []
    h0 = lin("fc0", x)
    ev.append(("fc0", [x], [h0]))
    h1 = lin("blk.fc1", h0)
    ev.append(("blk.fc1", [h0], [h1]))
    a = f(h1)
    if not functional_act:
        ev.append(("blk.act", [h1], [a]))
    h2 = lin("blk.fc2", a)
    ev.append(("blk.fc2", [a], [h2]))
    y = h0 + h2
    ev.append(("blk", [h0], [y]))
    out = lin("head", y) * scale_head
    ev.append(("head", [y], [out]))
    ev.append(("", [x], [out]))
    loss = float(np.mean(out ** 2))

    # backward (tanh activation only; other activations: forward-only tests)
    g_out = 2 * out / out.size
    g_y = (g_out * scale_head) @ weight("head").T
    g_h2 = g_y
    g_a = g_h2 @ weight("blk.fc2").T
    g_h1 = g_a * (1 - np.tanh(h1) ** 2)
    g_h0 = g_h1 @ weight("blk.fc1").T + (0 if detach_residual else g_y)
    pg = {
        "head.weight": y.T @ (g_out * scale_head), "head.bias": (g_out * scale_head).sum(0),
        "blk.fc2.weight": a.T @ g_h2, "blk.fc2.bias": g_h2.sum(0),
        "blk.fc1.weight": h0.T @ g_h1, "blk.fc1.bias": g_h1.sum(0),
        "fc0.weight": x.T @ g_h0, "fc0.bias": g_h0.sum(0),
    }
    pg = {k: jitter(v) for k, v in pg.items()}
    grads = [("", [g_out]), ("head", [g_out]), ("blk", [g_y]), ("blk.fc2", [g_h2])]
    if not functional_act:
        grads.append(("blk.act", [g_a]))
    grads += [("blk.fc1", [g_h1]), ("fc0", [g_h0])]
    grads = [(p, [jitter(g) for g in gs]) for p, gs in grads]
    return ev, out, loss, grads, pg


def adamw(params, grads, state, *, lr=1e-2, eps=1e-8, wd=0.01, decay=lambda n: True, b1=0.9, b2=0.999):
    """One AdamW step in float64 (torch's formulation); returns new params."""
    state["t"] = state.get("t", 0) + 1
    t = state["t"]
    new = {}
    for n, p in params.items():
        g = grads[n]
        m = state.setdefault(("m", n), np.zeros_like(p))
        v = state.setdefault(("v", n), np.zeros_like(p))
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        q = p * (1 - lr * wd) if decay(n) else p
        mh, vh = m / (1 - b1 ** t), v / (1 - b2 ** t)
        new[n] = q - lr * mh / (np.sqrt(vh) + eps)
    return new


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _to_torch_names(d: dict[str, np.ndarray], *, transpose: bool) -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        name = k.replace("blk.", "block.", 1) if k.startswith("blk.") else k
        out[name] = _f32(v.T if transpose and k.endswith(".weight") else v)
    return out


def make_traces(*, steps: int = 1, loss: bool = True, optimizer: bool = False, side_bugs: dict | None = None,
                torch_opt: dict | None = None, paddle_opt: dict | None = None, noise: float = 0.0,
                configs: dict | None = None, seed: int = 0, paddle_params: dict | None = None,
                grad_noise_abs: float = 0.0, tiny_input: bool = False):
    """(paddle Trace, torch Trace, pairing). ``side_bugs``: keyword arguments of :func:`run` for the
    Paddle side; ``configs``: ``{paddle path: (paddle config, torch config)}``."""
    side_bugs = dict(side_bugs or {})
    functional = side_bugs.get("functional_act", False)
    rng = np.random.default_rng(seed + 100)
    xs = [rng.normal(0, 1, (N, D_IN)) for _ in range(steps)]
    if tiny_input:  # gradients of fc0.weight's first row near AdamW's eps
        for x in xs:
            x[:, 0] *= 1e-7
    nrng = np.random.default_rng(seed + 7)
    traces = {}
    for side in ("paddle", "torch"):
        params = dict(paddle_params or init_params(seed)) if side == "paddle" else init_params(seed)
        kw = side_bugs if side == "paddle" else {"functional_act": functional}
        if side == "paddle" and noise:
            kw = dict(kw, noise=noise)
        opt_kw = (paddle_opt if side == "paddle" else torch_opt) or {}
        state: dict = {}
        before = params
        step_traces = []
        for s in range(steps):
            ev, out, lv, grads, pg = run(params, xs[s], **kw)
            if side == "paddle" and grad_noise_abs:  # rounding-level noise, absolute
                pg = {k: v + grad_noise_abs * nrng.standard_normal(v.shape) for k, v in pg.items()}
            mp = {p[0]: p[1] for p in PAIRS}
            path = (lambda p: p) if side == "paddle" else (lambda p: mp[p])
            events = [ForwardEvent(path(p), 0, [_f32(i) for i in ins], [_f32(o) for o in outs]) for p, ins, outs in ev]
            gevents = [GradEvent(path(p), 0, [_f32(g) for g in gs]) for p, gs in grads] if loss else []
            if side == "paddle":
                pgs = {k: _f32(v) for k, v in pg.items()}
            else:
                pgs = _to_torch_names(pg, transpose=True)
            after = {}
            if optimizer:
                params = adamw(params, pg, state, **opt_kw)
                after = {k: _f32(v) for k, v in params.items()} if side == "paddle" else \
                    _to_torch_names(params, transpose=True)
            step_traces.append(StepTrace(events, [_f32(out)], lv if loss else None, gevents,
                                         pgs if loss else {}, after))
        cfg = configs or {}
        mods = []
        for p in PAIRS:
            if functional and p[0] == "blk.act":
                continue
            c = cfg.get(p[0], ({}, {}))
            mods.append(ModuleInfo(p[0] if side == "paddle" else p[1], p[2], dict(c[0] if side == "paddle" else c[1])))
        pb = {k: _f32(v) for k, v in before.items()} if side == "paddle" else _to_torch_names(before, transpose=True)
        if side == "paddle" and side_bugs.get("untransposed"):
            w = f"{side_bugs['untransposed']}.weight"
            pb[w] = np.ascontiguousarray(pb[w].T)  # stored as torch's [out, in], used as is
        opt_info = {}
        if optimizer:
            o = {"lr": 1e-2, "eps": 1e-8, "wd": 0.01, **opt_kw}
            if side == "paddle":
                opt_info = {"type": "AdamW", "learning_rate": o["lr"], "epsilon": o["eps"], "beta1": 0.9,
                            "beta2": 0.999, "weight_decay": o["wd"], "decay": "decoupled"}
                dec = o.get("decay")
                opt_info["decayed"] = [k for k in params if dec is None or dec(k)]
            else:
                opt_info = {"type": "AdamW", "lr": o["lr"], "eps": o["eps"], "betas": (0.9, 0.999),
                            "weight_decay": o["wd"], "decay": "decoupled"}
                dec = o.get("decay")
                opt_info["decayed"] = list(_to_torch_names({k: v for k, v in params.items()
                                                            if dec is None or dec(k)}, transpose=False))
        traces[side] = Trace(side, {side: "test"}, mods, pb, opt_info, step_traces)
    return traces["paddle"], traces["torch"], pairing(functional)
