"""The model-object snippets run as written (from the checkout's root): the README's Python API
section and the first snippet of docs/api.md (the same code, shown in both places)."""

import re

import pytest
from conftest import ROOT


def first_block(path: str, section: str | None) -> str:
    text = (ROOT / path).read_text()
    if section is not None:
        start = text.index(f"## {section}\n")
        text = text[start:text.find("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)[0]


@pytest.mark.parametrize("path, section", [("README.md", "Python API"), ("docs/api.md", None)])
def test_the_model_object_snippet_runs_as_written(path, section, monkeypatch, tmp_path):
    snippet = first_block(path, section)
    assert "netspec.Model(" in snippet and "load_model(" in snippet
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    snippet = snippet.replace('"lenet-tiny.npz"', repr(str(tmp_path / "lenet-tiny.npz")))
    scope: dict = {}
    exec(compile(snippet, path, "exec"), scope)  # noqa: S102
    assert len(scope["history"]) == 1 and scope["scores"]["samples"] == 256
    best = scope["best"]
    assert best.name == str(best.index) and len(best.top_k) == 3
    assert 0 < best.probability <= 1 and best.top_k[0][2] == best.probability
