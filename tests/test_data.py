"""Tests for netspec.data: IDX reading, locating, downloading (from a loopback server), loading
and preparing datasets. Uses the `fixtures/mnist-tiny` subset of MNIST; never the network."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from netspec.data import (
    FILES,
    KNOWN,
    NAMES,
    DatasetInfo,
    cache_dir,
    candidate_dirs,
    download,
    find_data_dir,
    load_dataset,
    normalize_images,
    prepare,
    read_idx,
    stats,
)
from netspec.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "mnist-tiny"
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILES
# Well-known first labels of the MNIST training and test sets
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

# The fixture's gz bytes and the SHA-256 of their decompressed content, computed here
# independently of netspec.
GZ = {name: (FIXTURE / f"{name}.gz").read_bytes() for name in FILES}
RAW = {name: gzip.decompress(blob) for name, blob in GZ.items()}
SHA = {name: hashlib.sha256(raw).hexdigest() for name, raw in RAW.items()}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the real $NETSPEC_DATA, cache or home directory."""
    monkeypatch.delenv("NETSPEC_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --------------------------------------------------------------------------------------------
# Helpers


def idx(array: np.ndarray) -> bytes:
    """Raw unsigned-byte IDX bytes of `array`."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def tiny_copy(tmp_path: Path, name: str = "data", **replace: bytes) -> Path:
    """A copy of the fixture in tmp_path/name; `replace` maps a file key to new raw IDX bytes.

    Keys: train_images, train_labels, test_images, test_labels. A replaced file is written
    gzipped unless its key ends in `_rawfile` (then uncompressed) or `_gzfile` (bytes as given,
    under the .gz name: for corrupt gzip data).
    """
    directory = tmp_path / name
    shutil.copytree(FIXTURE, directory)
    keys = dict(zip(("train_images", "train_labels", "test_images", "test_labels"), FILES))
    for key, blob in replace.items():
        base, mode = key, ""
        for suffix in ("_rawfile", "_gzfile"):
            if key.endswith(suffix):
                base, mode = key[: -len(suffix)], suffix
        fname = keys[base]
        (directory / f"{fname}.gz").unlink()
        if mode == "_rawfile":
            (directory / fname).write_bytes(blob)
        elif mode == "_gzfile":
            (directory / f"{fname}.gz").write_bytes(blob)
        else:
            (directory / f"{fname}.gz").write_bytes(gzip.compress(blob, mtime=0))
    return directory


def tiny_info(**kw) -> DatasetInfo:
    """A downloadable fake dataset whose files are the fixture's."""
    return DatasetInfo(**{"name": "tiny", "sha256": dict(SHA), "mirrors": (), **kw})


def error_text(excinfo) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------------------------
# read_idx


def test_read_idx_fixture_shapes_dtypes_and_values():
    train_x = read_idx(FIXTURE / f"{TRAIN_IMAGES}.gz")
    train_y = read_idx(FIXTURE / f"{TRAIN_LABELS}.gz")
    test_x = read_idx(FIXTURE / f"{TEST_IMAGES}.gz")
    test_y = read_idx(FIXTURE / f"{TEST_LABELS}.gz")
    assert train_x.shape == (512, 28, 28) and test_x.shape == (256, 28, 28)
    assert train_y.shape == (512,) and test_y.shape == (256,)
    assert {a.dtype for a in (train_x, train_y, test_x, test_y)} == {np.dtype(np.uint8)}
    assert train_x.min() == 0 and train_x.max() == 255
    assert train_y.max() <= 9 and set(np.unique(train_y)) == set(range(10))
    assert train_y[:10].tolist() == FIRST_TRAIN_LABELS
    assert test_y[:10].tolist() == FIRST_TEST_LABELS
    # same bytes as the independently parsed payload, and writable
    assert train_x.tobytes() == RAW[TRAIN_IMAGES][16:]
    train_x[0, 0, 0] = 1


def test_read_idx_raw_file_equals_gzipped(tmp_path):
    raw = tmp_path / TEST_LABELS
    raw.write_bytes(RAW[TEST_LABELS])
    np.testing.assert_array_equal(read_idx(raw), read_idx(FIXTURE / f"{TEST_LABELS}.gz"))


def test_read_idx_accepts_uncompressed_data_under_gz_name(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(idx(np.arange(5)))
    assert read_idx(path).tolist() == [0, 1, 2, 3, 4]


def _truncated_gzip() -> bytes:
    blob = GZ[TRAIN_IMAGES]
    return blob[: len(blob) // 2]


@pytest.mark.parametrize(
    ("content", "compress", "needle"),
    [
        (b"\x12\x34\x08\x01" + bytes(10), True, "not an IDX file"),
        (b"<html><body>Not Found</body></html>", False, "HTML"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 2]) + bytes(8), True, "not supported"),
        (RAW[TRAIN_LABELS][:-100], True, "truncated"),
        (RAW[TRAIN_LABELS] + b"\0\0\0", True, "unexpected byte"),
        # header says 3 dims but stops after 2
        (bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2]), True, "truncated header"),
        # dims 27x28 per image: 512*27*28 bytes expected, 512*28*28 present
        (RAW[TRAIN_IMAGES][:8] + (27).to_bytes(4, "big") + RAW[TRAIN_IMAGES][12:], True,
         "unexpected byte"),
        (bytes([0, 0, 8, 0]), True, "0 dimensions"),
        (b"", False, "empty"),
        (b"\x1f\x8b" + b"garbage" * 20, False, "corrupt gzip"),
        (_truncated_gzip(), False, "corrupt gzip"),
        (b"this is not gzip at all" * 5, False, "not gzip-compressed"),
    ],
    ids=["bad-magic", "html", "float-type", "truncated", "trailing", "short-header",
         "wrong-dims", "zero-dims", "empty", "bad-gzip", "truncated-gzip", "garbage-gz"],
)
def test_read_idx_corrupt_files_name_file_and_problem(tmp_path, content, compress, needle):
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(content, mtime=0) if compress else content)
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in error_text(excinfo)
    assert needle in error_text(excinfo)


def test_read_idx_wrong_ndim_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"declares 1 dimension.*expected 3"):
        read_idx(FIXTURE / f"{TRAIN_LABELS}.gz", ndim=3)
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------------------------
# load_dataset on directories


def test_load_path_dataset_from_fixture():
    ds = load_dataset(str(FIXTURE), download_missing=False)
    assert ds.num_classes == 10 and ds.path == FIXTURE
    assert ds.train.images.shape == (512, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.dtype == np.int64 and ds.test.labels.dtype == np.int64
    assert len(ds.test) == 256 and ds.input_shape == (1, 28, 28)
    assert ds.test.labels[:10].tolist() == FIRST_TEST_LABELS


def test_load_relative_path_uses_cwd_and_custom_num_classes(tmp_path, monkeypatch):
    labels = np.minimum(read_idx(FIXTURE / f"{TRAIN_LABELS}.gz"), 3)
    tiny_copy(tmp_path, "mine", train_labels=idx(labels),
              test_labels=idx(np.zeros(256, dtype=np.uint8)))
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("mine")
    assert ds.num_classes == 4 and ds.path == tmp_path / "mine"


def test_load_uncompressed_files(tmp_path):
    directory = tiny_copy(tmp_path, train_images_rawfile=RAW[TRAIN_IMAGES])
    assert not (directory / f"{TRAIN_IMAGES}.gz").exists()
    assert load_dataset(str(directory)).train.images.shape == (512, 28, 28)


def test_load_count_mismatch_names_both_files(tmp_path):
    labels = read_idx(FIXTURE / f"{TRAIN_LABELS}.gz")[:500]
    directory = tiny_copy(tmp_path, train_labels=idx(labels))
    with pytest.raises(DataError) as excinfo:
        load_dataset(str(directory))
    text = error_text(excinfo)
    assert str(directory / f"{TRAIN_LABELS}.gz") in text
    assert "500 labels" in text and "512 images" in text and TRAIN_IMAGES in text


def test_load_labels_file_with_image_dims_is_rejected(tmp_path):
    directory = tiny_copy(tmp_path, test_labels=RAW[TEST_IMAGES])
    with pytest.raises(DataError, match=rf"{TEST_LABELS}.*expected 1"):
        load_dataset(str(directory))


def test_load_reports_every_corrupt_file(tmp_path):
    directory = tiny_copy(tmp_path, train_images_gzfile=b"junk", test_labels=b"\0\0\x08")
    with pytest.raises(DataError) as excinfo:
        load_dataset(str(directory))
    assert len(excinfo.value.problems) == 2
    assert TRAIN_IMAGES in error_text(excinfo) and TEST_LABELS in error_text(excinfo)


def test_load_missing_file_in_path_dataset(tmp_path):
    directory = tiny_copy(tmp_path)
    (directory / f"{TEST_IMAGES}.gz").unlink()
    with pytest.raises(DataError, match=rf"{directory}.*missing {TEST_IMAGES}"):
        load_dataset(str(directory))


def test_unknown_dataset_name_suggests_known():
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit'.*did you mean 'mnist'"):
        load_dataset("mnsit", download_missing=False)


def test_known_dataset_checksums_verified_on_local_files(tmp_path):
    directory = tiny_copy(tmp_path)
    ds = load_dataset(tiny_info(), data_dir=directory, download_missing=False)
    assert ds.name == "tiny" and ds.num_classes == 10

    wrong = dict(SHA, **{TEST_IMAGES: "0" * 64})
    with pytest.raises(DataError) as excinfo:
        load_dataset(tiny_info(sha256=wrong), data_dir=directory, download_missing=False)
    text = error_text(excinfo)
    assert str(directory / f"{TEST_IMAGES}.gz") in text
    assert "0" * 64 in text and SHA[TEST_IMAGES] in text and "checksum mismatch" in text
    assert len(excinfo.value.problems) == 1


def test_known_dataset_label_out_of_range(tmp_path):
    directory = tiny_copy(tmp_path)
    with pytest.raises(DataError, match=r"out of range.*classes 0\.\.4"):
        load_dataset(tiny_info(num_classes=5), data_dir=directory, download_missing=False)


def test_known_dataset_wrong_image_size(tmp_path):
    directory = tiny_copy(tmp_path)
    with pytest.raises(DataError, match=r"28x28, expected 32x32"):
        load_dataset(tiny_info(image_shape=(1, 32, 32)), data_dir=directory,
                     download_missing=False)


# --------------------------------------------------------------------------------------------
# find_data_dir


def test_find_data_dir_order(tmp_path, monkeypatch):
    arg = tiny_copy(tmp_path, "arg")
    env = tiny_copy(tmp_path, "env")
    cache = tmp_path / "xdg" / "netspec" / "mnist"
    shutil.copytree(FIXTURE, cache)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NETSPEC_DATA", str(env))

    assert find_data_dir("mnist", arg) == arg
    assert find_data_dir("mnist") == env
    monkeypatch.delenv("NETSPEC_DATA")
    assert find_data_dir("mnist") == cache
    assert find_data_dir("mnist", tmp_path / "nowhere") == cache

    # an incomplete directory is skipped
    (arg / f"{TRAIN_LABELS}.gz").unlink()
    monkeypatch.setenv("NETSPEC_DATA", str(env))
    assert find_data_dir("mnist", arg) == env


def test_find_data_dir_parent_layout_and_home_cache(tmp_path, monkeypatch):
    parent = tmp_path / "datasets"
    shutil.copytree(FIXTURE, parent / "fashion-mnist")
    monkeypatch.setenv("NETSPEC_DATA", str(parent))
    assert find_data_dir("fashion-mnist") == parent / "fashion-mnist"
    assert find_data_dir("mnist") is None  # parent/mnist does not exist

    monkeypatch.delenv("NETSPEC_DATA")
    home_cache = tmp_path / "home" / ".cache" / "netspec" / "mnist"
    assert cache_dir("mnist") == home_cache
    shutil.copytree(FIXTURE, home_cache)
    assert find_data_dir("mnist") == home_cache


def test_candidate_dirs_lists_system_dir_last_and_paths_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirs = candidate_dirs("fashion-mnist", "d")
    assert dirs[:2] == [tmp_path / "d" / "fashion-mnist", tmp_path / "d"]
    assert dirs[-1] == Path("/usr/share/datasets/fashion-mnist")
    assert candidate_dirs("some/dir") == [tmp_path / "some" / "dir"]
    assert find_data_dir(str(FIXTURE)) == FIXTURE


def test_missing_offline_without_download_lists_files_and_places(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / f"{TRAIN_IMAGES}.gz").write_bytes(GZ[TRAIN_IMAGES])
    monkeypatch.setenv("NETSPEC_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", data_dir=empty, download_missing=False)
    text = error_text(excinfo)
    for name in FILES:
        assert name in text
    assert f"{empty}: missing {TRAIN_LABELS}, {TEST_IMAGES}, {TEST_LABELS}" in text
    assert f"{tmp_path / 'env'}: does not exist" in text
    assert str(cache_dir("mnist")) in text
    assert "--data-dir" in text and "NETSPEC_DATA" in text and "disabled" in text


# --------------------------------------------------------------------------------------------
# download, against a loopback HTTP server


class Server:
    """A loopback HTTP server: `routes` maps a path to (status, body, extra headers)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, dict]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # http.server calls it by this name
                server.requests.append(self.path)
                status, body, headers = server.routes.get(self.path, (404, b"no", {}))
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def serve(self, mirror: str, files: dict[str, bytes], status: int = 200, headers=None):
        for name, body in files.items():
            self.routes[f"/{mirror}/{name}.gz"] = (status, body, headers or {})
        return f"{self.url}/{mirror}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def corrupted(name: str) -> bytes:
    """Valid gzip + IDX, but not the expected content (one pixel/label changed)."""
    raw = bytearray(RAW[name])
    raw[-1] ^= 1
    return gzip.compress(bytes(raw), mtime=0)


def assert_clean(dest: Path, expected: set[str]):
    """`dest` holds exactly the files `expected` (no temp files, no bad files)."""
    assert {p.name for p in dest.iterdir()} == expected


def test_download_success_writes_verified_files_and_reports_progress(tmp_path, server):
    good = server.serve("good", GZ)
    calls = []
    dest = download(tiny_info(mirrors=(good,)), tmp_path / "dl",
                    progress=lambda *a: calls.append(a), timeout=5)
    assert dest == tmp_path / "dl"
    assert_clean(dest, {f"{n}.gz" for n in FILES})
    for name in FILES:
        assert (dest / f"{name}.gz").read_bytes() == GZ[name]
    final = {c[0]: c for c in calls}
    assert final[f"{TRAIN_IMAGES}.gz"] == (f"{TRAIN_IMAGES}.gz", len(GZ[TRAIN_IMAGES]),
                                           len(GZ[TRAIN_IMAGES]))
    assert len(final) == 4
    # loading it afterwards verifies and works
    assert len(load_dataset(tiny_info(), data_dir=dest, download_missing=False).train) == 512

    # files already there and valid are not fetched again
    server.requests.clear()
    download(tiny_info(mirrors=(good,)), dest, timeout=5)
    assert server.requests == []


def test_downloaded_files_follow_the_umask(tmp_path, server):
    """Downloads are created as open() would create them (0644 under umask 022), not with
    mkstemp's 0600, so that a shared data folder stays readable."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        dest = download(tiny_info(mirrors=(server.serve("good", GZ),)), tmp_path / "dl",
                        timeout=5)
    finally:
        os.umask(old)
    modes = {stat.S_IMODE((dest / f"{n}.gz").stat().st_mode) for n in FILES}
    assert modes == {0o644}


def test_download_falls_back_per_file(tmp_path, server):
    partial = server.serve("partial", {TRAIN_IMAGES: GZ[TRAIN_IMAGES]})  # others 404
    bad = server.serve("bad", {n: corrupted(n) for n in FILES})
    html = server.serve("html", {n: b"<html>moved</html>" for n in FILES})
    short = server.serve("short", GZ, headers={"Content-Length": str(10**6)})
    good = server.serve("good", GZ)
    mirrors = (closed_port_url(), partial, bad, html, short, good)
    dest = download(tiny_info(mirrors=mirrors), tmp_path / "dl", timeout=5)
    assert_clean(dest, {f"{n}.gz" for n in FILES})
    for name in FILES:
        assert (dest / f"{name}.gz").read_bytes() == GZ[name]
    # train images came from `partial`; every other file went on down to `good`
    assert f"/good/{TRAIN_IMAGES}.gz" not in server.requests
    for name in FILES[1:]:
        for mirror in ("partial", "bad", "html", "good"):
            assert f"/{mirror}/{name}.gz" in server.requests


def test_download_total_failure_names_every_mirror_and_leaves_nothing(tmp_path, server):
    missing = server.serve("missing", {}, status=404)
    bad = server.serve("bad", {n: corrupted(n) for n in FILES})
    refused = closed_port_url()
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(DataError) as excinfo:
        download(tiny_info(mirrors=(refused, missing, bad)), dest, timeout=5)
    text = error_text(excinfo)
    for name in FILES:
        assert f"{name}.gz: every mirror failed" in text
        assert f"{missing}{name}.gz: HTTP 404" in text
        assert f"{bad}{name}.gz: checksum mismatch" in text
    assert f"{refused}{TRAIN_IMAGES}.gz: cannot connect" in text
    assert f"{refused}{TEST_LABELS}.gz: skipped, unreachable" in text
    assert "--data-dir" in text
    assert_clean(dest, set())
    # a directory the download created is removed again when nothing could be fetched
    with pytest.raises(DataError):
        download(tiny_info(mirrors=(missing,)), tmp_path / "new" / "dir", timeout=5)
    assert not (tmp_path / "new").exists()  # and so is every parent it created


def test_download_keeps_good_files_from_a_partial_failure(tmp_path, server):
    partial = server.serve("partial", {TRAIN_LABELS: GZ[TRAIN_LABELS]})
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match=rf"3 of 4 files failed; {TRAIN_LABELS} are in place"):
        download(tiny_info(mirrors=(partial,)), dest, timeout=5)
    assert_clean(dest, {f"{TRAIN_LABELS}.gz"})


def test_download_unknown_dataset():
    with pytest.raises(DataError, match="not a known dataset"):
        download("nope", Path("unused"))


def test_load_dataset_downloads_into_data_dir(tmp_path, server):
    good = server.serve("good", GZ)
    dest = tmp_path / "dl"
    ds = load_dataset(tiny_info(mirrors=(good,)), data_dir=dest)
    assert ds.path == dest and len(ds.test) == 256
    assert_clean(dest, {f"{n}.gz" for n in FILES})


def test_load_dataset_downloads_into_cache_by_default(tmp_path, server, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    good = server.serve("good", GZ)
    ds = load_dataset(tiny_info(mirrors=(good,)))
    assert ds.path == tmp_path / "xdg" / "netspec" / "tiny"


def test_load_dataset_download_failure_lists_places_and_mirrors(tmp_path, server):
    missing = server.serve("missing", {}, status=404)
    dest = tmp_path / "dl"
    with pytest.raises(DataError) as excinfo:
        load_dataset(tiny_info(mirrors=(missing,)), data_dir=dest)
    text = error_text(excinfo)
    assert "dataset 'tiny' not found" in text
    assert f"{dest}: missing" in text or f"{dest}: does not exist" in text
    assert str(cache_dir("tiny")) in text
    assert f"{missing}{TRAIN_IMAGES}.gz: HTTP 404" in text
    assert "NETSPEC_DATA" in text
    assert f"{dest}: does not exist" in text  # created for the download, removed after it
    assert text.count("fix:") == 1 and "check the network" in text
    assert not dest.exists()


# --------------------------------------------------------------------------------------------
# prepare, stats, normalize_images


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(str(FIXTURE), download_missing=False)


def test_prepare_standardize(tiny):
    out = prepare(tiny)
    assert list(out) == ["train", "test"]
    x, y = out["train"]
    assert x.shape == (512, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert abs(x.astype(np.float64).mean()) < 1e-5
    assert abs(x.astype(np.float64).std() - 1) < 1e-5
    pixels = tiny.train.images.astype(np.float64) / 255
    assert out.normalize == "standardize"
    assert out.mean == pytest.approx(pixels.mean(), abs=1e-12)
    assert out.std == pytest.approx(pixels.std(), abs=1e-12)
    # the test split uses the training statistics
    expected = (tiny.test.images.astype(np.float64) / 255 - out.mean) / out.std
    np.testing.assert_allclose(out["test"][0][:, 0], expected, atol=1e-5)


def test_prepare_scale_none_and_dtype(tiny):
    scaled = prepare(tiny, "scale", dtype="float64")
    x = scaled["train"][0]
    assert x.dtype == np.float64 and x.min() == 0.0 and x.max() == 1.0
    assert (scaled.mean, scaled.std) == (0.0, 1.0)
    raw = prepare(tiny, "none")
    assert raw["test"][0].max() == 255.0 and raw.mean is None
    np.testing.assert_array_equal(raw["test"][0][:, 0], tiny.test.images)


@pytest.mark.parametrize(("validation", "k"), [(0.25, 128), (100, 100), (np.int64(7), 7),
                                               (0.1, 51), (1, 1)])
def test_prepare_validation_takes_last_samples(tiny, validation, k):
    out = prepare(tiny, validation=validation)
    assert list(out) == ["train", "val", "test"]
    assert len(out["train"][1]) == 512 - k and len(out["val"][1]) == k
    np.testing.assert_array_equal(out["val"][1], tiny.train.labels[-k:])
    np.testing.assert_array_equal(out["train"][1], tiny.train.labels[:-k])
    # statistics come from the remaining training samples only
    assert out.mean == pytest.approx(tiny.train.images[:-k].mean() / 255, abs=1e-12)
    expected = (tiny.train.images[-k:].astype(np.float64) / 255 - out.mean) / out.std
    np.testing.assert_allclose(out["val"][0][:, 0], expected, atol=1e-5)


@pytest.mark.parametrize("validation", [512, 512.0, 600, -1, -0.1, 1.5, 0.0001, True, "10", None,
                                        1.0, 100.0])
def test_prepare_invalid_validation(tiny, validation):
    with pytest.raises(DataError, match="validation"):
        prepare(tiny, validation=validation)


def test_prepare_invalid_normalize_and_dtype(tiny):
    with pytest.raises(DataError, match="did you mean 'standardize'"):
        prepare(tiny, normalize="standardise")
    with pytest.raises(DataError, match="floating-point"):
        prepare(tiny, dtype="int32")


def test_stats_and_normalize_images_match_prepare(tiny):
    mean, std = stats(tiny.train.images)
    pixels = tiny.train.images.astype(np.float64) / 255
    assert mean == pytest.approx(pixels.mean(), rel=1e-14)
    assert std == pytest.approx(pixels.std(), rel=1e-12)
    x = normalize_images(tiny.test.images, "standardize", mean, std)
    np.testing.assert_array_equal(x, prepare(tiny)["test"][0])
    with pytest.raises(DataError, match="std is 0"):
        normalize_images(np.zeros((2, 3, 3), np.uint8), "standardize", 0.0, 0.0)


def test_known_table_is_complete():
    for info in KNOWN.values():
        assert set(info.sha256) == set(FILES)
        assert all(len(h) == 64 for h in info.sha256.values())
        assert info.num_classes == 10 and info.image_shape == (1, 28, 28)
        assert len(info.mirrors) >= 2


# --------------------------------------------------------------------------------------------
# streamed verification and size caps


def test_idx_check_streams_to_the_same_digest_as_reading(tmp_path):
    from netspec.data.idx import IdxCheck

    for name in FILES:
        for blob in (GZ[name], RAW[name], GZ[name] + gzip.compress(b"", mtime=0)):
            check = IdxCheck(1 << 30)
            for i in range(0, len(blob), 777):  # odd chunk sizes split the header too
                check.feed(blob[i:i + 777])
            assert check.finish() == SHA[name]


@pytest.mark.parametrize("blob, needle", [
    (gzip.compress(RAW[TRAIN_LABELS][:-3], mtime=0), "cut short"),
    (gzip.compress(RAW[TRAIN_LABELS] + b"xx", mtime=0), "longer than its header says"),
    (GZ[TRAIN_LABELS][:-20], "gzip stream is cut short"),
    (b"<html>moved</html>", "HTML"),
    (b"", "empty"),
])
def test_idx_check_rejects_what_read_idx_rejects(blob, needle):
    from netspec.data.idx import IdxCheck

    check = IdxCheck(1 << 30)
    with pytest.raises(ValueError, match=needle):
        check.feed(blob)
        check.finish()


def test_idx_check_stops_a_gzip_bomb_in_bounded_memory():
    import tracemalloc

    from netspec.data.idx import IdxCheck

    content = idx(np.zeros((200, 1000, 100), np.uint8))  # 20 MB of zeros, ~20 kB gzipped
    bomb = gzip.compress(content, mtime=0)
    tracemalloc.start()
    try:
        check = IdxCheck(64 << 20)
        for i in range(0, len(bomb), 4096):
            check.feed(bomb[i:i + 4096])
        assert check.finish() == hashlib.sha256(content).hexdigest()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, f"peak {peak:,} bytes: content was held whole"
    with pytest.raises(ValueError, match="more than the 1,048,576"):  # by its header
        IdxCheck(1 << 20).feed(bomb)
    liar = gzip.compress(idx(np.zeros(10, np.uint8))[:8] + content, mtime=0)  # declares 10
    with pytest.raises(ValueError, match="longer than its header says"):
        IdxCheck(64 << 20).feed(liar)  # stops while feeding, long before 20 MB


@pytest.mark.parametrize("length", ["announced", "unannounced"])
def test_download_over_the_size_cap_is_refused_and_leaves_no_part(tmp_path, server, length):
    headers = {} if length == "announced" else {"Content-Length": ""}
    good = server.serve("good", GZ, headers=headers)
    dest = tmp_path / "dl"
    with pytest.raises(DataError) as excinfo:
        download(tiny_info(mirrors=(good,), max_download_bytes=1000), dest, timeout=5)
    text = str(excinfo.value)
    assert f"{TRAIN_IMAGES}.gz" in text and ("more than the 1,000" in text
                                            if length == "announced" else "more than 1,000" in text)
    assert_clean(dest, {f"{n}.gz" for n in FILES if len(GZ[n]) <= 1000})  # no partial file


def test_download_over_the_decompressed_cap_is_refused(tmp_path, server):
    good = server.serve("good", GZ)
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="decompresses to more than 100,000 bytes"):
        download(tiny_info(mirrors=(good,), max_content_bytes=100_000), dest, timeout=5)


def test_download_verifies_while_streaming_not_by_reading_the_file(tmp_path, server,
                                                                   monkeypatch):
    def whole_file(*args, **kwargs):
        raise AssertionError("download decompressed a whole file to verify it")

    monkeypatch.setattr("netspec.data.idx.read_idx_digest", whole_file)
    monkeypatch.setattr(gzip, "GzipFile", whole_file)
    good = server.serve("good", GZ)
    dest = download(tiny_info(mirrors=(good,)), tmp_path / "dl", timeout=5)
    assert_clean(dest, {f"{n}.gz" for n in FILES})


def test_failed_download_removes_only_the_directories_it_created(tmp_path, server):
    missing = server.serve("missing", {}, status=404)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "keep.txt").write_text("mine")
    with pytest.raises(DataError):
        download(tiny_info(mirrors=(missing,)), tmp_path / "shared" / "data" / "mnist",
                 timeout=5)
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["keep.txt"]


def test_the_data_package_has_one_job_per_module_and_one_table_of_datasets():
    import netspec.data
    from netspec.spec import model as spec

    package = Path(netspec.data.__file__).parent
    for module in package.glob("*.py"):
        assert len(module.read_text().splitlines()) < 400, module.name
    # the spec's checks read the one table of known datasets
    assert spec.KNOWN_DATASETS == {k: (v.image_shape, v.num_classes) for k, v in NAMES.items()}
    assert "28, 28" not in Path(spec.__file__).read_text()
