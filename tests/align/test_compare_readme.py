"""The worked example of README "compare: a port, start to finish", as written there."""

from __future__ import annotations

import os
import pathlib

import pytest

pytest.importorskip("paddle")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("paddlenlp")


def test_readme_compare_workflow(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("<!-- align-compare-example -->")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # the example writes batches.npz where it runs
    env: dict[str, object] = {}
    exec(compile(block, "README.md (compare: a port, start to finish)", "exec"), env)  # noqa: S102
    first = env["first"]
    assert (first.phase, first.step, first.paddle_module, first.torch_module) == (  # type: ignore[attr-defined]
        "step", 0, "embeddings.layer_norm.weight", "embeddings.LayerNorm.weight")
    assert "param.name" in first.hint  # type: ignore[attr-defined]
    assert env["result"].ok  # type: ignore[attr-defined]
    assert os.path.exists(tmp_path / "batches.npz")
