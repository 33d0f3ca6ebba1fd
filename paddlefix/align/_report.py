"""The result of ``align.compare``: data first (:meth:`AlignResult.to_dict`), then renderings.

- ``str(result)``: a table that fits 100 columns (module paths shortened from the left);
- :meth:`AlignResult.to_markdown`: the same for a pull request, with both sides' paths;
- :meth:`AlignResult.to_json` / :meth:`AlignResult.from_dict`: a saved result (``paddlefix align show``);
- :meth:`AlignResult.to_html`: one self-contained page (inline CSS, plots as embedded PNG);
- :meth:`AlignResult.save_reprod_log`: the files of Paddle's reproduction guide, for ``reprod_log``.
"""

from __future__ import annotations

import html
import json
import math
import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

from ._errors import AlignError
from ._metrics import REPROD_MEAN, Metrics, tensor_metrics

__all__ = ["AlignResult", "Divergence", "Finding", "Row", "PHASES", "FORMAT", "FORMAT_VERSION"]

#: The ``format`` field of a saved result.
FORMAT = "paddlefix.align.result"
FORMAT_VERSION = 1
#: Phases in the order one step runs them.
PHASES = ("forward", "loss", "backward", "param_grad", "step")
_PHASE_SHORT = {"forward": "fwd", "loss": "loss", "backward": "bwd", "param_grad": "pgrad", "step": "step"}
#: Row states. ``fail`` makes a result not ok; the others do not.
STATUSES = ("ok", "fail", "noise", "inputs", "follows", "skipped")
_MARK = {"ok": " ", "fail": "x", "noise": "~", "inputs": "i", "follows": "f", "skipped": "-"}
WIDTH = 100


@dataclass
class Row:
    """One comparison: a module call (forward), its output gradient (backward), the loss, a
    parameter's gradient or its value after a step."""

    phase: str
    step: int
    order: int
    """Position in the phase: execution order (forward), backward order, parameter order."""
    paddle: str
    torch: str
    type: str = ""
    call: int = 0
    status: str = "ok"
    what: str = ""
    """Which tensor :attr:`metrics` is about (``output[0]``, ``grad_output[0]``, ``weight``, ...)."""
    metrics: Metrics | None = None
    tensors: list[tuple[str, Metrics]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "step": self.step, "order": self.order, "paddle": self.paddle,
            "torch": self.torch, "type": self.type, "call": self.call, "status": self.status,
            "what": self.what, "metrics": self.metrics.to_dict() if self.metrics else None,
            "tensors": [[w, m.to_dict()] for w, m in self.tensors], "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Row":
        return cls(
            phase=d["phase"], step=d["step"], order=d["order"], paddle=d["paddle"], torch=d["torch"],
            type=d.get("type", ""), call=d.get("call", 0), status=d["status"], what=d.get("what", ""),
            metrics=Metrics.from_dict(d["metrics"]) if d.get("metrics") else None,
            tensors=[(w, Metrics.from_dict(m)) for w, m in d.get("tensors", [])], note=d.get("note", ""),
        )


@dataclass
class Finding:
    """A difference found without numbers: configuration of a pair, optimizer hyper-parameters,
    structure (a call or tensor present on one side only)."""

    kind: str
    """``"config"``, ``"optimizer"`` or ``"structure"``."""
    paddle: str
    torch: str
    label: str
    paddle_value: Any
    torch_value: Any
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "paddle": self.paddle, "torch": self.torch, "label": self.label,
                "paddle_value": _jsonable(self.paddle_value), "torch_value": _jsonable(self.torch_value),
                "hint": self.hint}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(d["kind"], d["paddle"], d["torch"], d["label"], d["paddle_value"], d["torch_value"],
                   d.get("hint", ""))


@dataclass
class Divergence:
    """Where the two runs start to differ in one phase of one step."""

    phase: str
    """``forward``, ``loss``, ``backward``, ``param_grad`` or ``step`` (parameters after the step)."""
    step: int
    paddle_module: str
    """Module path (a parameter name for ``param_grad`` / ``step``) on the Paddle side."""
    torch_module: str
    what: str
    """The tensor: ``output[0]``, ``input[0]``, ``grad_output[0]``, a parameter name, ``loss``."""
    kind: str
    """``module``: this module introduces it (its inputs agree, its output does not); ``between``:
    its inputs already differ although the previous paired module's outputs agree (the code between
    them is not a paired module); ``inputs``: the model's inputs differ; ``grad_flow``: the gradient
    first differs at this module's output and one of several consumers passes it on wrongly;
    ``param``: a parameter (gradient or update); ``loss``."""
    metrics: Metrics | None = None
    hint: str = ""
    detail: str = ""
    candidates: list[list[str]] = field(default_factory=list)
    """Other ``[paddle, torch]`` modules that may introduce it (``grad_flow``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "step": self.step, "paddle_module": self.paddle_module,
                "torch_module": self.torch_module, "what": self.what, "kind": self.kind,
                "metrics": self.metrics.to_dict() if self.metrics else None, "hint": self.hint,
                "detail": self.detail, "candidates": [list(c) for c in self.candidates]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Divergence":
        return cls(d["phase"], d["step"], d["paddle_module"], d["torch_module"], d["what"], d["kind"],
                   Metrics.from_dict(d["metrics"]) if d.get("metrics") else None, d.get("hint", ""),
                   d.get("detail", ""), [list(c) for c in d.get("candidates", [])])

    def headline(self) -> str:
        where = self.paddle_module or "(model)"
        torch = "" if self.torch_module == self.paddle_module else f" (torch: {self.torch_module or '(model)'})"
        return f"{self.phase}, step {self.step}, {where}{torch}, {self.what}"


@dataclass
class AlignResult:
    """What ``align.compare`` found. ``ok`` is True when no row fails and there is no finding."""

    rows: list[Row] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    """The first divergence of each (step, phase) that has one, in run order."""
    losses: dict[str, list[float | None]] = field(default_factory=dict)
    """``{"paddle": [...], "torch": [...]}``: the loss of each step."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Tolerance, number of steps, versions of both sides, context (train, matmul precision)."""
    notes: list[str] = field(default_factory=list)
    _arrays: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """Arrays for :meth:`save_reprod_log` (not saved by :meth:`to_dict`)."""

    # ---------------------------------------------------------------- data
    @property
    def ok(self) -> bool:
        return not self.findings and not any(r.status == "fail" for r in self.rows)

    @property
    def first_divergence(self) -> Divergence | None:
        """The earliest divergence in run order (step, then forward, loss, backward, parameter
        gradients, parameters after the step), or None."""
        return self.divergences[0] if self.divergences else None

    def failed_rows(self) -> list[Row]:
        return [r for r in self.rows if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "ok": self.ok,
            "first_divergence": first.to_dict() if first else None,
            "divergences": [d.to_dict() for d in self.divergences],
            "findings": [f.to_dict() for f in self.findings],
            "rows": [r.to_dict() for r in self.rows],
            "losses": {k: [_json_num(v) for v in vs] for k, vs in self.losses.items()},
            "meta": _jsonable(self.meta), "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Any) -> "AlignResult":
        """Rebuild a result saved by :meth:`to_dict` / :meth:`to_json` (without its arrays)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise AlignError(f"not a paddlefix align result (format is not {FORMAT!r})")
        if type(d.get("version")) is not int or d["version"] > FORMAT_VERSION:
            raise AlignError(f"align result version {d.get('version')!r} is not readable here "
                             f"(this paddlefix reads up to {FORMAT_VERSION})")
        try:
            return cls(
                rows=[Row.from_dict(r) for r in d["rows"]],
                findings=[Finding.from_dict(f) for f in d["findings"]],
                divergences=[Divergence.from_dict(x) for x in d["divergences"]],
                losses={k: [_unjson_num(v) for v in vs] for k, vs in d.get("losses", {}).items()},
                meta=dict(d.get("meta", {})), notes=list(d.get("notes", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AlignError(f"align result is incomplete or malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AlignResult":
        """Read a result written by :meth:`to_json`."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise AlignError(f"{path} is not a readable align result ({exc})") from None
        try:
            return cls.from_dict(data)
        except AlignError as exc:
            raise AlignError(f"{path}: {exc}") from None

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 1) -> str:
        """The JSON text of :meth:`to_dict`; written to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            _write_text(os.fspath(path), text)
        return text

    # ---------------------------------------------------------------- text
    def summary(self) -> str:
        first = self.first_divergence
        n_fail = len(self.failed_rows())
        if self.ok:
            head = "ALIGNED: every compared tensor within tolerance, no configuration difference"
        elif first is not None:
            head = f"DIVERGED at {first.headline()}"
        else:
            head = f"DIFFERENT: {len(self.findings)} finding(s), {n_fail} failing comparison(s)"
        return head

    def _meta_line(self) -> str:
        tol = self.meta.get("tolerance", "default")
        parts = [f"tolerance {tol}", f"steps {self.meta.get('steps', '?')}"]
        for side in ("paddle", "torch"):
            v = self.meta.get("versions", {}).get(side, {})
            if v:
                parts.append(side + " " + " ".join(f"{k} {x}" for k, x in list(v.items())[:2]))
        counts = {s: sum(1 for r in self.rows if r.status == s) for s in STATUSES}
        parts.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self, width: int = WIDTH, max_rows: int = 60) -> str:
        """The terminal rendering (``str(result)``), each line at most ``width`` characters."""
        out = [_clip("paddlefix.align: " + self.summary(), width), _clip(self._meta_line(), width)]
        wrap = textwrap.TextWrapper(width=width, initial_indent="    ", subsequent_indent="    ")
        if self.findings:
            out += ["", f"configuration and optimizer ({len(self.findings)} finding(s)):"]
            for f in self.findings:
                where = f.paddle if f.paddle == f.torch else f"{f.paddle} / {f.torch}"
                line = f"  ! {f.kind} {_shorten(where or '(model)', 44)}: {f.label} paddle " \
                       f"{_short_value(f.paddle_value)} vs torch {_short_value(f.torch_value)}"
                out.append(_clip(line, width))
                if f.hint:
                    out += wrap.wrap("hint: " + f.hint)
        first = self.first_divergence
        if first is not None:
            out += ["", "first divergence:"]
            out += wrap.wrap(first.headline())
            if first.detail:
                out += wrap.wrap(first.detail)
            if first.metrics is not None and not first.metrics.ok:
                for ln in first.metrics.message(first.what or "tensors").splitlines()[2:]:
                    out.append(_clip("    " + ln, width))
            if first.hint:
                out += wrap.wrap("hint: " + first.hint)
            for d in self.divergences[1:4]:
                out += wrap.wrap(f"then: {d.headline()}" + (f" ({d.kind})" if d.kind else ""))
        out.append("")
        out += self._table_lines(width, max_rows)
        if self.notes:
            out.append("")
            for n in self.notes:
                out += textwrap.wrap("note: " + n, width=width, subsequent_indent="      ")
        out.append("marks: x fail, ~ rounding noise after a step (explained), i inputs differ (outputs agree),"
                   [:width])
        out.append("       f follows from earlier differences, - not compared; >> first divergence"[:width])
        return "\n".join(line.rstrip() for line in out)

    def _table_lines(self, width: int, max_rows: int) -> list[str]:
        fixed = 2 + 4 + 1 + 5 + 1 + 1 + 14 + 1 + 9 + 1 + 9 + 1 + 9 + 1 + 6  # everything but the path
        path_w = max(16, width - fixed - 1)
        header = (f"{'':2}{'step':>4} {'phase':<5} {'module / parameter (paddle)':<{path_w}} {'tensor':<14} "
                  f"{'max abs':>9} {'rel':>9} {'cos':>9} {'out%':>6}")
        lines = [header[:width], ("-" * len(header))[:width]]
        rows = self.rows
        first = self.first_divergence
        first_key = (first.phase, first.step, first.paddle_module) if first else None
        shown = rows
        omitted = 0
        if len(rows) > max_rows:
            keep = set()
            for i, r in enumerate(rows):
                if r.status not in ("ok", "skipped", "follows"):
                    keep.add(i)
                if first_key and (r.phase, r.step, r.paddle) == first_key:
                    keep.update(range(max(0, i - 3), i + 1))
            if not keep:  # nothing stands out: the beginning of the run
                keep = set(range(max_rows // 2))
            keep = set(sorted(keep)[:max_rows])
            shown = [r for i, r in enumerate(rows) if i in keep]
            omitted = len(rows) - len(shown)
        for r in shown:
            mark = ">>" if first_key and (r.phase, r.step, r.paddle) == first_key else _MARK.get(r.status, "?") + " "
            m = r.metrics
            name = r.paddle if r.paddle else "(model)"
            vals = ("", "", "", "") if m is None else (
                _num(m.max_abs), _num(m.scale_rel), "" if m.cosine is None else f"{m.cosine:.6f}",
                f"{100 * m.fraction_out:.1f}")
            what = r.what or ("-" if m is None else "")
            line = (f"{mark:2}{r.step:>4} {_PHASE_SHORT.get(r.phase, r.phase):<5} {_shorten(name, path_w):<{path_w}} "
                    f"{_shorten(what, 14):<14} {vals[0]:>9} {vals[1]:>9} {vals[2]:>9} {vals[3]:>6}")
            lines.append(line[:width])
        if omitted:
            lines.append(f"... {omitted} more row(s) agree or follow; see to_markdown() / to_html()"[:width])
        if not rows:
            lines.append("(nothing compared)")
        lines.append("rel: max abs / the reference's largest magnitude"[:width])
        return lines

    def to_markdown(self) -> str:
        """Markdown: summary, findings, first divergence with its hint, the full table."""
        out = [f"### paddlefix.align: {_md(self.summary())}", "", _md(self._meta_line()), ""]
        if self.findings:
            out += ["**Configuration and optimizer findings**", "",
                    "| kind | paddle | torch | setting | paddle value | torch value | hint |",
                    "|---|---|---|---|---|---|---|"]
            for f in self.findings:
                out.append(f"| {f.kind} | `{_md(f.paddle)}` | `{_md(f.torch)}` | {_md(f.label)} | "
                           f"{_md(_short_value(f.paddle_value))} | {_md(_short_value(f.torch_value))} | {_md(f.hint)} |")
            out.append("")
        first = self.first_divergence
        if first is not None:
            out += [f"**First divergence**: {_md(first.headline())} ({first.kind})", ""]
            if first.detail:
                out += [_md(first.detail), ""]
            if first.metrics is not None and not first.metrics.ok:
                out += ["```", first.metrics.message(first.what), "```", ""]
            if first.hint:
                out += [f"**Hint**: {_md(first.hint)}", ""]
        out += ["| step | phase | paddle | torch | tensor | status | max abs | max rel | rel to scale | "
                "cosine | out % | note |", "|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
        for r in self.rows:
            m = r.metrics
            nums = ["", "", "", "", ""] if m is None else [
                _num(m.max_abs), _num(m.max_rel), _num(m.scale_rel), "" if m.cosine is None else f"{m.cosine:.6f}",
                f"{100 * m.fraction_out:.1f}"]
            out.append(f"| {r.step} | {r.phase} | `{_md(r.paddle or '(model)')}` | `{_md(r.torch or '(model)')}` | "
                       f"{_md(r.what)} | {r.status} | " + " | ".join(nums) + f" | {_md(r.note)} |")
        for n in self.notes:
            out += ["", f"> {_md(n)}"]
        return "\n".join(out) + "\n"

    # ---------------------------------------------------------------- html
    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """One self-contained HTML page (inline CSS, plots as base64 PNG); written to ``path`` if given."""
        page = _html_page(self)
        if path is not None:
            _write_text(os.fspath(path), page)
        return page

    # ---------------------------------------------------------------- reprod_log
    def save_reprod_log(self, directory: str | os.PathLike) -> list[str]:
        """Write the reproduction guide's files into ``directory``; return their paths.

        ``forward_{paddle,torch}.npy`` (the model outputs of step 0) and ``forward_diff.log``;
        with a loss ``loss_*`` and ``bp_align_*`` (the loss of every step and the parameter
        gradients, in the Paddle layout, keyed by the Paddle name); with optimizer steps
        ``train_align_*`` (the parameters after every step). Each ``.npy`` is a dict saved with
        ``numpy.save`` as ``reprod_log.ReprodLogger`` writes it (``ReprodDiffHelper.load_info``
        reads it); each ``*_diff.log`` holds reprod_log's mean check (threshold 1e-6) **and**
        paddlefix's elementwise verdict for every key.

        Raises:
            AlignError: the result was loaded from JSON (it holds no arrays).
        """
        import numpy as np

        if self._arrays is None:
            raise AlignError("save_reprod_log: this result holds no arrays (it was loaded from JSON); "
                             "call it on the result compare() returned")
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        written = []
        for stem in ("forward", "loss", "bp_align", "train_align"):
            pair = self._arrays.get(stem)
            if not pair or not pair[0]:
                continue
            pd, pt, tolerance = pair
            verdicts = {k: tensor_metrics(pd[k], pt[k], tolerance=tolerance) for k in pd}
            for side, data in (("paddle", pd), ("torch", pt)):
                target = os.path.join(directory, f"{stem}_{side}.npy")
                tmp = target + ".tmp.npy"
                # reprod_log's own format: a dict saved by numpy.save (read back with allow_pickle=True
                # by ReprodDiffHelper.load_info; paddlefix itself never loads these files)
                payload: Any = {k: np.asarray(v) for k, v in data.items()}
                np.save(tmp, payload, allow_pickle=True)
                os.replace(tmp, target)
                written.append(target)
            log = os.path.join(directory, f"{stem}_diff.log")
            _write_text(log, _reprod_log_text(pd, pt, verdicts))
            written.append(log)
        return written


# ------------------------------------------------------------------------ helpers
def _reprod_log_text(pd: dict, pt: dict, verdicts: dict[str, Metrics]) -> str:
    import numpy as np

    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    pre = f"[{stamp}] root INFO: "
    lines = []
    mean_ok = True
    elem_ok = True
    for key in pd:
        a, b = np.asarray(pd[key]), np.asarray(pt[key])
        if a.shape == b.shape:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            mean = float(diff.mean()) if diff.size else 0.0
        else:
            mean = math.inf
        passed = mean <= REPROD_MEAN
        mean_ok = mean_ok and passed
        lines.append(f"{pre}{key}: ")
        lines.append(f"{pre}\tmean diff: check passed: {passed}, value: {mean}")
        m = verdicts.get(key)
        if m is not None:
            elem_ok = elem_ok and m.ok
            lines.append(f"{pre}\tpaddlefix elementwise (rtol {m.rtol:g}, atol {m.atol:g}): check passed: {m.ok}, "
                         f"max abs {m.max_abs:.6g}, out of tolerance {m.mismatched}/{m.numel}")
    lines.append(f"{pre}diff check {'passed' if mean_ok else 'failed'}")
    lines.append(f"{pre}paddlefix elementwise check {'passed' if elem_ok else 'failed'}")
    return "\n".join(lines) + "\n"


def _write_text(path: str, text: str) -> None:
    """``text`` (UTF-8) written to ``path`` whole or not at all, its folder made if needed."""
    from .._files import write_atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data))


def _shorten(text: str, width: int) -> str:
    """``text`` shortened from the left to ``width`` characters (the module's own name stays)."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1:]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(v: float | None) -> str:
    if v is None:
        return ""
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.2e}"


def _short_value(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 24 else text[:23] + "…"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def _unjson_num(v: Any) -> Any:
    return float(v) if v in ("inf", "-inf", "nan") else v


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
        return [_jsonable(x) for x in items]
    if isinstance(v, float):
        return _json_num(v)
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy scalar
        return _jsonable(v.item())
    return repr(v)


# ------------------------------------------------------------------------ html
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
.ok{color:#176617} .bad{color:#b00020}
.box{border:1px solid #ccc;border-radius:6px;padding:.8em 1em;background:#fafafa}
.box.bad{border-color:#b00020;background:#fff5f5}
table{border-collapse:collapse;font-size:.85em} th,td{border:1px solid #ddd;padding:2px 6px}
th{background:#f0f0f0;position:sticky;top:0} td.num{text-align:right;font-family:monospace}
tr.fail td{background:#ffe8e8} tr.noise td{background:#fff8e0} tr.first td{background:#ffc9c9;font-weight:bold}
tr.follows td{color:#777} code,pre{font-family:monospace} pre{white-space:pre-wrap}
img{max-width:100%;border:1px solid #eee}
"""


def _plots(result: AlignResult) -> list[tuple[str, str]]:
    """(title, base64 PNG) for the error-per-module plot and the loss-per-step plot."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except Exception:  # matplotlib missing or broken: the page says so
        return []
    import base64
    import io

    out = []
    fig = Figure(figsize=(9, 3.8), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    floor = 1e-17
    drawn = False
    for phase in PHASES:
        rows = [r for r in result.rows if r.phase == phase and r.step == 0 and r.metrics is not None]
        if not rows or phase == "loss":
            continue
        ys = [max(r.metrics.scale_rel, floor) if math.isfinite(r.metrics.scale_rel) else 1e3
              for r in rows if r.metrics is not None]
        line = ax.plot(range(len(ys)), ys, marker=".", linewidth=1, label=phase)[0]
        drawn = True
        first = result.first_divergence
        if first is not None and first.step == 0 and first.phase == phase:
            at = next((i for i, r in enumerate(rows) if r.paddle == first.paddle_module), None)
            if at is None and first.candidates:  # backward: named after the consumer
                at = next((i for i, r in enumerate(rows) if r.status == "fail"), None)
            if at is not None:
                ax.axvline(at, color=line.get_color(), linestyle=":", linewidth=1)
                ax.annotate("first divergence", (at, ys[at]), textcoords="offset points", xytext=(4, 6),
                            fontsize=8, color=line.get_color())
    if drawn:
        ax.set_yscale("log")
        ax.set_xlabel("position in execution order (backward: in backward order), step 0")
        ax.set_ylabel("max |diff| / max |torch|")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out.append(("Error per module along execution order (log scale; 0 drawn at 1e-17)",
                    base64.b64encode(buf.getvalue()).decode("ascii")))
    losses = result.losses
    if any(v is not None for vs in losses.values() for v in vs):
        fig = Figure(figsize=(6, 3.2), dpi=90)
        ax = fig.add_subplot(1, 1, 1)
        for side, style in (("torch", "o-"), ("paddle", "x--")):
            vs = losses.get(side, [])
            pts = [(i, v) for i, v in enumerate(vs) if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=side)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out.append(("Loss per step, both frameworks", base64.b64encode(buf.getvalue()).decode("ascii")))
    return out


def _html_page(result: AlignResult) -> str:
    e = html.escape
    first = result.first_divergence
    cls = "ok" if result.ok else "bad"
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<title>paddlefix.align result</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>paddlefix.align</h1>", f"<p class='{cls}'><b>{e(result.summary())}</b></p>",
             f"<p>{e(result._meta_line())}</p>"]
    if first is not None:
        parts.append("<h2>First divergence</h2><div class='box bad'>")
        parts.append(f"<p><b>{e(first.headline())}</b> ({e(first.kind)})</p>")
        if first.detail:
            parts.append(f"<p>{e(first.detail)}</p>")
        if first.metrics is not None and not first.metrics.ok:
            parts.append(f"<pre>{e(first.metrics.message(first.what))}</pre>")
        if first.hint:
            parts.append(f"<p><b>Hint:</b> {e(first.hint)}</p>")
        parts.append("</div>")
        if len(result.divergences) > 1:
            parts.append("<p>Then:</p><ul>")
            for d in result.divergences[1:]:
                parts.append(f"<li>{e(d.headline())} ({e(d.kind)}){' — ' + e(d.hint) if d.hint else ''}</li>")
            parts.append("</ul>")
    if result.findings:
        parts.append("<h2>Configuration and optimizer findings</h2><table><tr><th>kind</th><th>paddle</th>"
                     "<th>torch</th><th>setting</th><th>paddle value</th><th>torch value</th><th>hint</th></tr>")
        for f in result.findings:
            parts.append(f"<tr class='fail'><td>{e(f.kind)}</td><td><code>{e(f.paddle)}</code></td>"
                         f"<td><code>{e(f.torch)}</code></td><td>{e(f.label)}</td>"
                         f"<td>{e(repr(f.paddle_value))}</td><td>{e(repr(f.torch_value))}</td><td>{e(f.hint)}</td></tr>")
        parts.append("</table>")
    plots = _plots(result)
    if plots:
        parts.append("<h2>Plots</h2>")
        for title, data in plots:
            parts.append(f"<figure><img alt='{e(title)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(title)}</figcaption></figure>")
    else:
        parts.append("<p>(plots need matplotlib, which is not importable here)</p>")
    parts.append("<h2>Every comparison</h2><table><tr><th>step</th><th>phase</th><th>paddle</th><th>torch</th>"
                 "<th>type</th><th>tensor</th><th>status</th><th>max abs</th><th>max rel</th><th>rel to scale</th>"
                 "<th>mean abs</th><th>cosine</th><th>out %</th><th>worst element (paddle / torch)</th><th>note</th></tr>")
    first_key = (first.phase, first.step, first.paddle_module) if first else None
    for r in result.rows:
        m = r.metrics
        rc = "first" if first_key and (r.phase, r.step, r.paddle) == first_key else r.status
        if m is None:
            nums = "<td></td>" * 7
        else:
            worst = "" if m.worst_index is None else (
                f"{tuple(m.worst_index)}: {_num(m.worst_actual)} / {_num(m.worst_expected)}")
            cos = "" if m.cosine is None else f"{m.cosine:.7f}"
            nums = "".join(f"<td class='num'>{e(x)}</td>" for x in (
                _num(m.max_abs), _num(m.max_rel), _num(m.scale_rel), _num(m.mean_abs), cos,
                f"{100 * m.fraction_out:.2f}", worst))
        note = r.note or ((m.problem or m.note or "") if m else "")
        parts.append(f"<tr class='{e(rc)}'><td>{r.step}</td><td>{e(r.phase)}</td><td><code>{e(r.paddle)}</code></td>"
                     f"<td><code>{e(r.torch)}</code></td><td>{e(r.type)}</td><td>{e(r.what)}</td>"
                     f"<td>{e(r.status)}</td>{nums}<td>{e(note)}</td></tr>")
    parts.append("</table>")
    for n in result.notes:
        parts.append(f"<p><i>{e(n)}</i></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
