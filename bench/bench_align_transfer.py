"""align.transfer on a BERT-base-sized model (hidden 768, 12 layers): time and peak memory.

Time: ``align.transfer(hf_model, paddle_model)`` (pairing, layout transforms, copies) against
the same Paddle model's ``set_state_dict`` from NumPy arrays already converted (transposed,
renamed) -- the floor any converter has to pay. Best of interleaved rounds. "Bare copies" times
only the copies transfer itself makes (vectorised transposes and plain copies into views of the
Paddle parameters, over ``torch.get_num_threads()`` threads): what bounds transfer on a given
machine; "torch copy_" makes the same copies with torch's ``copy_``, one after the other.

Memory: in a fresh process holding both models, the resident set size is sampled every
millisecond during the transfer; the peak above the level before it is compared with the size
of the largest single tensor (the word embeddings): transfer copies into the parameters from
views of the source, so it must never hold a second copy of the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from _common import BERT_BASE, Row

TIME_GOAL = 1.5
MEM_GOAL = 1.0
CONFIG = dict(BERT_BASE, type_vocab_size=2)


def _models() -> tuple[Any, Any]:
    import numpy  # noqa: F401  (before paddle)
    import paddle
    import paddlenlp.transformers as T
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**CONFIG)).eval()
    paddle.seed(0)
    pd = T.BertModel(T.BertConfig(**CONFIG))
    pd.eval()
    return hf, pd


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _worker_memory() -> None:
    """Run in a fresh process: print JSON {peak_above, largest, model_bytes}."""
    from paddlefix import align

    hf, pd = _models()
    largest = max(p.numel() * p.element_size() for p in hf.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in hf.state_dict().values())
    align.pair(hf, pd)  # warm imports (paddlenlp name tables) outside the measurement
    import gc

    gc.collect()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    report = align.transfer(hf, pd)
    stop.set()
    th.join()
    peak[0] = max(peak[0], _rss())
    print(json.dumps({"peak_above": peak[0] - base, "largest": largest, "model_bytes": model_bytes,
                      "after": _rss() - base, "ok": report.ok}))


def _time_rows() -> list[Row]:
    import numpy as np

    from paddlefix import align

    import torch

    hf, pd = _models()
    report = align.transfer(hf, pd)
    sd = hf.state_dict()
    plan = [(c.dst, c.src, c.how == "transpose") for c in report.copied]
    # the arrays a hand-written converter would hand to set_state_dict, already converted
    converted = {d: np.ascontiguousarray(sd[s].numpy().T if t else sd[s].numpy()) for d, s, t in plan}

    from paddlefix.align.adapters._paddle import torch_view

    params = pd.state_dict()
    views = {d: torch_view(params[d]) for d, _, _ in plan}

    from paddlefix.align.adapters import _fastcopy

    def bare() -> None:  # the copies alone, made as transfer makes them: what bounds it from below
        with torch.no_grad(), _fastcopy.deferred():
            for d, s, t in plan:
                _fastcopy.copy_later(views[d], sd[s].t() if t else sd[s], temporary=False)

    def torch_copies() -> None:  # the same copies by torch's copy_, one after the other
        with torch.no_grad():
            for d, s, t in plan:
                views[d].copy_(sd[s].t() if t else sd[s])

    def by_hand() -> None:  # what a conversion script does: transpose views, then set_state_dict
        pd.set_state_dict({d: sd[s].numpy().T if t else sd[s].numpy() for d, s, t in plan})

    runs = (("transfer", lambda: align.transfer(hf, pd)), ("set_state_dict", lambda: pd.set_state_dict(converted)),
            ("by_hand", by_hand), ("bare", bare), ("torch_copies", torch_copies))
    best = {name: float("inf") for name, _ in runs}
    for _ in range(5):  # interleaved
        for name, fn in runs:
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    n = sum(int(p.numel()) for p in hf.parameters())
    ms = {k: f"{v * 1e3:.0f} ms" for k, v in best.items()}
    detail = (f"transfer {ms['transfer']}, set_state_dict {ms['set_state_dict']}, by hand {ms['by_hand']}, "
              f"bare copies {ms['bare']}, torch copy_ {ms['torch_copies']}, {torch.get_num_threads()} threads")
    return [
        Row(f"align.transfer: BERT-base ({n / 1e6:.0f}M), torch -> paddle / set_state_dict(converted)",
            best["transfer"] / best["set_state_dict"], TIME_GOAL, detail),
        Row("align.transfer: BERT-base / by hand (.T views, set_state_dict)",
            best["transfer"] / best["by_hand"], None, detail),
        Row("align.transfer: BERT-base bare copies (transfer's copies alone) / set_state_dict",
            best["bare"] / best["set_state_dict"], None, detail),
        Row("align.transfer: BERT-base torch copy_ of the same tensors / set_state_dict",
            best["torch_copies"] / best["set_state_dict"], None, detail),
    ]


def _memory_rows() -> list[Row]:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), here, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory"], capture_output=True,
                         text=True, env=env, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return [Row(
        "align.transfer: BERT-base peak RSS above models / largest tensor",
        data["peak_above"] / data["largest"], MEM_GOAL,
        f"peak +{data['peak_above'] / 2**20:.0f} MiB, largest tensor {data['largest'] / 2**20:.0f} MiB, "
        f"model {data['model_bytes'] / 2**20:.0f} MiB",
    )]


def rows() -> list[Row]:
    try:
        import numpy  # noqa: F401  (numpy, then paddle, before paddlenlp: on paddle 2.6.2 a bare
        import paddle  # noqa: F401  `import paddlenlp` fails in scipy with a zlib error)
        import paddlenlp  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return [Row("align.transfer: BERT-base", float("nan"), TIME_GOAL, f"needs torch, transformers, paddlenlp: {exc}")]
    return _time_rows() + _memory_rows()


if __name__ == "__main__":
    if "--memory" in sys.argv:
        _worker_memory()
    else:
        for row in rows():
            print(f"{row.ratio:6.2f} (goal {row.goal})  {row.name}  [{row.detail}]")
