"""pretrained_init: cost of completing the initialisation after a low-memory load.

A BERT-base-sized ``BertModel`` (hidden 768, 12 layers, vocabulary 30,522: 110 M parameters,
440 MB) is saved to a temporary folder once; ``BertForSequenceClassification.from_pretrained``
loads it (a new 2-label head). Rows:
- CPU time (``time.process_time``: all threads of this process, so other processes on a
  shared machine count less than in wall time) of ``from_pretrained(..., low_cpu_mem_usage=True)``,
  patched / stock, goal <= 1.10
  (interleaved, best of 6, the side timed first alternating; ``apply`` / ``revert`` and a
  ``gc.collect()`` happen outside the timed calls);
- peak resident memory added by the load, patched flag / stock flag, goal <= 1.05, and
  default path (no flag) / stock flag for information: each measured in a fresh process
  (``VmHWM`` after the load minus ``VmRSS`` before it).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time

import paddlefix  # noqa: F401  (before paddle: zlib first)
from _common import BERT_BASE, Row

NAME = "pretrained_init"
CONFIG = dict(BERT_BASE)

MEMORY_SCRIPT = """
import sys, paddlefix
mode, folder = sys.argv[1], sys.argv[2]
import paddle
from paddlenlp.transformers import BertForSequenceClassification
from paddlenlp.utils.log import logger
logger.logger.setLevel(40)
if mode == "patched":
    assert paddlefix.apply("pretrained_init")["pretrained_init"].state == "applied"
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
before = status("VmRSS")
model = BertForSequenceClassification.from_pretrained(folder, low_cpu_mem_usage=mode != "default", num_labels=2)
print((status("VmHWM") - before) / 1024.0)
"""


def _peak_mb(mode: str, folder: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLEFIX_")}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, mode, folder], capture_output=True, text=True, env=env, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def rows() -> list[Row]:
    import paddle
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification, BertModel
    from paddlenlp.utils.log import logger

    if not os.path.exists("/proc/self/status"):
        return [Row(f"{NAME}: needs /proc/self/status (Linux)", float("nan"), None)]
    was_applied = paddlefix.status()[NAME].state == "applied"
    report = paddlefix.apply(NAME)
    if report[NAME].state != "applied":
        return [Row(f"{NAME}: not applied ({report[NAME].reason})", float("nan"), None)]
    level = logger.logger.level
    logger.logger.setLevel(40)
    tmp = tempfile.mkdtemp(prefix="paddlefix-bench-")
    try:
        paddle.seed(0)
        BertModel(BertConfig(**CONFIG)).save_pretrained(tmp)

        def load() -> float:
            gc.collect()  # untimed: each side starts from the same collected heap
            start = time.process_time()
            model = BertForSequenceClassification.from_pretrained(tmp, low_cpu_mem_usage=True, num_labels=2)
            took = time.process_time() - start
            del model
            return took

        load()  # warm-up (file cache, first-call costs)
        patched_s = stock_s = float("inf")
        for round_ in range(6):  # alternate which side goes first, so order effects hit both
            for side in (("patched", "stock") if round_ % 2 else ("stock", "patched")):
                if side == "patched":
                    paddlefix.apply(NAME)
                    patched_s = min(patched_s, load())
                    paddlefix.revert(NAME)
                else:
                    stock_s = min(stock_s, load())
        memory = {mode: _peak_mb(mode, tmp) for mode in ("stock", "patched", "default")}
    finally:
        logger.logger.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)
        if was_applied:
            paddlefix.apply(NAME)
        else:
            paddlefix.revert(NAME)
    mb = lambda x: f"{x:.0f} MB"  # noqa: E731
    return [
        Row(
            f"{NAME}: from_pretrained(low_cpu_mem_usage) CPU time, patched / stock",
            patched_s / stock_s,
            1.10,
            f"{patched_s * 1e3:.0f} ms vs {stock_s * 1e3:.0f} ms CPU (BERT-base size, best of 6)",
        ),
        Row(
            f"{NAME}: peak RSS of the load, patched flag / stock flag",
            memory["patched"] / memory["stock"],
            1.05,
            f"{mb(memory['patched'])} vs {mb(memory['stock'])} added by the load (fresh processes)",
        ),
        Row(
            f"{NAME}: peak RSS of the load, default path / stock flag",
            memory["default"] / memory["stock"],
            None,
            f"{mb(memory['default'])} without the flag",
        ),
    ]
