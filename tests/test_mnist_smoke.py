"""Abbreviated real-MNIST training (one epoch on a subset). Runs when NETSPEC_DATA points at
the four MNIST files (CI sets it); skips otherwise, since unit tests must not need the network."""

import os

import pytest
from conftest import ROOT

import netspec
from netspec.data import find_data_dir, load_dataset, prepare
from netspec.train.run import Run

DATA = os.environ.get("NETSPEC_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or find_data_dir("mnist", DATA) is None,
    reason="set NETSPEC_DATA to a directory with the MNIST files to run the real-data smoke test")


@pytest.fixture(scope="module")
def mnist():
    return prepare(load_dataset("mnist", data_dir=DATA, download_missing=False), "standardize")


@pytest.mark.parametrize("name", ["lenet.yaml", "lenet-max.yaml"])
def test_one_epoch_on_a_subset_learns(tmp_path, mnist, name):
    spec = netspec.load(ROOT / "specs" / name, overrides=["train.epochs=1"])
    subset = {"train": (mnist["train"][0][:12000], mnist["train"][1][:12000]),
              "test": mnist["test"]}
    run = Run(spec, subset, tmp_path / "run")
    run.start()
    assert run.fit()
    record = run.history[-1]
    assert record["test_acc"] > 0.85, record  # chance is 0.10; the full recipe reaches 0.99
    assert (tmp_path / "run" / "checkpoints" / "last.npz").exists()
