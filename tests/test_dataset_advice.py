"""A directory holding another known dataset's files (issue 23): pointing a Fashion-MNIST spec
at a folder of MNIST files told the user to delete the correct file and never tried the next
place (Debian's /usr/share/datasets/fashion-mnist). Such a directory is now named for what it
holds and skipped; no message advises deleting a file netspec does not own."""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from typer.testing import CliRunner

from netspec.data import known, load_dataset
from netspec.data.known import FILES, DatasetInfo
from netspec.errors import DataError


def _hashes(directory: Path) -> dict:
    out = {}
    for name in FILES:
        with gzip.open(directory / f"{name}.gz", "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _other_copy(directory: Path) -> None:
    """The fixture with every label moved on by one class: another dataset of the same shape."""
    shutil.copytree(TINY, directory)
    for name in (FILES[1], FILES[3]):
        path = directory / f"{name}.gz"
        with gzip.open(path, "rb") as f:
            raw = bytearray(f.read())
        raw[8:] = bytes((b + 1) % 10 for b in raw[8:])
        with gzip.open(path, "wb") as f:
            f.write(bytes(raw))


@pytest.fixture
def two_datasets(tmp_path, monkeypatch):
    """KNOWN with 'alpha' (the tiny fixture's files) and 'beta' (another copy, which Debian
    would install into `system`); returns (alpha's directory, beta's system directory)."""
    alpha_dir = tmp_path / "alpha-files"
    shutil.copytree(TINY, alpha_dir)
    system = tmp_path / "usr-share" / "beta"
    _other_copy(system)
    alpha = DatasetInfo("alpha", _hashes(alpha_dir), mirrors=("http://127.0.0.1:9/",))
    beta = DatasetInfo("beta", _hashes(system), mirrors=("http://127.0.0.1:9/",),
                       system_dirs=(str(system),))
    monkeypatch.setattr(known, "KNOWN", {"alpha": alpha, "beta": beta})
    from netspec.data import load, locate

    monkeypatch.setattr(load, "KNOWN", known.KNOWN)
    monkeypatch.setattr(locate, "KNOWN", known.KNOWN, raising=False)
    monkeypatch.delenv("NETSPEC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return alpha_dir, system


def test_another_datasets_directory_is_skipped_for_the_next_place(two_datasets):
    alpha_dir, system = two_datasets
    ds = load_dataset(known.KNOWN["beta"], data_dir=alpha_dir, download_missing=False)
    assert ds.path == system
    assert (ds.train.labels == (load_dataset(str(alpha_dir)).train.labels + 1) % 10).all()


def test_when_nothing_else_holds_it_the_error_says_whose_files_they_are(two_datasets):
    alpha_dir, system = two_datasets
    shutil.rmtree(system)
    before = {p: p.read_bytes() for p in alpha_dir.iterdir()}
    with pytest.raises(DataError) as e:
        load_dataset(known.KNOWN["beta"], data_dir=alpha_dir, download_missing=False)
    text = str(e.value)
    assert f"{alpha_dir}: holds alpha's files, not beta's" in text, text
    assert "delete" not in text.lower()
    assert {p: p.read_bytes() for p in alpha_dir.iterdir()} == before


def test_a_directory_mixing_two_datasets_is_not_advised_deleted(two_datasets, tmp_path):
    alpha_dir, system = two_datasets
    mixed = tmp_path / "mixed"
    shutil.copytree(system, mixed)
    shutil.copy(alpha_dir / f"{FILES[1]}.gz", mixed / f"{FILES[1]}.gz")  # alpha's labels
    with pytest.raises(DataError) as e:
        load_dataset(known.KNOWN["beta"], data_dir=mixed, download_missing=False)
    text = str(e.value)
    assert "alpha's" in text and "delete" not in text.lower(), text


def test_files_of_no_known_dataset_are_not_advised_deleted(tmp_path, monkeypatch):
    """The tiny fixture given as --data-dir for mnist: its files are nobody's copy of MNIST, so
    they are read as a directory of IDX files (and said to be), never advised deleted. A copy
    with some files right and one wrong is a damaged copy: an error, still without that
    advice."""
    import shutil

    monkeypatch.delenv("NETSPEC_DATA", raising=False)
    ds = load_dataset("mnist", data_dir=TINY, download_missing=False)
    assert len(ds.train) == 512 and "does not hold the published mnist files" in ds.notes[0]
    mixed = tmp_path / "mixed"
    shutil.copytree(TINY, mixed)
    import dataclasses
    import hashlib

    from netspec.data import known

    # pretend three of the fixture's files are mnist's (their digests) and one is not
    digests = {n: hashlib.sha256(read_raw(mixed, n)).hexdigest() for n in known.FILES}
    fake = dataclasses.replace(known.KNOWN["mnist"], sha256={**digests, known.FILES[0]: "0" * 64})
    monkeypatch.setitem(known.KNOWN, "mnist", fake)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=mixed, download_missing=False)
    text = str(e.value)
    assert "checksum" in text and "delete" not in text.lower(), text
    assert f"data.dataset: {mixed}" in " ".join(text.split()), text


def read_raw(directory, name) -> bytes:
    import gzip

    return gzip.decompress((directory / f"{name}.gz").read_bytes())


REAL = os.environ.get("NETSPEC_DATA")


@pytest.mark.skipif(not REAL, reason="set NETSPEC_DATA to the real MNIST files")
def test_fashion_mnist_pointed_at_real_mnist(tmp_path, monkeypatch):
    from netspec.cli import app

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NETSPEC_DATA")
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    spec = tmp_path / "fashion.yaml"
    spec.write_text("input: {shape: [784]}\nlayers: [{type: linear, out_features: 10}]\n"
                    "data: {dataset: fashion-mnist}\n")
    result = CliRunner().invoke(app, ["train", str(spec), "--data-dir", REAL,
                                      "--out", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "holds mnist's files, not fashion-mnist's" in text, text
    assert "/usr/share/datasets/fashion-mnist" in text
    assert "delete" not in text.lower()
    assert np is not None


def test_a_download_never_lands_on_another_datasets_files(two_datasets, monkeypatch):
    """Downloading beta with --data-dir at alpha's files went into that directory and would
    have replaced alpha's files with beta's: it goes into DIR/beta/, where netspec looks."""
    import http.server
    import threading

    alpha_dir, system = two_datasets
    files = {f"/{name}.gz": (system / f"{name}.gz").read_bytes() for name in FILES}
    shutil.rmtree(system)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server calls it by this name
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        beta = DatasetInfo("beta", known.KNOWN["beta"].sha256,
                           mirrors=(f"http://127.0.0.1:{httpd.server_address[1]}/",))
        monkeypatch.setitem(known.KNOWN, "beta", beta)
        before = {p.name: p.read_bytes() for p in alpha_dir.iterdir()}
        ds = load_dataset(beta, data_dir=alpha_dir)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert ds.path == alpha_dir / "beta"
    assert {p.name: p.read_bytes() for p in alpha_dir.iterdir() if p.is_file()} == before
