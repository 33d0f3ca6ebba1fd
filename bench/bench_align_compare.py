"""align.compare cost on a BERT-base-sized encoder (hidden 768, 12 layers, batch 2, sequence 128, CPU).

Time: one ``compare`` with a loss and one AdamW step (both frameworks traced layer by layer, then
diffed) / the plain work it replaces: each framework's forward + backward + step, run back to back.
Memory: peak RSS of a process running ``compare`` / the sum of the peaks of two processes each
running one framework's plain forward + backward + step on the same model. Each process builds its
model(s) the same way; the vocabulary is small (1000) so the encoder dominates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _common import Row

GOAL_TIME = 3.0
GOAL_MEMORY = 1.5
HERE = os.path.dirname(os.path.abspath(__file__))

# Runs in a fresh interpreter: builds the models, then does `what` ("paddle", "torch", "compare",
# or "time"), printing one JSON line.
SCRIPT = r"""
import json, resource, sys, time, zlib
import numpy as np
what = sys.argv[1]
HIDDEN, LAYERS, HEADS, FF, VOCAB, BATCH, SEQ = 768, 12, 12, 3072, 1000, 2, 128
rng = np.random.default_rng(0)
ids = rng.integers(1, VOCAB, (BATCH, SEQ))
target = rng.standard_normal((BATCH, SEQ, HIDDEN)).astype(np.float32)
common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              intermediate_size=FF, max_position_embeddings=SEQ, type_vocab_size=2,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
pd = pt = None
if what in ("paddle", "compare", "time"):
    import paddle, paddlenlp.transformers as T
    paddle.seed(0)
    pd = T.BertModel(T.BertConfig(**common))
    pd_opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=pd.parameters())
    pd_tgt = paddle.to_tensor(target)
    pd_loss = lambda out, batch: ((out[0] - pd_tgt) ** 2).mean()
if what in ("torch", "compare", "time"):
    import torch, transformers
    torch.manual_seed(0)
    pt = transformers.BertModel(transformers.BertConfig(attn_implementation="eager", **common))
    pt_opt = torch.optim.AdamW(pt.parameters(), lr=1e-4)
    pt_tgt = torch.from_numpy(target)
    pt_loss = lambda out, batch: ((out.last_hidden_state - pt_tgt) ** 2).mean()

def plain_paddle():
    pd.eval()
    loss = pd_loss(pd(input_ids=paddle.to_tensor(ids)), None)
    loss.backward(); pd_opt.step(); pd_opt.clear_grad()

def plain_torch():
    pt.eval()
    loss = pt_loss(pt(input_ids=torch.from_numpy(ids)), None)
    loss.backward(); pt_opt.step(); pt_opt.zero_grad()

def run_compare():
    from paddlefix import align
    return align.compare(pd, pt, {"input_ids": ids}, loss=(pd_loss, pt_loss), optimizers=(pd_opt, pt_opt))

out = {}
if what == "paddle":
    plain_paddle()
elif what == "torch":
    plain_torch()
elif what == "compare":
    from paddlefix.align import transfer
    transfer(pt, pd)
    run_compare()
else:
    from paddlefix.align import transfer
    transfer(pt, pd)
    plain_paddle(); plain_torch(); run_compare()  # warm up
    best_plain = best_compare = float("inf")
    for _ in range(3):
        t = time.perf_counter(); plain_paddle(); plain_torch(); best_plain = min(best_plain, time.perf_counter() - t)
        t = time.perf_counter(); result = run_compare(); best_compare = min(best_compare, time.perf_counter() - t)
    out.update(plain=best_plain, compare=best_compare)
out["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def _run(what: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLEFIX_")}
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, what], capture_output=True, text=True, env=env, timeout=1800, cwd=root
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} run failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows() -> list[Row]:
    timing = _run("time")
    peaks = {what: _run(what)["peak_kb"] / 1024 for what in ("paddle", "torch", "compare")}
    plain_sum = peaks["paddle"] + peaks["torch"]
    return [
        Row(
            "align.compare, BERT-base, loss + 1 AdamW step / plain both",
            timing["compare"] / timing["plain"],
            GOAL_TIME,
            f"compare {timing['compare']:.2f} s, plain paddle + torch fwd+bwd+step {timing['plain']:.2f} s",
        ),
        Row(
            "align.compare peak memory / sum of plain peaks",
            peaks["compare"] / plain_sum,
            GOAL_MEMORY,
            f"compare {peaks['compare']:.0f} MB, paddle {peaks['paddle']:.0f} MB + torch {peaks['torch']:.0f} MB",
        ),
    ]
