"""Data and runs together: relative data paths resolve against the spec's folder, --data-dir
takes a directory of other IDX files, a run remembers where its data came from, input.shape is
checked against the data (located), and the class names travel with the run."""

import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, TINY, cli, tiny_conv_spec
from PIL import Image

import netspec
from netspec import checkpoint
from netspec.errors import SpecError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NETSPEC_DATA", raising=False)


def test_a_relative_dataset_is_resolved_against_the_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "specs").mkdir(parents=True)
    shutil.copytree(TINY, tmp_path / "project" / "data")
    spec = tmp_path / "project" / "specs" / "net.yaml"
    spec.write_text(tiny_conv_spec().replace(f"dataset: {TINY}", "dataset: ../data"))
    monkeypatch.chdir(tmp_path)  # anywhere else
    loaded = netspec.load(spec)
    assert loaded.data.dataset == str(tmp_path / "project" / "data")
    assert cli("validate", spec).exit_code == 0
    monkeypatch.chdir(tmp_path / "project")  # --set is relative to the working directory
    assert netspec.load(spec, ["data.dataset=data"]).data.dataset == str(tmp_path / "project"
                                                                         / "data")
    assert netspec.loads("input: {shape: [4]}\nlayers: [{type: linear, out_features: 2}]\n"
                         "data: {dataset: rel}").data.dataset == "rel"  # text: left as it is


def test_validate_warns_of_a_missing_dataset_path_where_it_is_written(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(tiny_conv_spec().replace(f"dataset: {TINY}", "dataset: nowhere"))
    result = cli("validate", spec)
    assert result.exit_code == 0  # the network is valid; its data is not there (yet)
    assert f"warning: {spec}:13:8:" in result.output
    assert f"data.dataset: no such file or directory: {tmp_path / 'nowhere'}" in result.output
    assert "resolved against the spec's folder" in result.output


def test_data_dir_takes_a_directory_of_other_idx_files(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(tiny_conv_spec(epochs=1).replace(f"dataset: {TINY}", "dataset: mnist"))
    result = cli("train", spec, "--data-dir", TINY, "--out", tmp_path / "run", "--workers", "1",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "does not hold the published mnist files" in result.output
    broken = tmp_path / "mixed"  # one file of the real set wrong would be corruption: refused
    shutil.copytree(TINY, broken)
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"\0" * 20)
    bad = cli("train", spec, "--data-dir", broken, "--out", tmp_path / "run2", "--workers", "1")
    assert bad.exit_code == 1 and "Traceback" not in bad.output


def test_report_finds_the_runs_data_without_data_dir(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(tiny_conv_spec(epochs=1).replace(f"dataset: {TINY}", "dataset: mnist"))
    out = tmp_path / "run"
    assert cli("train", spec, "--data-dir", TINY, "--out", out, "--workers", "1",
               "--no-progress").exit_code == 0
    record = json.loads((out / "data.json").read_text())
    assert record["path"] == str(TINY) and record["kind"] == "idx"
    (out / "report.html").unlink()
    result = cli("report", out)
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "No test data was given" not in html and "id=confusion" in html


def rgb_folder(root, side=12):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root


SPEC = """name: pets
input: {shape: [3, 12, 12]}
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3}
  - {type: relu}
  - {type: flatten}
  - {type: linear, out_features: 2}
data: {dataset: DATA}
train: {epochs: 1, batch_size: 8}
"""


def test_input_shape_is_checked_against_the_images_before_decoding(tmp_path, monkeypatch):
    from netspec.train.inputs import load_splits

    data = rgb_folder(tmp_path / "pets")
    spec_path = tmp_path / "pets.yaml"
    spec_path.write_text(SPEC.replace("DATA", str(data)))
    from netspec.data import cache

    def no_decoding(*args, **kw):
        raise AssertionError("decoded before the shape check")

    monkeypatch.setattr(cache, "decode_into_cache", no_decoding)
    with pytest.raises(SpecError) as e:
        load_splits(netspec.load(spec_path, ["input.shape=[1, 12, 12]"]))
    [problem] = e.value.problems
    assert problem.path == "input.shape" and problem.file == "--set input.shape=[1, 12, 12]"
    assert "3x12x12 (C x H x W: RGB, 12x12 pixels)" in problem.message
    assert "set input.shape to [3, 12, 12], or set data.image.color: grayscale" in \
        problem.message
    with pytest.raises(SpecError, match=r"data\.image\.resize: bilinear"):
        load_splits(netspec.load(spec_path, ["input.shape=[3, 16, 16]"]))


def test_class_names_travel_with_the_run(tmp_path):
    data = rgb_folder(tmp_path / "pets")
    spec_path = tmp_path / "pets.yaml"
    spec_path.write_text(SPEC.replace("DATA", str(data)))
    out = tmp_path / "run"
    result = cli("train", spec_path, "--out", out, "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert netspec.load(out / "spec.yaml").data.classes == ["cat", "dog"]
    ckpt = checkpoint.load(out / "checkpoints" / "last.npz")
    assert ckpt.meta["data"]["classes"] == ["cat", "dog"]
    norm = ckpt.meta["normalize"]
    assert len(norm["mean"]) == 3 and len(norm["std"]) == 3 and norm["unit"] == 255.0
    assert "cat" in (out / "report.html").read_text()
    resumed = cli("train", "--resume", out, "--set", "train.epochs=2", "--workers", "1",
                  "--no-progress")  # the stored classes and digest still match
    assert resumed.exit_code == 0, resumed.output
    pytest.importorskip("onnx")
    onnx_path = tmp_path / "pets.onnx"
    assert cli("export", "-c", out / "checkpoints" / "last.npz", "-o", onnx_path).exit_code == 0
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["netspec.classes"]) == ["cat", "dog"]
    assert json.loads(meta["netspec.mean"]) == pytest.approx(norm["mean"])
    assert "per channel" in meta["netspec.preprocess"]
    assert json.loads(meta["netspec.image"])["shape"] == [3, 12, 12]


def test_a_checkpoint_from_before_the_data_keys_still_resumes():
    """Keys added to data: take their defaults in the stored spec too, and are left out of the
    digest at their defaults."""
    from netspec.train.run import spec_changes_since

    old = ROOT / "tests" / "fixtures" / "pre-graph-run"
    ckpt = checkpoint.load(old / "checkpoints" / "last.npz")
    assert spec_changes_since(ckpt, netspec.load(old / "spec.yaml")) == []
    changed = netspec.load(old / "spec.yaml", ["data.augment={horizontal_flip: 0.5}"])
    assert spec_changes_since(ckpt, changed) == ["data.augment added"]


def test_eval_uses_the_checkpoints_normalisation_not_the_datas(tmp_path):
    """Evaluated on a copy of the data whose training images differ (so their mean and std
    do), a checkpoint scores what it scored in training: the stored statistics are used."""
    import gzip

    from netspec.data.known import FILES

    other = tmp_path / "other"
    shutil.copytree(TINY, other)
    train = other / f"{FILES[0]}.gz"
    raw = bytearray(gzip.decompress(train.read_bytes()))
    body = np.frombuffer(bytes(raw[16:]), np.uint8) // 2  # darker training images
    train.write_bytes(gzip.compress(bytes(raw[:16]) + body.tobytes(), mtime=0))
    spec = tmp_path / "net.yaml"
    spec.write_text(tiny_conv_spec(epochs=1))
    out = tmp_path / "run"
    assert cli("train", spec, "--out", out, "--workers", "1", "--no-progress").exit_code == 0
    trained = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]
    result = cli("eval", "-c", out / "checkpoints" / "last.npz", "--set",
                 f"data.dataset={other}", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert f"accuracy {100 * trained:.2f}%" in result.output
    from netspec.train.inputs import load_splits
    from netspec.train.trainer import Trainer

    trained_spec = netspec.load(out / "spec.yaml", [f"data.dataset={other}"])
    own = load_splits(trained_spec)  # negative control: the other data's own statistics
    trainer = Trainer(trained_spec, own, workers=1)
    trainer.plan.load_state_dict(checkpoint.load(out / "checkpoints" / "last.npz").state)
    assert trainer.evaluate(*own["test"]).accuracy != trained


def _bad_images(root):
    rgb_folder(root)
    (root / "train" / "cat" / "3.png").write_text("not a picture")
    return root, "3.png: not an image"


def _bad_csv(root):
    root.mkdir()
    (root / "t.csv").write_text("a,b,label\n1,2,x\n3,,y\n")
    return root / "t.csv", "t.csv:3: column 'b': the value is missing"


def _object_npz(root):
    root.mkdir()
    objects = np.empty(2, dtype=object)
    objects[:] = [[1], [2, 3]]
    np.savez(root / "d.npz", x_train=objects, y_train=np.array([0, 1]))
    return root / "d.npz", "never unpickles"


def _cifar_wrong_size(root):
    root.mkdir()
    for name in ("data_batch_1.bin", "test_batch.bin"):
        (root / name).write_bytes(b"\0" * (3073 * 2 + 7))
    return root, "7 bytes more"


def _empty_class(root):
    rgb_folder(root)
    (root / "train" / "bird").mkdir()
    return root, "'bird' holds no images"


@pytest.mark.parametrize("make", [_bad_images, _bad_csv, _object_npz, _cifar_wrong_size,
                                  _empty_class], ids=lambda f: f.__name__.strip("_"))
def test_bad_data_is_a_clear_error_exit_1_and_nothing_is_written(tmp_path, make):
    data, said = make(tmp_path / "data")
    spec = tmp_path / "pets.yaml"
    spec.write_text(SPEC.replace("DATA", str(data)))
    out = tmp_path / "run"
    result = cli("train", spec, "--out", out, "--workers", "1", "--no-progress")
    assert result.exit_code == 1, result.output
    assert said in result.output and "Traceback" not in result.output
    assert not out.exists()
