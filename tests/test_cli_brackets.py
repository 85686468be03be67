"""Every command with paths holding `[`, `]`, spaces and Unicode (issue 23): rich must print
them literally (no MarkupError, no lost brackets), and every file lands at the exact name."""

import os
import shutil

import pytest
from conftest import TINY, cli

FOLDER = "d[/]x [red]ü"
SPEC_NAME = "s[abc] ü.yaml"
DATA = "data[/] ü"
SPEC = """
name: brackets
seed: 1
input: {{shape: [784]}}
layers:
  - {{type: linear, name: fc1, out_features: 8}}
  - {{type: relu}}
  - {{type: linear, name: fc2, out_features: 10}}
data: {{dataset: "{data}"}}
train: {{epochs: 1, batch_size: 128}}
"""


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A working directory holding FOLDER/SPEC_NAME, whose dataset is a copy of the tiny
    fixture in DATA; the tests run in it, with relative paths (so that they fit one line)."""
    root = tmp_path_factory.mktemp("brackets")
    shutil.copytree(TINY, root / DATA)
    (root / FOLDER).mkdir(parents=True)
    (root / FOLDER / SPEC_NAME).write_text(SPEC.format(data=root / DATA))
    old = os.getcwd()
    os.chdir(root)
    yield root
    os.chdir(old)


SPEC_PATH = f"{FOLDER}/{SPEC_NAME}"
RUN = "run2[/]x ü"


def test_validate(place):
    result = cli("validate", SPEC_PATH)
    assert result.exit_code == 0, result.output
    assert f"ok {SPEC_PATH}:" in result.output


@pytest.mark.parametrize("name", ["out/[/]x[red].svg", "out/[abc]x ü.svg", "out/\\[b]x.png"])
def test_draw(place, name):
    result = cli("draw", SPEC_PATH, "-o", name)
    assert result.exit_code == 0, result.output
    assert f"wrote {name} (" in result.output
    assert (place / name).is_file()


def test_schema(place):
    result = cli("schema", "-o", "[abc] ü.json")
    assert result.exit_code == 0, result.output
    assert "wrote [abc] ü.json" in result.output and (place / "[abc] ü.json").is_file()


def test_gradcheck(place):
    result = cli("gradcheck", SPEC_PATH, "--no-layers")
    assert result.exit_code == 0, result.output
    assert f"gradcheck {SPEC_PATH}" in result.output and f"passed {SPEC_PATH}:" in result.output


def test_bench(place):
    result = cli("bench", SPEC_PATH, "--repeats", "1")
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def trained(place):
    result = cli("train", SPEC_PATH, "--out", RUN, "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    return result


def test_train(place, trained):
    text = trained.output
    assert f"run directory: {RUN}" in text and f"done: {RUN} (" in text
    assert f"from {place / DATA} (" in text
    assert (place / RUN / "checkpoints" / "best.npz").is_file()


def test_report(place, trained):
    result = cli("report", RUN, "--no-eval")
    assert result.exit_code == 0, result.output
    assert f"wrote {RUN}/report.html" in result.output


def test_eval_with_a_report(place, trained):
    ckpt = f"{RUN}/checkpoints/best.npz"
    result = cli("eval", "-c", ckpt, "--workers", "1", "--report", "rep[/]x ü")
    assert result.exit_code == 0, result.output
    assert f"{ckpt} on test" in flat(result.output)
    assert "report: rep[/]x ü/eval-report.html" in result.output
    assert (place / "rep[/]x ü" / "eval-report.html").is_file()


def test_export(place, trained):
    pytest.importorskip("onnx")
    result = cli("export", "-c", f"{RUN}/checkpoints/best.npz", "-o", "m[/]x ü.onnx")
    assert result.exit_code == 0, result.output
    assert "wrote m[/]x ü.onnx" in result.output and (place / "m[/]x ü.onnx").is_file()


def test_sweep(place):
    pytest.importorskip("distributed")
    result = cli("sweep", SPEC_PATH, "-p", "train.batch_size=64,128", "--out", "sw[/]x ü",
                 "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "wrote sw[/]x ü/summary.csv" in result.output


@pytest.mark.parametrize("argv", [
    ["train", SPEC_PATH, "--out", "afile[/]x", "--no-progress"],
    ["train", "--resume", "[red]nodir[/]", "--no-progress"],
    ["validate", "missing[/] ü.yaml"],
    ["export", SPEC_PATH, "-o", "[/]dir/"],
    ["eval", SPEC_PATH, "-c", "afile[/]x"],
])
def test_errors_name_bracketed_paths_literally(place, argv):
    (place / "afile[").mkdir(exist_ok=True)
    (place / "afile[/]x").write_text("x")
    result = cli(*argv)
    assert result.exit_code in (1, 2), result.output
    shown = next(a for a in argv if "[" in a and a != SPEC_PATH)
    assert shown in flat(result.output).replace("│ ", "").replace(" │", "") or \
        shown in result.output, result.output
