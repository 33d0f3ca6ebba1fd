"""align.compare plumbing: inputs converted to each side, record / offline compare without torch, progress."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import numpy as np
import pytest

from paddlefix import align, fakedata
from paddlefix.align import AlignError
from paddlefix.align._compare import convert_batch, normalize_inputs

from ..conftest import run_python

paddle = pytest.importorskip("paddle")
torch = pytest.importorskip("torch")


class _TorchNet(torch.nn.Module):
    """Takes ids (int64, an embedding) and a float tensor, positionally or by keyword."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(10, 4)
        self.fc = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)

    def forward(self, ids: Any, scale: Any) -> Any:
        return {"logits": self.bn(self.fc(self.emb(ids).mean(1) * scale))}


class _PaddleNet(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.emb = paddle.nn.Embedding(10, 4)
        self.fc = paddle.nn.Linear(4, 3)
        self.bn = paddle.nn.BatchNorm1D(3)

    def forward(self, ids: Any, scale: Any) -> Any:
        return {"logits": self.bn(self.fc(self.emb(ids).mean(1) * scale))}


def _pair() -> tuple[Any, Any]:
    pt, pd = _TorchNet().eval(), _PaddleNet()
    pd.eval()
    align.transfer(pt, pd)
    return pd, pt


IDS = np.random.default_rng(0).integers(0, 10, (5, 6))
SCALE = np.random.default_rng(1).standard_normal((5, 1)).astype(np.float32)


def test_inputs_of_any_framework_nested_and_ids_stay_int64():
    pd, pt = _pair()
    mixed = {"ids": torch.from_numpy(IDS), "scale": paddle.to_tensor(SCALE)}  # one of each
    for batch in (mixed, {"ids": IDS, "scale": SCALE}, (IDS, SCALE), [paddle.to_tensor(IDS), SCALE]):
        result = align.compare(pd, pt, batch)
        assert result.ok, str(result)
    built = convert_batch({"a": [IDS, (SCALE, 3, "x", None)]}, "paddle")
    assert str(built["a"][0].dtype) == "paddle.int64" and str(built["a"][1][0].dtype) == "paddle.float32"
    assert built["a"][1][1:] == (3, "x", None)
    t = convert_batch((paddle.to_tensor(IDS),), "torch")
    assert t[0].dtype == torch.int64 and np.array_equal(t[0].numpy(), IDS)


def test_list_of_batches_one_per_step_or_one_reused(tmp_path):
    assert len(normalize_inputs([{"ids": IDS}, {"ids": IDS}], 2)) == 2
    assert len(normalize_inputs({"ids": IDS}, 3)) == 1  # reused
    assert len(normalize_inputs([IDS, SCALE], 2)) == 1  # a list of arrays is one batch of positional args
    path = tmp_path / "batches.npz"
    fakedata.capture([{"ids": IDS, "scale": SCALE}] * 3, 3, path)
    assert len(normalize_inputs(path, 2)) == 2  # a longer file: its first batches
    with pytest.raises(AlignError, match="inputs holds 2 batches for steps=3"):
        normalize_inputs([{"ids": IDS}, {"ids": IDS}], 3)
    with pytest.raises(AlignError, match="inputs: cannot read the fakedata file"):
        normalize_inputs(str(tmp_path / "missing.npz"), 1)
    with pytest.raises(AlignError, match=r"inputs: unsupported object at inputs\['x'\]: object"):
        convert_batch({"x": object()}, "paddle")


def test_bad_loss_and_optimizer_arguments():
    pd, pt = _pair()
    batch = (IDS, SCALE)
    with pytest.raises(AlignError, match=r"optimizers need loss=\(paddle_loss_fn, torch_loss_fn\)"):
        align.compare(pd, pt, batch, optimizers=(1, 2))
    with pytest.raises(AlignError, match="loss: the torch loss function is not callable"):
        align.compare(pd, pt, batch, loss=(lambda o, b: o["logits"].sum(), 3))
    with pytest.raises(AlignError, match=r"loss: the torch loss function must return a scalar tensor; got float"):
        align.compare(pd, pt, batch, loss=(lambda o, b: o["logits"].sum(), lambda o, b: 1.0))
    with pytest.raises(AlignError, match="train must be True or False"):
        align.compare(pd, pt, batch, train="yes")


RECORD_SIDE = """
import json, sys
class NoTorch:  # torch is not installed here: any import of it fails, and is noted
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            NoTorch.tried.append(name)
            raise ImportError("no torch in this environment")
        return None
sys.meta_path.insert(0, NoTorch())
import paddlefix, numpy as np, paddle
from paddlefix import align

class PaddleNet(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.emb = paddle.nn.Embedding(10, 4)
        self.fc = paddle.nn.Linear(4, 3)
        self.bn = paddle.nn.BatchNorm1D(3, momentum=MOMENTUM)
    def forward(self, ids, scale):
        return {"logits": self.bn(self.fc(self.emb(ids).mean(1) * scale))}

pd = PaddleNet()
opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=pd.parameters())
loss = lambda out, batch: (out["logits"] ** 2).mean()
result = align.compare(pd, RECORD, BATCHES, loss=loss, optimizers=opt, steps=2, transfer=True, train=True)
d = result.first_divergence
print(json.dumps({"ok": result.ok, "torch": "torch" in sys.modules, "tried": NoTorch.tried,
                  "where": None if d is None else [d.phase, d.step, d.paddle_module, d.torch_module],
                  "findings": [[f.paddle, f.label] for f in result.findings], "rows": len(result.rows)}))
"""


def test_record_then_compare_without_torch(tmp_path):
    pt = _TorchNet()
    batches = tmp_path / "batches.npz"
    fakedata.capture([(IDS, SCALE), (IDS[::-1].copy(), SCALE)], 2, batches)
    record = tmp_path / "torch_run.npz"
    opt = torch.optim.Adam(pt.parameters(), lr=0.01)
    trace = align.record(pt, batches, record, loss=lambda out, b: (out["logits"] ** 2).mean(), optimizer=opt, steps=2,
                         train=True)
    assert trace.framework == "torch" and len(trace.steps) == 2 and record.exists()

    def run(momentum: float) -> dict:
        code = RECORD_SIDE.replace("MOMENTUM", str(momentum)).replace("RECORD", repr(str(record)))
        code = code.replace("BATCHES", repr(str(batches)))
        proc = run_python(textwrap.dedent(code))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    good = run(0.9)  # a correct port: train-mode forward, backward and Adam steps agree ...
    assert good["torch"] is False and good["tried"] == []
    assert good["rows"] > 20 and good["findings"] == []
    # ... except Paddle's running variance, updated with the biased batch variance
    assert good["where"] == ["step", 0, "bn._variance", "bn.running_var"]
    bad = run(0.1)  # torch's momentum copied: found from the recorded torch configuration
    assert bad["torch"] is False
    assert bad["findings"] == [["bn", "momentum (torch convention)"]]
    assert bad["where"] == ["step", 0, "bn._mean", "bn.running_mean"]


def test_record_refuses_other_inputs_or_settings(tmp_path):
    pt = _TorchNet()
    record = tmp_path / "run.npz"
    align.record(pt, (IDS, SCALE), record)
    pd, _ = _pair()
    assert align.compare(pd, record, (IDS, SCALE), transfer=True).ok
    with pytest.raises(AlignError, match="inputs: not the batches"):
        align.compare(pd, record, (IDS, SCALE * 2))
    with pytest.raises(AlignError, match=r"compare does not match the record .*train=True \(recorded with False\)"):
        align.compare(pd, record, (IDS, SCALE), train=True)
    with pytest.raises(AlignError, match="torch_model must be a torch.nn.Module"):
        align.record(pd, (IDS, SCALE), record)
    with pytest.raises(AlignError, match="torch_model: cannot read the record"):
        align.compare(pd, str(tmp_path / "nothing.npz"), (IDS, SCALE))


def test_progress_bar_on_a_terminal(monkeypatch):
    import sys

    from paddlefix.align import _compare

    shown: list[int] = []

    class FakeTty:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            shown.append(len(text))
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", FakeTty())
    update, close = _compare._progress(6)
    assert update is not None
    for _ in range(6):
        update()
    close()
    assert shown  # tqdm drew on the terminal
    monkeypatch.undo()
    assert _compare._progress(6)[0] is None  # not a terminal (pytest captures stderr)
    assert _compare._progress(2)[0] is None  # one step: no bar


def test_result_does_not_change_when_the_models_train_on():
    # compare reads the last step's parameters in place; what the result keeps of them is a copy
    pd, pt = _pair()
    opts = (paddle.optimizer.SGD(0.1, parameters=pd.parameters()), torch.optim.SGD(pt.parameters(), lr=0.1))
    loss = (lambda o, b: (o["logits"] ** 2).mean(), lambda o, b: (o["logits"] ** 2).mean())
    result = align.compare(pd, pt, (IDS, SCALE), loss=loss, optimizers=opts)
    assert result.ok, str(result)
    pd_side, pt_side, _ = result._arrays["train_align"]
    kept = {k: v.copy() for k, v in {**pd_side, **{"pt." + k: v for k, v in pt_side.items()}}.items()}
    pd.fc.weight.set_value(pd.fc.weight.numpy() + 1.0)
    with torch.no_grad():
        pt.fc.weight.add_(1.0)
    assert np.array_equal(pd_side["step_0.fc.weight"], kept["step_0.fc.weight"])
    assert np.array_equal(pt_side["step_0.fc.weight"], kept["pt.step_0.fc.weight"])
