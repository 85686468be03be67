"""Shared test fixtures: paths to the specs and the small committed MNIST subset."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TINY = Path(__file__).resolve().parent / "fixtures" / "mnist-tiny"  # 512 train / 256 test


@pytest.fixture(scope="session")
def tiny_dataset():
    from netspec.data import load_dataset

    return load_dataset(str(TINY), download_missing=False)


@pytest.fixture(scope="session")
def tiny_splits(tiny_dataset):
    from netspec.data import prepare

    return prepare(tiny_dataset, "standardize", 0)
