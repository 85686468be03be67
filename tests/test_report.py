"""report.html and eval-report.html, parsed with html.parser and checked against the run."""

import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import TINY, cli, tiny_conv_spec

import netspec
from netspec import checkpoint
from netspec.train.run import Run
from netspec.train.trainer import Trainer
from netspec.viz.draw import shape_text
from netspec.viz.report import png_gray, write_report

SPEC = tiny_conv_spec("tiny-report", 1, fc=(),
                      schedule="{type: step, step_size: 1, gamma: 0.5}")


class Page(HTMLParser):
    """Tags with attributes, text per section id, and raw SVG blocks."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text, self.section = [], {}, None
        self.feed(text)
        self.svgs = re.findall(r"<svg .*?</svg>", text, flags=re.DOTALL)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = attrs.get("id")

    def handle_data(self, data):
        self.text[self.section] = self.text.get(self.section, "") + data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-epoch run, trained through the CLI (which writes report.html)."""
    tmp = tmp_path_factory.mktemp("report")
    spec_path = tmp / "tiny.yaml"
    spec_path.write_text(SPEC)
    result = cli("train", spec_path, "--out", tmp / "run", "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_train_writes_a_self_contained_report(run_dir):
    text = (run_dir / "report.html").read_text()
    page = Page(text)
    assert not any(tag == "script" for tag, _ in page.tags)
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not value or value.startswith("data:image/png;base64,"), (tag, key, value)
        if tag == "link":
            raise AssertionError(f"external resource {attrs}")
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "@import" not in text and "url(" not in text


def test_summary_matches_the_metrics(run_dir):
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    page = Page((run_dir / "report.html").read_text())
    summary = page.text["summary"]
    best = max(history, key=lambda h: h["test_acc"])
    assert f"{100 * best['test_acc']:.2f}% test (epoch {best['epoch']})" in summary
    assert f"{100 * history[-1]['test_acc']:.2f}% test" in summary
    assert "finished" in summary and "2 of 2" in summary
    train_s = sum(h["train_seconds"] for h in history)
    assert f"{train_s:.1f} s training" in summary
    machine = json.loads((run_dir / "machine.json").read_text())
    assert machine["cores"] and machine["cpu"] in summary


def test_curves_hold_every_epoch(run_dir):
    page = Page((run_dir / "report.html").read_text())
    charts = [ET.fromstring(s) for s in page.svgs if 'data-series="' in s]
    assert [c.get("data-title") for c in charts] == ["loss", "accuracy", "learning rate"]
    for chart in charts:
        for series in chart.iter("{http://www.w3.org/2000/svg}g"):
            if series.get("class") == "series":
                assert series.get("data-points") == "2"
    assert charts[0].get("data-series") == "train,test"


def test_diagram_and_resolved_spec(run_dir):
    spec = netspec.load(run_dir / "spec.yaml")
    page = Page((run_dir / "report.html").read_text())
    diagram = ET.fromstring(next(s for s in page.svgs if "data-macs" in s))
    names = [g.get("data-name") for g in diagram.iter("{http://www.w3.org/2000/svg}g")
             if g.get("class") == "node"]
    assert names == ["input", *(i.name for i in spec.infos), "output"]
    labels = [t.text for t in diagram.iter("{http://www.w3.org/2000/svg}text")
              if t.get("class") == "edge-label"]
    assert labels[1:] == [shape_text(i.out_shape) for i in spec.infos]
    assert (run_dir / "spec.yaml").read_text() in page.text["network"]


def test_confusion_matrix_and_worst_images_match_an_independent_eval(run_dir, tiny_splits):
    spec = netspec.load(run_dir / "spec.yaml")
    state = checkpoint.load(run_dir / "checkpoints" / "best.npz").state
    trainer = Trainer(spec, tiny_splits)
    trainer.plan.load_state_dict(state)
    x, y = tiny_splits["test"]
    ev = trainer.evaluate(x, y)  # the trainer's own eval path (eval_slice)
    page = Page((run_dir / "report.html").read_text())
    matrix = ET.fromstring(next(s for s in page.svgs if "data-classes" in s))
    assert int(matrix.get("data-total")) == len(y)
    assert int(matrix.get("data-correct")) == int(np.sum(ev.predictions == y))
    cells = {(int(g.get("data-true")), int(g.get("data-pred"))): int(g.get("data-count"))
             for g in matrix.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "cell"}
    for (t, p), count in cells.items():
        assert count == int(np.sum((y == t) & (ev.predictions == p)))
    # the grid: the 24 highest cross-entropy losses, computed here from the logits
    logits = trainer.plan.forward(x).astype(np.float64)
    z = logits - logits.max(1, keepdims=True)
    losses = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    shown = [(int(a["data-index"]), int(a["data-true"]), int(a["data-pred"]))
             for tag, a in page.tags if tag == "figure" and a.get("class") == "sample"]
    assert len(shown) == 24
    assert {i for i, _, _ in shown} == set(np.argsort(-losses)[:24].tolist())
    assert all(t == y[i] and p == ev.predictions[i] for i, t, p in shown)
    assert f"accuracy {100 * ev.accuracy:.2f}%" in page.text["confusion"]


def test_report_of_an_unfinished_run_without_data(tmp_path, tiny_splits):
    spec = netspec.loads(SPEC.replace("epochs: 2", "epochs: 4"), "tiny.yaml")
    run = Run(spec, tiny_splits, tmp_path / "run")
    run.start()
    run.fit(until=1)
    run.trainer.close()
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr"')  # a line being written right now
    page = Page(write_report(tmp_path / "run").read_text())
    assert "unfinished: 1 of 4 epochs" in page.text["summary"]
    assert "No test data" in page.text["eval"]
    result = cli("report", tmp_path / "run", "--data-dir", TINY)  # the CLI finds the data
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "run" / "report.html").read_text())
    assert "confusion" in page.text and "worst" in page.text


def test_report_refuses_a_foreign_file_and_a_non_run(tmp_path, run_dir):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").write_text("<html>my own notes</html>")
    result = cli("report", copy, "--no-eval")
    assert result.exit_code == 1 and "not written by netspec" in result.output
    assert (copy / "report.html").read_text() == "<html>my own notes</html>"
    result = cli("report", tmp_path)
    assert result.exit_code == 1 and "not a run directory" in result.output


def test_eval_report(tmp_path, run_dir):
    result = cli("eval", "--checkpoint", run_dir / "checkpoints" / "last.npz", "--workers", "1",
                 "--report", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "ev" / "eval-report.html").read_text())
    assert "last.npz" in page.text["summary"] and "256 images" in page.text["summary"]
    assert any('data-classes="10"' in s for s in page.svgs)
    assert sum(1 for tag, a in page.tags if a.get("class") == "sample") == 24


def test_png_encoder_round_trips():
    from PIL import Image

    img = (np.arange(28 * 20) % 256).astype(np.uint8).reshape(20, 28)
    back = np.asarray(Image.open(io.BytesIO(png_gray(img))))
    assert back.shape == (20, 28) and np.array_equal(back, img)


def test_the_committed_example_report_is_self_contained():
    from conftest import ROOT

    text = (ROOT / "examples" / "lenet-report.html").read_text()
    page = Page(text)
    assert not any(tag in ("script", "link", "iframe") for tag, _ in page.tags)
    assert all((a.get("src") or "data:").startswith("data:") for _, a in page.tags)
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert sum(1 for _, a in page.tags if a.get("class") == "sample") == 24


def test_report_of_a_run_with_no_epoch_yet_and_a_damaged_checkpoint(tmp_path, tiny_splits):
    spec = netspec.loads(SPEC, "tiny.yaml")
    run = Run(spec, tiny_splits, tmp_path / "run")
    run.start()
    page = Page(write_report(tmp_path / "run", tiny_splits).read_text())
    assert "unfinished: 0 of 2 epochs" in page.text["summary"]
    assert "No checkpoint yet" in page.text["eval"]
    assert page.text["curves"].count("no data yet") == 3
    (tmp_path / "run" / "checkpoints" / "last.npz").write_bytes(b"PK\x03\x04 torn")
    page = Page(write_report(tmp_path / "run", tiny_splits).read_text())
    assert "last.npz is corrupt" in page.text["eval"]
    run.trainer.close()


def test_eval_report_refuses_a_foreign_file(tmp_path, run_dir):
    (tmp_path / "eval-report.html").write_text("mine")
    result = cli("eval", "--checkpoint", run_dir / "checkpoints" / "last.npz", "--workers", "1",
                 "--report", tmp_path)
    assert result.exit_code == 1 and "not written by netspec" in result.output
    assert (tmp_path / "eval-report.html").read_text() == "mine"


def test_report_refuses_a_users_directory_that_holds_a_spec(tmp_path):
    # a spec.yaml alone made it a "run": the report and machine.json were written beside it
    (tmp_path / "spec.yaml").write_text(SPEC)
    result = cli("report", tmp_path, "--no-eval")
    assert result.exit_code == 1 and "not a run directory" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
