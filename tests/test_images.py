"""Image folders: classes, splits, decoding rules (EXIF, modes, 16-bit, alpha, resize), the
decode cache, and every reliability case of a bad file, each a clear error listing all of them."""

import builtins
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netspec.data import LoadOptions, load_dataset, prepare
from netspec.data.images import decode, luma
from netspec.errors import DataError

SETTINGS = {"color": "auto", "resize": "none", "size": None, "crop_to_aspect_ratio": False,
            "background": [255, 255, 255], "max_pixels": 89_478_485}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def save(path: Path, array: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt, **kw)
    return path


def folder(root: Path, classes=("a", "b"), n=6, size=(8, 8), rgb=False, seed=0) -> Path:
    """root/<class>/<i>.png of random pixels; returns root."""
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(n):
            shape = (*size, 3) if rgb else size
            save(root / c / f"{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def load(root, **kw):
    shape = kw.pop("input_shape", (1, 8, 8))
    return load_dataset(str(root), options=LoadOptions(input_shape=shape, **kw))


def messages(excinfo) -> str:
    return "\n".join(str(p) for p in excinfo.value.problems)


# ------------------------------------------------------------------ layout and classes


def test_one_folder_per_class_holds_out_a_seeded_stratified_test_split(tmp_path):
    root = folder(tmp_path / "d", classes=("b", "a", "c"), n=10)
    (root / ".hidden").mkdir()
    save(root / ".hidden" / "x.png", np.zeros((8, 8), np.uint8))
    save(root / "a" / ".DS_x.png", np.zeros((8, 8), np.uint8))
    (root / "a" / "notes.txt").write_text("not an image")
    ds = load(root, test_fraction=0.2, split_seed=3)
    assert ds.class_names == ("a", "b", "c") and ds.kind == "images"
    assert len(ds.train) == 24 and len(ds.test) == 6
    assert np.bincount(ds.test.labels).tolist() == [2, 2, 2]  # stratified
    assert ds.held_out == {"fraction": 0.2, "seed": 3, "count": 6}
    assert not set(ds.train.files) & set(ds.test.files)
    assert any("notes.txt" in n or "not an image" in n for n in ds.notes)
    again = load(root, test_fraction=0.2, split_seed=3)
    assert again.test.files == ds.test.files
    other = load(root, test_fraction=0.2, split_seed=4)
    assert other.test.files != ds.test.files  # the seed decides


def test_train_and_test_folders_are_the_two_splits_in_class_then_file_order(tmp_path):
    for split in ("train", "test"):
        folder(tmp_path / "d" / split, classes=("10", "2"), n=3)
    ds = load(tmp_path / "d")
    assert ds.class_names == ("10", "2")  # code-point order, as Keras and torchvision
    assert ds.held_out is None and len(ds.train) == 6 and len(ds.test) == 6
    names = [Path(f).relative_to(tmp_path / "d" / "train").as_posix() for f in ds.train.files]
    assert names == ["10/00.png", "10/01.png", "10/02.png", "2/00.png", "2/01.png", "2/02.png"]
    pixels = np.asarray(Image.open(tmp_path / "d" / "train" / "2" / "01.png"))
    assert np.array_equal(ds.train.images[4, 0], pixels)


def test_classes_setting_fixes_the_order_and_the_folders(tmp_path):
    root = folder(tmp_path / "d", classes=("a", "b", "c"), n=4)
    ds = load(root, classes=["c", "a"])
    assert ds.class_names == ("c", "a") and ds.num_classes == 2
    with pytest.raises(DataError, match="'z'.*no such folder"):
        load(root, classes=["a", "z"])


def test_a_test_class_that_training_lacks_is_an_error(tmp_path):
    folder(tmp_path / "d" / "train", classes=("a", "b"))
    folder(tmp_path / "d" / "test", classes=("a", "b", "extra"))
    with pytest.raises(DataError, match="classes that training lacks: extra"):
        load(tmp_path / "d")


def test_an_empty_class_folder_is_an_error(tmp_path):
    root = folder(tmp_path / "d", classes=("a", "b"))
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="'empty' holds no images"):
        load(root)


# ------------------------------------------------------------------ decoding rules


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    path = tmp_path / "x.png"
    Image.fromarray(values).save(path)
    out = decode(path, SETTINGS, (1, 1, 4))
    assert out[0, 0].tolist() == [0, 1, 128, 255]  # round(v * 255 / 65535), not min(v, 255)


def test_alpha_is_composited_on_the_stated_background(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque: itself
    rgba[0, 1] = (200, 100, 0, 0)  # transparent: the background
    rgba[0, 2] = (200, 100, 0, 128)  # half: a blend
    path = save(tmp_path / "x.png", rgba)
    white = decode(path, SETTINGS, (3, 1, 3))[:, 0].T
    assert white[0].tolist() == [200, 100, 0] and white[1].tolist() == [255, 255, 255]
    assert white[2].tolist() == [(200 * 128 + 255 * 127 + 127) // 255,
                                 (100 * 128 + 255 * 127 + 127) // 255, (255 * 127 + 127) // 255]
    black = decode(path, {**SETTINGS, "background": [0, 0, 0]}, (3, 1, 3))[:, 0].T
    assert black[1].tolist() == [0, 0, 0]


def test_gray_from_colour_is_pillows_luma_and_colour_from_gray_repeats(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save(tmp_path / "c.png", rgb)
    gray = decode(path, SETTINGS, (1, 5, 7))[0]
    assert np.array_equal(gray, np.asarray(Image.fromarray(rgb).convert("L")))
    assert np.array_equal(luma(rgb)[..., 0], gray)
    g = save(tmp_path / "g.png", gray)
    assert np.array_equal(decode(g, SETTINGS, (3, 5, 7)), np.stack([gray] * 3))


def test_palette_and_bilevel_images_decode(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (255, 0, 0)
    p = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(p)
    assert decode(p, SETTINGS, (3, 4, 4))[:, 0, 0].tolist() == [255, 0, 0]
    b = tmp_path / "b.png"
    Image.fromarray(rgb[..., 0] > 0).convert("1").save(b)
    assert decode(b, SETTINGS, (1, 4, 4))[0, :, 0].tolist() == [255, 255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((2, 4, 3), np.uint8)  # 4 wide, 2 high; the top-left pixel white
    img[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the displayed image is 2 wide, 4 high
    path = tmp_path / "r.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=100)
    out = decode(path, SETTINGS, (1, 4, 2))
    assert out.shape == (1, 4, 2) and out[0, 0, 1] > 200  # the white pixel is now top-right


def test_resize_uses_the_named_interpolation_and_a_differing_size_without_it_is_an_error(
        tmp_path):
    root = tmp_path / "d"
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        for i, side in enumerate((10, 12, 9)):
            save(root / c / f"{i}.png", rng.integers(0, 256, (side, side), dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load(root, input_shape=(1, 10, 10))
    text = messages(e)
    assert "4 bad image files" in text and "12x12 pixels" in text and "9x9 pixels" in text
    assert "data.image.resize" in text
    ds = load(root, input_shape=(1, 8, 8), resize="bicubic")
    path = root / "a" / "1.png"
    expected = np.asarray(Image.open(path).resize((8, 8), Image.Resampling.BICUBIC))
    split = ds.train if str(path) in ds.train.files else ds.test
    assert np.array_equal(split.images[split.files.index(str(path)), 0], expected)
    assert ds.train.images.shape[1:] == (1, 8, 8)
    bilinear = load(root, input_shape=(1, 8, 8), resize="bilinear")
    assert not np.array_equal(bilinear.train.images, ds.train.images)  # the name matters


def test_crop_to_aspect_ratio_takes_the_centre(tmp_path):
    img = np.zeros((4, 8), np.uint8)
    img[:, 2:6] = 255  # a white centre square in a 4x8 image
    path = save(tmp_path / "x.png", img)
    settings = {**SETTINGS, "resize": "nearest", "crop_to_aspect_ratio": True}
    assert decode(path, settings, (1, 4, 4)).min() == 255


# ------------------------------------------------------------------ reliability: bad files


def bad_png_dataset(tmp_path) -> Path:
    return folder(tmp_path / "d", classes=("a", "b"), n=4)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A real PNG of width x height: 1-bit gray, every row zero (compressed, it is small)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, 1, 0, 0, 0, 0)) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_every_bad_file_is_listed_in_one_error_and_nothing_is_cached(tmp_path):
    root = bad_png_dataset(tmp_path)
    (root / "a" / "text.png").write_text("hello, I am not a picture\n")  # text named .png
    jpeg = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(jpeg, "JPEG")
    (root / "a" / "cut.jpg").write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])  # cut
    save(root / "b" / "tiny.png", np.zeros((1, 1), np.uint8))  # a 1x1 image
    png_header_only(root / "b" / "huge.png", 20_000, 20_000)  # 400 Mpx: a bomb
    save(root / "b" / "jpeg.png", np.zeros((8, 8, 3), np.uint8), "JPEG")  # mislabelled
    os.symlink(root / "a" / "loop.png", root / "a" / "loop.png")  # a symlink loop
    with pytest.raises(DataError) as e:
        load(root)
    text = messages(e)
    assert "6 bad image files" in text and "nothing was trained" in text
    for name, why in (("text.png", "a text file?"), ("cut.jpg", "truncated"),
                      ("tiny.png", "1x1 pixels"), ("huge.png", "decompression bomb"),
                      ("jpeg.png", "content is JPEG but the name ends in .png"),
                      ("loop.png", "symlink loop")):
        line = next((ln for ln in text.splitlines() if name in ln), "")
        assert why in line, (name, text)
    assert not list((tmp_path / "cache" / "netspec" / "decoded").glob("[0-9a-f]*"))


def test_an_unreadable_file_is_listed(tmp_path, monkeypatch):
    root = bad_png_dataset(tmp_path)
    locked = save(root / "a" / "locked.png", np.zeros((8, 8), np.uint8))
    real_open = builtins.open

    def guarded(file, *args, **kw):  # root reads any file: refuse this one as chmod 000 would
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", guarded)
    locked.chmod(0)
    with pytest.raises(DataError) as e:
        load(root)
    assert "locked.png: permission denied" in messages(e)


def test_bad_files_can_be_skipped_and_are_listed(tmp_path):
    root = bad_png_dataset(tmp_path)
    (root / "a" / "text.png").write_text("not an image")
    ds = load(root, skip_bad=True)
    assert len(ds.train) + len(ds.test) == 8
    assert [Path(f).name for f, _ in ds.skipped] == ["text.png"]
    again = load(root, skip_bad=True)  # from the cache: still listed
    assert [Path(f).name for f, _ in again.skipped] == ["text.png"]
    with pytest.raises(DataError, match="1 bad image file"):
        load(root)  # the cache never hides a bad file from a run that does not skip


# ------------------------------------------------------------------ the cache


def test_decoding_is_cached_by_files_and_settings(tmp_path, monkeypatch):
    root = folder(tmp_path / "d", n=80, rgb=True)  # enough files for worker processes
    calls = []
    first = load(root, input_shape=(3, 8, 8), workers=2)
    assert isinstance(first.train.images, np.memmap)
    from netspec.data import cache

    monkeypatch.setattr(cache, "decode_into_cache", lambda *a, **k: calls.append(1))
    second = load(root, input_shape=(3, 8, 8))
    assert not calls and np.array_equal(second.train.images, first.train.images)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    gray = load(root, input_shape=(1, 8, 8), color="grayscale")  # other settings: decoded
    assert gray.train.images.shape[1] == 1
    path = root / "a" / "00.png"
    save(path, np.zeros((8, 8, 3), np.uint8))
    os.utime(path, ns=(1, 1))  # another size or time: decoded again
    third = load(root, input_shape=(3, 8, 8))
    assert not np.array_equal(third.train.images, first.train.images)
    sequential = load(root, input_shape=(3, 8, 8), workers=1, color="rgb")
    assert np.array_equal(sequential.train.images, third.train.images)


def test_a_large_memory_mapped_dataset_is_normalised_into_a_mapped_file(tmp_path):
    root = folder(tmp_path / "d", n=10, rgb=True)
    ds = load(root, input_shape=(3, 8, 8))
    small = prepare(ds)
    mapped = prepare(ds, in_memory_limit=0)
    assert isinstance(mapped["train"][0], np.memmap)
    assert np.array_equal(mapped["train"][0], small["train"][0])
    assert len(small.mean) == 3  # per channel
    again = prepare(ds, in_memory_limit=0)  # reused, not recomputed
    assert again["train"][0].filename == mapped["train"][0].filename


def test_images_all_of_another_size_are_a_spec_error_not_a_list_of_bad_files(tmp_path):
    from netspec.errors import SpecError

    root = folder(tmp_path / "d", n=5, size=(12, 12))
    save(root / "a" / "odd.png", np.zeros((8, 8), np.uint8))  # input.shape's size, but alone

    def check(shape, kind):
        if shape != (1, 8, 8):
            raise SpecError(f"images are {shape}")

    with pytest.raises(SpecError, match=r"\(1, 12, 12\)"):
        load_dataset(str(root), options=LoadOptions(input_shape=(1, 8, 8)), check_shape=check)
