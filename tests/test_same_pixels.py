"""The same pixels give the same run: MNIST written out as PNG class folders trains to the same
metrics.jsonl, bit for bit (losses and accuracies), as the same images in IDX files in the same
order (class by class, and by file name within a class). benchmarks/same_pixels.py runs this on
the full MNIST."""

import gzip
import json

import numpy as np
import pytest
from conftest import TINY, tiny_conv_spec
from PIL import Image
from typer.testing import CliRunner

from netspec.cli import app
from netspec.data import load_dataset
from netspec.data.known import FILES

TIMING = ("train_seconds", "eval_seconds", "images_per_second")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_both(root, ds):
    """root/png/{train,test}/<digit>/<i>.png and root/idx/ with the images in that order."""
    arrays = []
    for split, part in (("train", ds.train), ("test", ds.test)):
        order = np.argsort(part.labels, kind="stable")  # class by class, file names in order
        for i in order:
            folder = root / "png" / split / str(part.labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(part.images[i]).save(folder / f"{i:05d}.png")
        arrays += [part.images[order], part.labels[order]]
    (root / "idx").mkdir()
    for name, array in zip(FILES, arrays):
        (root / "idx" / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array), mtime=0))


def metrics(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("workers", [1, 2])
def test_png_folders_train_exactly_as_idx_files_in_the_same_order(tmp_path, monkeypatch,
                                                                   workers):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_both(tmp_path, load_dataset(str(TINY)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_conv_spec(epochs=2, batch_size=32))
    runs = {}
    sources = {"png": tmp_path / "png", "idx": tmp_path / "idx", "shuffled": TINY}
    for kind, data in sources.items():
        result = CliRunner().invoke(app, [
            "train", str(spec), "--set", f"data.dataset={data}", "--out",
            str(tmp_path / f"run-{kind}"), "--workers", str(workers), "--no-progress"])
        assert result.exit_code == 0, result.output
        runs[kind] = metrics(tmp_path / f"run-{kind}" / "metrics.jsonl")
    assert len(runs["png"]) == 2
    assert runs["png"] == runs["idx"]  # every loss and accuracy, bit for bit
    assert runs["shuffled"] != runs["png"]  # negative control: the same images, another order
