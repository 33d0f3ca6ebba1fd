"""align._report / _tracefile / `paddlefix align show`: renderings, saved results, trace files."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import zipfile
from html.parser import HTMLParser

import numpy as np
import pytest

from paddlefix import cli, fakedata
from paddlefix.align._diff import diff_traces
from paddlefix.align._errors import AlignError
from paddlefix.align._report import AlignResult, Divergence, Row
from paddlefix.align._tracefile import load_trace, save_trace

from . import handmade as H


@pytest.fixture(scope="module")
def diverged() -> AlignResult:
    pd, pt, pairing = H.make_traces(optimizer=True, steps=2, side_bugs={"untransposed": "blk.fc1"},
                                    configs={"blk": ({"eps": 1e-5}, {"eps": 1e-12})})
    return diff_traces(pd, pt, pairing)


@pytest.fixture(scope="module")
def aligned() -> AlignResult:
    pd, pt, pairing = H.make_traces(optimizer=True, steps=2)
    return diff_traces(pd, pt, pairing)


def test_text_fits_100_columns_and_marks_the_divergence(diverged):
    text = str(diverged)
    assert all(len(line) <= 100 for line in text.splitlines())
    assert text.startswith("paddlefix.align: DIVERGED at forward, step 0, blk.fc1 (torch: block.fc1)")
    marked = [line for line in text.splitlines() if line.startswith(">>")]
    assert len(marked) == 1 and "blk.fc1" in marked[0]
    assert "untransposed" in text and "eps" in text


def test_long_paths_are_shortened_from_the_left():
    long = "encoder." + ".".join(f"block{i}" for i in range(20)) + ".attention.self.query"
    from paddlefix.align._metrics import tensor_metrics

    met = tensor_metrics(np.ones(3, np.float32), np.zeros(3, np.float32))
    r = AlignResult(rows=[Row("forward", 0, 0, long, long, "Linear", 0, "fail", "output[0]", met)],
                    divergences=[Divergence("forward", 0, long, long, "output[0]", "module", met, "hint " * 40)])
    lines = str(r).splitlines()
    assert all(len(line) <= 100 for line in lines)
    row = [line for line in lines if line.startswith(">>")][0]
    assert "…" in row and "attention.self.query" in row and "encoder.block0" not in row


def test_dict_json_round_trip(diverged, tmp_path):
    path = tmp_path / "r.json"
    diverged.to_json(path)
    back = AlignResult.load(path)
    assert str(back) == str(diverged)
    assert back.to_dict() == json.loads(path.read_text())
    assert back.first_divergence.to_dict() == diverged.first_divergence.to_dict()
    assert back.ok is False and diverged.to_dict()["ok"] is False
    with pytest.raises(AlignError, match="holds no arrays"):
        back.save_reprod_log(tmp_path / "x")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(AlignError, match="not a paddlefix align result"):
        AlignResult.load(bad)


def test_markdown(diverged):
    md = diverged.to_markdown()
    assert md.startswith("### paddlefix.align: DIVERGED")
    assert "**First divergence**: forward, step 0, blk.fc1" in md
    assert "| step | phase | paddle | torch |" in md
    assert md.count("\n| 0 | forward |") == len(H.PAIRS)
    assert "`block.fc1`" in md and "**Configuration and optimizer findings**" in md


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")) or (tag in ("script", "link") and key in a):
                self.external.append(a[key])


def test_html_is_self_contained_with_embedded_plots(diverged, tmp_path):
    path = tmp_path / "r.html"
    page = diverged.to_html(path)
    assert path.read_text(encoding="utf-8") == page
    parser = _Page()
    parser.feed(page)
    assert not parser.external and "style" in parser.tags and "table" in parser.tags
    assert len(parser.images) == 2  # error per module along execution order; loss per step
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "blk.fc1" in page and "untransposed" in page and "class='first'" in page


def test_html_without_loss_has_one_plot(tmp_path):
    pd, pt, pairing = H.make_traces(loss=False)
    parser = _Page()
    parser.feed(diff_traces(pd, pt, pairing).to_html())
    assert len(parser.images) == 1


@pytest.fixture
def reprod_log():
    rl = pytest.importorskip("reprod_log")
    root = logging.getLogger("root")
    handlers = list(root.handlers)
    yield rl
    for h in list(root.handlers):  # reprod_log's init_logger adds handlers on every report()
        if h not in handlers:
            root.removeHandler(h)
            h.close()


@pytest.mark.parametrize("case", ["aligned", "diverged"])
def test_reprod_log_reads_what_we_write(case, aligned, diverged, tmp_path, reprod_log):
    result = aligned if case == "aligned" else diverged
    written = result.save_reprod_log(tmp_path)
    names = sorted(os.path.basename(p) for p in written)
    assert names == sorted(f"{s}_{x}" for s in ("forward", "loss", "bp_align", "train_align")
                           for x in ("paddle.npy", "torch.npy", "diff.log"))
    helper = reprod_log.ReprodDiffHelper()
    for stem in ("forward", "loss", "bp_align", "train_align"):
        pd_info = helper.load_info(str(tmp_path / f"{stem}_paddle.npy"))
        pt_info = helper.load_info(str(tmp_path / f"{stem}_torch.npy"))
        assert set(pd_info) == set(pt_info) and pd_info
        helper.compare_info(pt_info, pd_info)
        out = tmp_path / f"{stem}_check.log"
        with contextlib.redirect_stdout(io.StringIO()):
            helper.report(path=str(out))
        theirs = out.read_text()
        ours = (tmp_path / f"{stem}_diff.log").read_text()
        verdict = "diff check passed" if case == "aligned" else "diff check failed"
        assert verdict in theirs and verdict in ours, stem  # reprod_log's mean check, the same verdict
    if case == "diverged":
        assert "paddlefix elementwise check failed" in (tmp_path / "forward_diff.log").read_text()
    # the gradients are in the Paddle layout under the Paddle name, torch's transposed into it
    bp = helper.load_info(str(tmp_path / "bp_align_torch.npy"))
    assert bp["grad_0.blk.fc2.weight"].shape == (H.D, H.D) and "loss_1" in bp


def test_trace_file_round_trip(tmp_path):
    pd, pt, pairing = H.make_traces(optimizer=True, steps=2, configs={"blk": ({"eps": 1e-5, "k": (3, 3)}, {})})
    st = pd.steps[0]
    g = list(st.grads)
    g[0] = g[0]._replace(grads=[None])
    pd = pd._replace(steps=[st._replace(grads=g, loss=float("nan"))] + pd.steps[1:],
                     optimizer={**pd.optimizer, "betas": (0.9, 0.999), "raw": {"x": None}})
    path = tmp_path / "pd.npz"
    save_trace(pd, path)
    back = load_trace(path)
    assert back.framework == "paddle" and back.versions == pd.versions
    assert back.modules == pd.modules and back.modules[2].config["k"] == (3, 3)
    assert back.optimizer == pd.optimizer
    assert np.isnan(back.steps[0].loss) and back.steps[0].grads[0].grads == [None]
    for s0, s1 in zip(pd.steps, back.steps):
        for e0, e1 in zip(s0.forward, s1.forward):
            assert (e0.path, e0.call) == (e1.path, e1.call)
            for x, y in zip(e0.inputs + e0.outputs, e1.inputs + e1.outputs):
                assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
        assert {k: v.tobytes() for k, v in s0.params_after.items()} == \
            {k: v.tobytes() for k, v in s1.params_after.items()}
    # comparing the loaded trace gives the same result
    pd2, pt2 = load_trace(path), pt
    assert str(diff_traces(pd2, pt2, pairing)) == str(diff_traces(back, pt, pairing))
    with pytest.raises(FileExistsError):
        save_trace(pd, path, overwrite=False)


def test_trace_file_refusals(tmp_path):
    pd, pt, pairing = H.make_traces()
    good = tmp_path / "t.npz"
    save_trace(pd, good)
    # truncated
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid paddlefix align trace"):
        load_trace(cut)
    # a fakedata file
    fd = tmp_path / "batches.npz"
    fakedata.capture([{"x": np.zeros(2)}], 1, fd)
    with pytest.raises(ValueError, match="fakedata"):
        load_trace(fd)
    # a foreign npz and a member missing
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="no __paddlefix_align_trace__ manifest"):
        load_trace(other)
    dropped = tmp_path / "dropped.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(dropped, "w") as zout:
        for item in zin.infolist():
            if item.filename != "a3.npy":
                zout.writestr(item, zin.read(item.filename))
    with pytest.raises(ValueError, match="missing \\['a3'\\]"):
        load_trace(dropped)
    # a newer version
    with np.load(good) as z:
        members = {k: z[k] for k in z.files}
    manifest = json.loads(members["__paddlefix_align_trace__"].tobytes())
    manifest["version"] = 99
    members["__paddlefix_align_trace__"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    newer = tmp_path / "newer.npz"
    np.savez(newer, **members)
    with pytest.raises(ValueError, match="newer paddlefix"):
        load_trace(newer)
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="Trace"):
        save_trace({"framework": "paddle"}, tmp_path / "x.npz")


def test_cli_align_show(diverged, aligned, tmp_path, capsys):
    bad_path, ok_path = tmp_path / "bad.json", tmp_path / "ok.json"
    diverged.to_json(bad_path)
    aligned.to_json(ok_path)
    assert cli.main(["align", "show", str(ok_path)]) == 0
    assert "ALIGNED" in capsys.readouterr().out
    html = tmp_path / "out.html"
    assert cli.main(["align", "show", str(bad_path), "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("paddlefix.align: DIVERGED") and html.exists()
    assert cli.main(["align", "show", str(bad_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_divergence"]["paddle_module"] == "blk.fc1"
    assert cli.main(["align", "show", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert cli.main(["align", "show", str(junk)]) == 2
    assert "not a readable align result" in capsys.readouterr().err
