"""docs/api.md's model-object snippet runs as written (from the checkout's root)."""

import re

from conftest import ROOT


def test_the_model_object_snippet_runs_as_written(monkeypatch, tmp_path):
    text = (ROOT / "docs" / "api.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    snippet = snippet.replace('"lenet-tiny.npz"', repr(str(tmp_path / "lenet-tiny.npz")))
    scope: dict = {}
    exec(compile(snippet, "docs/api.md", "exec"), scope)  # noqa: S102
    assert len(scope["history"]) == 1 and scope["scores"]["samples"] == 256
    best = scope["best"]
    assert best.name == str(best.index) and len(best.top_k) == 3
    assert 0 < best.probability <= 1 and best.top_k[0][2] == best.probability
