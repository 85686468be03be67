"""The resolved spec (spec.yaml of a run, the report's spec, the ONNX metadata) writes every
default out (issue 23): each layer's name and init scheme, and defaults.init; no `name: null`,
no `init: {weight: null}`. It loads back to the same network, and runs from before resume."""

import numpy as np
import pytest
import yaml
from conftest import SPECS, TINY
from typer.testing import CliRunner

import netspec
from netspec.cli import app


def nulls(data, path=""):
    """Key paths holding null."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in nulls(v, f"{path}.{k}" if path else k)]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in nulls(v, f"{path}[{i}]")]
    return [path] if data is None else []


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_default_is_written_out_and_loads_to_the_same_network(path):
    spec = netspec.load(path)
    text = spec.to_yaml()
    data = yaml.safe_load(text)
    assert [p for p in nulls(data) if p != "data.num_classes"] == []
    assert [layer["name"] for layer in data["layers"]] == [i.name for i in spec.infos]
    for layer in data["layers"]:
        if "init" in layer:
            assert layer["init"]["weight"]["type"] and layer["init"]["bias"]["type"]
    again = netspec.loads(text, "resolved.yaml")
    assert again.to_yaml() == text  # a fixed point
    assert again.digest() == spec.digest()
    a, b = (netspec.compile(s, "float64") for s in (spec, again))
    assert a.params.keys() == b.params.keys()
    for key in a.params:  # same init, bit for bit
        np.testing.assert_array_equal(a.params[key], b.params[key])


SMALL = f"""
name: small
seed: 2
input: {{shape: [784]}}
defaults: {{init: {{weight: xavier_uniform}}}}
layers:
  - {{type: linear, out_features: 8}}
  - {{type: relu}}
  - {{type: linear, out_features: 10, init: {{bias: {{type: constant, value: 0.1}}}}}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 128}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resolved")
    (tmp / "small.yaml").write_text(SMALL)
    result = CliRunner().invoke(app, ["train", str(tmp / "small.yaml"), "--out",
                                      str(tmp / "run"), "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    return tmp


def test_the_runs_spec_and_report_write_every_default(run):
    data = yaml.safe_load((run / "run" / "spec.yaml").read_text())
    assert data["layers"][0]["name"] == "linear0"
    assert data["layers"][0]["init"] == {"weight": {"type": "xavier_uniform", "gain": 1.0},
                                         "bias": {"type": "zeros"}}
    assert data["layers"][2]["init"]["bias"] == {"type": "constant", "value": 0.1}
    assert data["defaults"]["init"]["bias"] == {"type": "zeros"}
    html = (run / "run" / "report.html").read_text()
    assert "name: null" not in html and "weight: null" not in html and "init: null" not in html


def test_the_spec_as_written_still_evaluates_its_checkpoint(run):
    result = CliRunner().invoke(app, ["eval", str(run / "small.yaml"), "-c",
                                      str(run / "run" / "checkpoints" / "best.npz"),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output  # no --force: the same network


def test_a_run_resumes_from_its_spec_yaml(run):
    result = CliRunner().invoke(app, ["train", "--resume", str(run / "run"), "--set",
                                      "train.epochs=2", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output


def test_a_checkpoint_that_stored_the_spec_unresolved_resumes(tmp_path, tiny_splits):
    """Runs made before the spec was written resolved stored its plain dump and its digest."""
    from netspec import checkpoint
    from netspec.train.run import EXCLUDED_FROM_RESUME_CHECK, Run

    spec = netspec.loads(SMALL, "small.yaml")
    first = Run(spec, tiny_splits, tmp_path / "r")
    first.start()
    assert first.fit()
    ckpt = checkpoint.load(first.last_path)
    plain = spec.model_dump(mode="json")
    import hashlib
    import json

    trimmed = json.loads(json.dumps(plain))
    trimmed["train"].pop("epochs")
    meta = {**ckpt.meta, "spec": plain, "spec_sha256": hashlib.sha256(
        json.dumps(trimmed, sort_keys=True).encode()).hexdigest()}
    checkpoint.save(first.last_path, ckpt.state, ckpt.optimizer, meta)
    assert meta["spec_sha256"] != spec.digest(EXCLUDED_FROM_RESUME_CHECK)
    again = Run(netspec.loads(SMALL, "small.yaml", ["train.epochs=2"]), tiny_splits,
                tmp_path / "r")
    again.resume()
    assert again.fit()
    changed = Run(netspec.loads(SMALL, "small.yaml", ["train.epochs=3", "seed=9"]),
                  tiny_splits, tmp_path / "r")
    with pytest.raises(netspec.NetspecError, match="seed"):
        changed.resume()  # a real change is still refused
