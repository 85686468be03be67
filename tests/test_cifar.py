"""CIFAR binary files and archives, written here in the published format (no CIFAR copy is
needed): records, sizes, labels, class names, archive checksums, downloads. No pickle anywhere."""

import dataclasses
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from netspec.data import ARCHIVES, LoadOptions, load_dataset
from netspec.data.cifar import download_archive, load_cifar, read_archive
from netspec.errors import DataError

C10, C100 = ARCHIVES["cifar10"], ARCHIVES["cifar100"]
NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("NETSPEC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def records(n: int, label_bytes: int = 1, seed: int = 0, classes: int = 10):
    """(bytes of n records, labels (n, label_bytes), images (n, 3, 32, 32))."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (n, label_bytes), dtype=np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    blob = np.concatenate([labels, images.reshape(n, -1)], axis=1).tobytes()
    return blob, labels, images


def cifar10_files(folder, n=7):
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for i, name in enumerate(C10.files):
        parts[name] = records(n, seed=i)
        (folder / name).write_bytes(parts[name][0])
    (folder / "batches.meta.txt").write_text("\n".join(NAMES10) + "\n\n")
    return parts


def test_a_directory_of_cifar10_files_reads_records_without_pickle(tmp_path):
    parts = cifar10_files(tmp_path / "c10")
    ds = load_dataset(str(tmp_path / "c10"))
    assert ds.kind == "cifar" and ds.input_shape == (3, 32, 32)
    assert ds.class_names == tuple(NAMES10) and len(ds.train) == 35 and len(ds.test) == 7
    _, labels, images = parts["data_batch_2.bin"]
    assert np.array_equal(ds.train.images[7:14], images)  # R plane, G plane, B plane, row-major
    assert np.array_equal(ds.train.labels[7:14], labels[:, 0])


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "c100"
    folder.mkdir()
    for name, n in (("train.bin", 6), ("test.bin", 3)):
        blob = records(n, 2, classes=20)[0]
        (folder / name).write_bytes(blob)
    (folder / "fine_label_names.txt").write_text("\n".join(f"f{i}" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"c{i}" for i in range(20)))
    fine = load_dataset(str(folder))
    coarse = load_dataset(str(folder), options=LoadOptions(coarse=True))
    raw = np.frombuffer((folder / "train.bin").read_bytes(), np.uint8).reshape(6, -1)
    assert np.array_equal(fine.train.labels, raw[:, 1]) and fine.num_classes == 100
    assert np.array_equal(coarse.train.labels, raw[:, 0]) and coarse.num_classes == 20
    assert coarse.class_names[0] == "c0" and fine.class_names[99] == "f99"


def test_a_cifar_file_of_the_wrong_size_is_a_clear_error(tmp_path):
    cifar10_files(tmp_path / "c10")
    path = tmp_path / "c10" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes() + b"\0" * 5)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "c10"))
    text = str(e.value)
    assert "data_batch_3.bin" in text and "3,073 bytes" in text and "5 bytes more" in text
    with pytest.raises(DataError, match=r"expected 30,730,000 \(10,000 records"):
        load_cifar(C10, data_dir=tmp_path / "c10", download_missing=False)  # the real sizes


def test_a_label_out_of_range_is_an_error(tmp_path):
    cifar10_files(tmp_path / "c10")
    path = tmp_path / "c10" / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[3073 * 2] = 10
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"record 2 has label 10.*classes 0\.\.9"):
        load_dataset(str(tmp_path / "c10"))


def archive_of(folder, files: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def small_info(blob_of) -> tuple:
    """A CIFAR-10 layout of 4 records per file, and its archive's bytes; the info pins the
    archive's size and SHA-256 as the real one pins the published archive's."""
    files = {name: records(4, seed=i)[0] for i, name in enumerate(C10.files)}
    files["batches.meta.txt"] = ("\n".join(NAMES10) + "\n").encode()
    blob = blob_of(files)
    info = dataclasses.replace(C10, records={n: 4 for n in C10.files}, size=len(blob),
                               sha256=hashlib.sha256(blob).hexdigest())
    return info, blob, files


def test_an_archive_is_read_and_checked_by_size_and_sha256(tmp_path):
    info, blob, _ = small_info(lambda f: archive_of(C10.folder, f))
    path = tmp_path / info.archive
    path.write_bytes(blob)
    ds = read_archive(path, info)
    assert len(ds.train) == 20 and ds.class_names == tuple(NAMES10)
    assert np.array_equal(ds.test.images, records(4, seed=5)[2])
    with pytest.raises(DataError, match="not the published cifar-10-binary.tar.gz"):
        read_archive(path, C10)  # the real checksum: this archive is not it
    path.write_bytes(blob[:len(blob) // 2])  # cut short: the size (or gzip) says so
    with pytest.raises(DataError, match=f"(cut short|expected {len(blob):,} bytes)"):
        read_archive(path, info)


class _Server:
    def __init__(self, body: bytes):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server calls it by this name
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/x.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_a_download_is_verified_before_it_is_kept(tmp_path):
    info, blob, _ = small_info(lambda f: archive_of(C10.folder, f))
    good = _Server(blob)
    bad = _Server(blob[:-10] + b"0123456789")
    try:
        with pytest.raises(DataError, match="SHA-256"):
            download_archive(dataclasses.replace(info, urls=(bad.url,)), tmp_path / "dl" / "c")
        assert not (tmp_path / "dl").exists()  # nothing partial stays, nor the folders made
        seen = []
        path = download_archive(dataclasses.replace(info, urls=(bad.url, good.url)),
                                tmp_path / "dl", progress=lambda *a: seen.append(a))
        assert path.read_bytes() == blob and seen[-1][1] == len(blob)
        ds = load_cifar(info, data_dir=tmp_path / "dl", download_missing=False)
        assert len(ds.train) == 20
    finally:
        good.httpd.shutdown()
        bad.httpd.shutdown()
