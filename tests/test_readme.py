"""The README's Python API snippet runs as written (from the checkout's root)."""

import re

from conftest import ROOT


def python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_python_api_snippet_runs_as_written(monkeypatch):
    [snippet] = python_blocks("Python API")
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(snippet, "README.md (Python API)", "exec"), scope)  # noqa: S102
    assert scope["logits"].shape == (8, 10)
    assert set(scope["plan"].grads) == set(scope["plan"].params)
    assert scope["predicted"].shape == (4,)
    assert abs(float(scope["splits"]["train"][0].mean())) < 1e-3  # standardised
