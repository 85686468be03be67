"""`netspec predict` and the model object: image files, directories, arrays and table rows in;
class names and probabilities out, preprocessed as training was, from the checkpoint alone."""

import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, TINY, cli
from PIL import Image

import netspec
from netspec.data import load_dataset

SHAPES = ROOT / "examples" / "shapes"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """specs/shapes-cnn.yaml trained for a few epochs (the RGB image folder, resized)."""
    out = tmp_path_factory.mktemp("run") / "shapes"
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        result = cli("train", ROOT / "specs" / "shapes-cnn.yaml", "--out", out, "--workers",
                     "1", "--no-progress", "--set", "train.epochs=12")
    assert result.exit_code == 0, result.output
    return out


def test_predict_json_is_one_array_with_names_indices_and_probabilities(shapes_run, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for kind in ("circle", "square", "triangle"):
        for src in sorted((SHAPES / "test" / kind).iterdir())[:2]:
            shutil.copy(src, images / f"{kind}-{src.name}")
    (images / "labels.json").write_text("{}")  # not an image: skipped
    result = cli("predict", "--checkpoint", shapes_run / "checkpoints" / "best.npz", images,
                 "--format", "json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 6 and all(r["file"].startswith(str(images)) for r in rows)
    for r in rows:
        assert set(r) == {"file", "class", "index", "probability", "top_k"}
        assert r["class"] == ["circle", "square", "triangle"][r["index"]]
        assert r["top_k"][0] == {"class": r["class"], "index": r["index"],
                                 "probability": r["probability"]}
        assert len(r["top_k"]) == 2 and r["top_k"][1]["probability"] <= r["probability"]
    right = sum(r["file"].split("/")[-1].startswith(r["class"]) for r in rows)
    assert right >= 4  # a trained network, not chance (2 of 6)


def test_predict_equals_the_networks_own_evaluation(shapes_run):
    """The files, decoded, resized and normalised by predict, score as the test split."""
    model = netspec.load_model(shapes_run, workers=1)
    files = sorted(str(p) for p in (SHAPES / "test").rglob("*") if p.is_file())
    predictions = model.predict(files)
    truth = [["circle", "square", "triangle"].index(f.split("/")[-2]) for f in files]
    accuracy = np.mean([p.index == t for p, t in zip(predictions, truth)])
    evaluation = model.evaluate()
    assert evaluation["samples"] == len(files)
    assert accuracy == pytest.approx(evaluation["accuracy"], abs=1e-12)
    model.close()


def test_predict_table_and_csv_formats_and_a_bad_file(shapes_run, tmp_path):
    good = next((SHAPES / "test" / "circle").glob("*.png"))
    table = cli("predict", "-c", shapes_run, good)
    assert table.exit_code == 0, table.output
    assert any(f"{name} (" in table.output for name in ("circle", "square", "triangle"))
    csv_out = cli("predict", "-c", shapes_run, good, "--format", "csv")
    lines = csv_out.output.splitlines()
    assert lines[0] == "file,class,index,probability" and lines[1].startswith(f"{good},")
    (tmp_path / "bad.png").write_text("plain text")
    bad = cli("predict", "-c", shapes_run, tmp_path / "bad.png", good)
    assert bad.exit_code == 1 and "bad.png: not an image" in bad.output
    assert "nothing was predicted" in bad.output and "Traceback" not in bad.output


def test_predict_on_raw_uint8_arrays_applies_the_stored_normalisation(tmp_path):
    spec = ROOT / "specs" / "lenet.yaml"
    with netspec.Model(spec, [f"data.dataset={TINY}", "train.epochs=1"], workers=1) as model:
        model.fit()
        images = load_dataset(str(TINY)).test.images[:16]
        by_array = model.predict(images)
        paths = []
        for i, img in enumerate(images):
            paths.append(tmp_path / f"{i:02d}.png")
            Image.fromarray(img).save(paths[-1])
        by_file = model.predict(paths)
        assert [p.index for p in by_array] == [p.index for p in by_file]
        assert [p.probability for p in by_array] == pytest.approx(
            [p.probability for p in by_file], rel=1e-6)
        x = model.splits()["test"][0][:16]
        logits = model._trainer.plan.forward(x.reshape(16, -1))
        assert [p.index for p in by_array] == logits.argmax(1).tolist()
        model.save(tmp_path / "m.npz")
    again = netspec.load_model(tmp_path / "m.npz")
    assert [p.index for p in again.predict(images)] == [p.index for p in by_array]
    with pytest.raises(netspec.DataError, match="28x28 images.*--resize bilinear"):
        big = tmp_path / "big.png"
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(big)
        again.predict([big])
    assert again.predict([big], resize="bilinear")[0].file == str(big)


def test_a_table_checkpoint_predicts_csv_rows(tmp_path):
    out = tmp_path / "iris"
    result = cli("train", ROOT / "specs" / "iris-mlp.yaml", "--out", out, "--workers", "1",
                 "--no-progress", "--set", "train.epochs=20")
    assert result.exit_code == 0, result.output
    rows = tmp_path / "rows.csv"
    rows.write_text("petal_width,petal_length,sepal_width,sepal_length\n0.2,1.4,3.5,5.1\n"
                    "2.3,5.4,3.1,6.9\n")  # columns in another order, no label column
    result = cli("predict", "-c", out, rows, "--format", "json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert [r["class"] for r in got] == ["setosa", "virginica"]
    assert [r["file"] for r in got] == [f"{rows}:2", f"{rows}:3"]
    rows.write_text("petal_width,sepal_length\n1,2\n")
    missing = cli("predict", "-c", out, rows)
    assert missing.exit_code == 1 and "no column 'sepal_width', 'petal_length'" in missing.output


def test_the_model_object_trains_as_netspec_train_does(tmp_path):
    overrides = [f"data.dataset={TINY}", "train.epochs=1"]
    result = cli("train", ROOT / "specs" / "lenet.yaml", "--out", tmp_path / "cli", "--workers",
                 "1", "--no-progress", *[a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 0, result.output
    with netspec.Model(ROOT / "specs" / "lenet.yaml", overrides, workers=1) as model:
        history = model.fit(out=tmp_path / "api")
    timing = ("train_seconds", "eval_seconds", "images_per_second")
    cli_records = [json.loads(line) for line in
                   (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(cli_records, history, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == \
            {k: v for k, v in b.items() if k not in timing}
    assert (tmp_path / "api" / "report.html").is_file() and model.run_dir == tmp_path / "api"


def test_the_model_owns_its_worker_processes():
    overrides = [f"data.dataset={TINY}", "train.epochs=1"]
    with netspec.Model(ROOT / "specs" / "lenet.yaml", overrides, workers=2) as model:
        model.fit()
        pool = model._trainer.pool
        assert pool is not None and all(p.is_alive() for p in pool.procs)
        procs = list(pool.procs)
    assert not any(p.is_alive() for p in procs)
    with pytest.raises(netspec.CheckpointError, match="not trained"):
        netspec.Model(ROOT / "specs" / "lenet.yaml").predict(np.zeros((1, 28, 28), np.uint8))


def test_a_network_trained_on_float_values_predicts_float_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 4, 4)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    np.savez(tmp_path / "v.npz", x_train=x, y_train=y)
    spec = tmp_path / "v.yaml"
    spec.write_text(f"input: {{shape: [1, 4, 4]}}\nlayers: [{{type: flatten}}, {{type: linear, "
                    f"out_features: 2}}]\ndata: {{dataset: {tmp_path / 'v.npz'}}}\n"
                    "train: {epochs: 3, batch_size: 8}\n")
    with netspec.Model(spec, workers=1) as model:
        model.fit()
        got = model.predict(x[:5])
        assert len(got) == 5 and all(p.name in ("0", "1") for p in got)
        with pytest.raises(netspec.DataError, match="float values"):
            model.predict([str(next(SHAPES.rglob("*.png")))])


@pytest.mark.parametrize("ending, loss", [("softmax", "probabilities"),
                                          ("log_softmax", "log_probabilities")])
def test_a_net_ending_in_softmax_predicts_its_own_probabilities(tmp_path, ending, loss):
    spec = tmp_path / "soft.yaml"
    spec.write_text((ROOT / "specs" / "lenet.yaml").read_text().replace(
        "  - {type: linear, name: fc3, out_features: 10}\n",
        f"  - {{type: linear, name: fc3, out_features: 10}}\n  - {{type: {ending}}}\n").replace(
        "loss: {type: cross_entropy}", f"loss: {{type: nll, input: {loss}}}"))
    with netspec.Model(spec, [f"data.dataset={TINY}", "train.epochs=1"], workers=1) as model:
        model.fit()
        images = load_dataset(str(TINY)).test.images[:8]
        got = model.predict(images, top_k=3)
        x = model.splits()["test"][0][:8]
        out = model._trainer.plan.forward(x.reshape(8, -1)).astype(np.float64)
    probs = out if ending == "softmax" else np.exp(out)
    assert [p.index for p in got] == probs.argmax(1).tolist()
    assert [p.probability for p in got] == pytest.approx(probs.max(1).tolist(), rel=1e-5)
    assert sum(p for _, _, p in got[0].top_k) <= 1 + 1e-9
    twice = np.exp(probs) / np.exp(probs).sum(1, keepdims=True)  # a softmax applied again
    assert [p.probability for p in got] != pytest.approx(twice.max(1).tolist(), rel=1e-3)
