"""Names are capped when the spec is validated (issue 23): a 100,000-character layer name
passed validate and trained an epoch, then died writing the checkpoint (zip entry names are at
most 65,535 bytes). The messages quote such a name shortened."""

import pytest
from conftest import TINY
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.nn.layers.base import MAX_NAME
from netspec.spec.model import MAX_SPEC_NAME

SPEC = """
name: {spec}
input: {{shape: [784]}}
layers:
  - {{type: linear, name: {layer}, out_features: 10}}
data: {{dataset: {data}}}
train: {{epochs: 1, batch_size: 128}}
"""


def text(spec="caps", layer="fc", data=TINY):
    return SPEC.format(spec=spec, layer=layer, data=data)


@pytest.mark.parametrize("where", ["layer", "spec"])
def test_a_huge_name_is_refused_by_validate_with_a_short_message(tmp_path, where):
    path = tmp_path / "long.yaml"
    path.write_text(text(**{where: "a" * 100_000}))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output[:500]
    limit = MAX_NAME if where == "layer" else MAX_SPEC_NAME
    assert f"at most {limit}" in result.output
    assert "100,000 characters" in result.output
    assert len(result.output) < 2000  # the name is not echoed whole


def test_a_long_invalid_name_is_quoted_shortened(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(text(layer="ä" * 50_000))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert len(result.output) < 2000


def test_a_name_within_the_cap_trains_and_checkpoints(tmp_path):
    name = "a" * MAX_NAME
    path = tmp_path / "ok.yaml"
    path.write_text(text(layer=name, spec="b" * MAX_SPEC_NAME))
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "r"),
                                      "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    from netspec import checkpoint

    assert f"{name}.weight" in checkpoint.load(tmp_path / "r" / "checkpoints" / "last.npz").state


def test_names_nested_by_blocks_are_capped_too():
    block = "b" * 120
    spec = f"""
input: {{shape: [784]}}
blocks:
  {block}:
    layers:
      - {{type: linear, name: {"c" * 90}, out_features: 10}}
layers:
  - {{block: {block}, name: {"u" * 120}}}
data: {{dataset: custom, num_classes: 10}}
"""
    with pytest.raises(netspec.SpecError, match=f"at most {MAX_NAME}"):
        netspec.loads(spec, "nested.yaml")
