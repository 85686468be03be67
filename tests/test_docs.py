"""The prose stays true to the tree: every relative link in README.md, docs/ and
benchmarks/README.md resolves (files and #anchors), every full spec shown in them loads, the
layout page lists the stages tests/test_layout.py enforces, .ci/run runs the README's test
command, and the prose says what the code does rather than its history."""

import re
from pathlib import Path

import pytest
from conftest import ROOT
from test_layout import STAGES

import netspec

PROSE = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "docs").glob("*.md")])
PAGES = [*PROSE, ROOT / "CHANGELOG.md"]  # the changelog is history by design
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup and punctuation dropped, lower
    case, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def test_the_pages_exist():
    for page in PAGES:
        assert page.is_file(), page
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"spec.md", "cli.md", "onnx.md", "sweeps.md", "pictures.md", "gradcheck.md",
            "results.md", "performance.md", "adding-a-layer.md", "layout.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path):
    """Negative control: a missing file and a missing anchor are both reported."""
    page = tmp_path / "page.md"
    page.write_text("# Title: `one` two\n\n[a](gone.md) [b](#title-one-two) [c](#nope)\n"
                    "```\n[not a link](skipped.md)\n```\n")
    assert links(page) == ["gone.md", "#title-one-two", "#nope"]
    assert anchors(page) == {"title-one-two"}
    assert slug("A real sweep: LeNet's learning rate") == "a-real-sweep-lenets-learning-rate"


def test_every_spec_shown_loads():
    """A YAML block with `input:` and `layers:` is a whole spec: it must validate."""
    shown = 0
    for page in PAGES:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"),
                                re.DOTALL):
            if re.search(r"^input:", block, re.MULTILINE) and "\nlayers:" in block:
                netspec.loads(block, f"{page.name} (yaml block)")
                shown += 1
    assert shown >= 2  # the README's LeNet and docs/spec.md's graph


@pytest.mark.parametrize("page", PROSE, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_are_python(page):
    """Blocks not run by a test (they need a checkpoint, a cluster, a file) still parse."""
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"),
                                         re.DOTALL)):
        compile(block, f"{page.name} python block {i}", "exec")


def test_the_readme_spec_is_specs_lenet():
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```",
                                     (ROOT / "README.md").read_text(), re.DOTALL)
               if "\nlayers:" in b]
    shown = netspec.loads(block, "README.md")
    real = netspec.load(ROOT / "specs" / "lenet.yaml")
    assert shown.model_dump() == real.model_dump()


def test_layout_page_lists_the_enforced_stages():
    text = (ROOT / "docs" / "layout.md").read_text()
    table = text[text.index("## The stages"):text.index("## Beside the package")]
    rows = [tuple(re.findall(r"`(netspec[\w.]*)`", line.split("|")[2]))
            for line in table.splitlines() if line.startswith("| ") and "`netspec" in line]
    assert rows == [tuple(stage) for stage in STAGES]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "\npython -m pytest -q\n" in readme
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == "python -m pytest -q"


HISTORY = re.compile(r"(^|[^a-z])sessions?([^a-z]|$)|previous code", re.IGNORECASE)


@pytest.mark.parametrize("page", PROSE, ids=lambda p: str(p.relative_to(ROOT)))
def test_prose_says_what_the_code_does_not_its_history(page):
    hits = [f"{i}: {line.strip()}" for i, line in
            enumerate(page.read_text(encoding="utf-8").splitlines(), 1) if HISTORY.search(line)]
    assert not hits, f"{page.relative_to(ROOT)}: " + "; ".join(hits)


def test_readme_fits_on_a_few_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
