"""`netspec validate` from the outside: exit codes, the shape table, error lines, and a fuzz
run asserting that no input, however broken, produces a traceback.

Exit codes: 0 every spec is valid, 1 some spec is wrong, 2 usage error.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from netspec.cli import app

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
CORPUS = sorted((HERE / "bad_specs").glob("*.yaml"))
LENET = ROOT / "specs" / "lenet.yaml"

runner = CliRunner()


def validate(*args):
    result = runner.invoke(app, ["validate", *map(str, args)], prog_name="netspec")
    # CliRunner catches exceptions instead of printing them: anything but a clean exit is a
    # traceback a user would have seen.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r} for {args}")
    assert "Traceback" not in result.output
    return result


def lenet_parameters() -> int:
    """LeNet-5 as in specs/lenet.yaml, counted from the layer definitions."""
    conv = [(1, 6, 5), (6, 16, 5)]  # (in, out, kernel)
    fc = [(16 * 5 * 5, 120), (120, 84), (84, 10)]  # 28 -> conv pad 2 -> pool -> conv -> pool
    return (sum(o * i * k * k + o for i, o, k in conv) + sum(o * i + o for i, o in fc))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_good_spec_exits_0_with_table(path):
    result = validate(path)
    assert result.exit_code == 0, result.output
    assert "output shape" in result.output and "total" in result.output
    assert f"ok {path}" in result.output
    assert "error" not in result.output


def test_lenet_totals():
    result = validate(LENET)
    total = lenet_parameters()
    assert total == 61_706
    assert f"{total:,} parameters" in result.output
    assert "(16, 5, 5)" in result.output and "(400,)" in result.output  # before/after flatten


def test_quiet_prints_only_the_summary():
    result = validate("-q", LENET)
    assert result.exit_code == 0 and "output shape" not in result.output
    assert "61,706 parameters" in result.output


def test_bad_spec_exits_1_with_located_errors():
    path = HERE / "bad_specs" / "multiple_errors.yaml"
    result = validate(path)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert errors[0] == (f"error: {path}:6:20: layers[0] (conv2d).out_channels: "
                         "should be greater than 0, got 0")
    assert errors[1] == f"error: {path}:8:5: layers[2] (conv2d): missing required key 'kernel_size'"
    assert errors[2].startswith(f"error: {path}:12:15: train.optimizer.type: unknown optimizer "
                                "'sgdm' (did you mean 'sgd'?); known: sgd, adam")


def test_good_and_bad_together_exit_1_and_report_both():
    bad = HERE / "bad_specs" / "linear_needs_flatten.yaml"
    result = validate(bad, LENET)
    assert result.exit_code == 1
    assert f"ok {LENET}: 12 layers, 61,706 parameters" in result.output
    assert f"error: {bad}:8:5: layers[3] (linear 'fc1'): " in result.output


def test_error_lines_are_not_wrapped(tmp_path):
    long_name = "n" * 150
    path = tmp_path / "spec.yaml"
    path.write_text(f"input: {{shape: [784]}}\nlayers: [{{type: linear, out_features: 10}}]\n"
                    f"{long_name}: 1\n")
    result = validate(path)
    assert f"error: {path}:3:1: {long_name}: unknown key '{long_name}'" in result.output


@pytest.mark.parametrize("args", [[], ["--bogus", str(LENET)], ["does-not-exist.yaml"],
                                  [str(ROOT / "specs")]],
                         ids=["no-args", "unknown-option", "missing-file", "directory"])
def test_usage_errors_exit_2(args):
    result = validate(*args)
    assert result.exit_code == 2


def test_python_dash_m():
    bad = HERE / "bad_specs" / "unknown_key_typo.yaml"
    proc = subprocess.run([sys.executable, "-m", "netspec", "validate", str(LENET), str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 1
    assert "61,706 parameters" in proc.stdout
    assert (f"{bad}:7:37: layers[1] (conv2d).kernal_size: unknown key 'kernal_size' "
            "(did you mean 'kernel_size'?)") in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- fuzzing: never a traceback


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_file_exits_1_without_traceback(path):
    result = validate(path)
    assert result.exit_code == 1
    assert "error: " in result.output


def garbage() -> dict[str, bytes]:
    """Hostile inputs; fixed seed, so a failure reproduces."""
    rng = np.random.default_rng(0)
    lenet = LENET.read_bytes()
    cases = {
        "binary": rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "nul-bytes": b"\x00" * 64,
        "huge-ints": lenet.replace(b"out_features: 120", b"out_features: " + b"9" * 400),
        "huge-float": lenet.replace(b"lr: 0.02", b"lr: 1e400"),
        "deep-flow": b"layers: " + b"[" * 50_000 + b"]" * 50_000,
        "deep-block": b"".join(b"  " * i + b"- \n" for i in range(300)),
        "unicode": "name: ñet\ninput: {shape: [784]}\nlayers:\n  - {type: линейный}\n  - "
                   "{type: linear, out_features: 10, 名前: 🙂}\n\u202etype: x\n".encode(),
        "unicode-keys-only": "🙂: 😀\n".encode(),
        "markup": b"input: {shape: [784]}\nlayers: [{type: linear, out_features: 10}]\n"
                  b"'x\\[/red] [bold]': 1\n\"y\\\\[/foo]\": 2\n",
        "long-line": b"name: " + b"x" * 200_000 + b"\n",
        "many-keys": b"".join(b"k%d: %d\n" % (i, i) for i in range(5000)),
        "only-bom": b"\xef\xbb\xbf",
        "crlf-garbage": b"input:\r\n\t- [\r\n",
        "anchors": b"a: &a [*a]\n",
        "merge-scalar": b"a: {<<: 3}\n",
        "complex-key": b"? [a, b]\n: 1\n",
        "null-key": b"~: 1\ninput: {shape: [784]}\nlayers: [{type: linear, out_features: 10}]\n",
        "numbers-as-keys": b"1: 2\n2.5: x\ntrue: y\n",
        "zero-shape": lenet.replace(b"[1, 28, 28]", b"[0, 28, 28]"),
        "negative-shape": lenet.replace(b"[1, 28, 28]", b"[-1, 28, 28]"),
        "empty-shape": lenet.replace(b"[1, 28, 28]", b"[]"),
        "shape-of-strings": lenet.replace(b"[1, 28, 28]", b"[a, b, c]"),
        "dates": lenet.replace(b"name: lenet", b"name: 2024-01-01"),
        "layer-list-of-lists": b"input: {shape: [784]}\nlayers: [[1, 2], [3]]\n",
        "type-is-a-list": b"input: {shape: [784]}\nlayers: [{type: [linear]}]\n",
        "type-is-null": b"input: {shape: [784]}\nlayers: [{type: null}]\n",
        "init-list": lenet.replace(b"weight: kaiming_normal", b"weight: [1, 2]"),
        "huge-kernel": lenet.replace(b"kernel_size: 5, padding: 2", b"kernel_size: 99999999999"),
        "huge-padding": lenet.replace(b"padding: 2", b"padding: 99999999999999999999"),
        "stride-zero": lenet.replace(b"padding: 2", b"padding: 2, stride: 0"),
    }
    # Random damage to a good spec: deleted, duplicated and swapped lines, flipped bytes.
    lines = lenet.splitlines(keepends=True)
    for i in range(40):
        damaged = list(lines)
        for _ in range(int(rng.integers(1, 4))):
            j = int(rng.integers(len(damaged)))
            action = int(rng.integers(4))
            if action == 0:
                del damaged[j]
            elif action == 1:
                damaged.insert(j, damaged[int(rng.integers(len(damaged)))])
            elif action == 2:
                k = int(rng.integers(len(damaged)))
                damaged[j], damaged[k] = damaged[k], damaged[j]
            else:
                line = bytearray(damaged[j])
                if line:
                    junk = list(b" :-[]{},#&*!'\"\t0x")
                    line[int(rng.integers(len(line)))] = int(rng.choice(junk))
                damaged[j] = bytes(line)
        cases[f"damaged-{i}"] = b"".join(damaged)
    return cases


GARBAGE = garbage()


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_never_gives_a_traceback(name, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(GARBAGE[name])
    result = validate(path)
    assert result.exit_code in (0, 1, 2)
    if result.exit_code == 1:
        assert "error: " in result.output


def test_every_error_line_reads_file_line_col():
    """Across the corpus, each error is `FILE:LINE:COL: ...` (or `FILE: ...` without a line)."""
    for path in CORPUS:
        result = validate(path)
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert errors, path.name
        for line in errors:
            assert re.match(rf"error: {re.escape(str(path))}(:\d+:\d+)?: \S", line), line
