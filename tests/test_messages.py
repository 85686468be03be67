"""Messages that used to mislead: each names the real rule and the fix."""

import re

import pytest

import netspec

BASE = """
name: m
input: {shape: [1, 28, 28]}
layers:
  - {type: conv2d, name: conv1, out_channels: 4, kernel_size: 3}
  - {type: maxpool2d, kernel_size: 2}
  - {type: flatten}
  - {type: linear, name: fc, out_features: 10}
"""


def problems(*overrides, text=BASE):
    with pytest.raises(netspec.SpecError) as info:
        netspec.loads(text, "m.yaml", list(overrides))
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("value", ["1e12", "1.0e+300"])
def test_a_huge_float_size_is_too_large_not_a_whole_number_problem(value):
    [msg] = problems(f"layers[0].out_channels={value}")
    assert "too large" in msg and "2,147,483,647" in msg
    assert "whole number, got" not in msg


def test_a_whole_float_size_still_says_write_the_integer():
    [msg] = problems("layers[0].out_channels=8.0")
    assert "write 8" in msg


@pytest.mark.parametrize("key, name", [("layers[0].name", "cönv"), ("name", "réseau")])
def test_a_unicode_name_is_told_the_rule_is_ascii(key, name):
    [msg] = problems(f"{key}={name}")
    assert "ASCII letters" in msg and "is not ASCII" in msg


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_a_spec_name_that_is_a_dot_folder_is_refused(name):
    """The name makes folders (runs/<name>-<time>, sweeps/<name>): '..' would be the parent."""
    [msg] = problems(f"name={name}")
    assert f"'{name}' is not a valid name" in msg and "not starting with '.'" in msg


def test_channels_last_input_is_named_with_the_fix_before_the_layer_it_breaks():
    text = BASE.replace("[1, 28, 28]", "[28, 28, 1]") + "data: {dataset: /no/such/dir}\n"
    msgs = problems(text=text)
    assert "input.shape is [C, H, W]" in msgs[0] and "did you mean [1, 28, 28]?" in msgs[0]


def test_channels_last_input_for_mnist_is_an_error_even_when_the_sizes_match():
    text = BASE.replace("[1, 28, 28]", "[28, 28, 1]").replace(
        "  - {type: conv2d, name: conv1, out_channels: 4, kernel_size: 3}\n"
        "  - {type: maxpool2d, kernel_size: 2}\n", "")
    [msg] = problems(text=text)
    assert "did you mean [1, 28, 28]?" in msg


@pytest.mark.parametrize("value, advice", [("1.0", "write 1 (no point) for 1 sample"),
                                           ("5000.0", "write 5000 (no point)"),
                                           ("2.5", "must be below 1")])
def test_validation_with_a_point_is_a_fraction_and_must_be_below_1(value, advice):
    [msg] = problems(f"data.validation={value}")
    assert "data.validation" in msg and advice in msg


@pytest.mark.parametrize("value, expected", [("1", 1), ("0.1", 0.1), ("0", 0.0)])
def test_validation_counts_and_fractions_are_kept_apart(value, expected):
    spec = netspec.loads(BASE, "m.yaml", [f"data.validation={value}"])
    assert spec.data.validation == expected and type(spec.data.validation) is type(expected)


def test_a_non_number_validation_is_one_problem():
    [msg] = problems("data.validation=abc")
    assert "should be a valid number" in msg


def test_piped_tables_are_not_cut_at_80_columns():
    from conftest import ROOT
    from typer.testing import CliRunner

    from netspec.cli import app

    result = CliRunner().invoke(app, ["gradcheck", str(ROOT / "specs" / "mlp.yaml")])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert "worst rel err" in result.output  # the header on one line
    errors = [line.split("│")[8].strip() for line in result.output.splitlines()
              if line.startswith("│ network")]
    assert errors and all(re.fullmatch(r"\d\.\de[-+]\d\d", e) for e in errors), errors


def test_channels_last_input_from_set_is_still_named_first():
    # --set problems sort after the file's, which put the pooling layer's message first
    msgs = problems("input.shape=[28, 28, 1]")
    assert msgs[0].startswith("--set input.shape=[28, 28, 1]: input.shape: ")
    assert "did you mean [1, 28, 28]?" in msgs[0]
    assert any("conv2d" in m for m in msgs[1:])
