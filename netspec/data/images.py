"""Image files: finding them in class folders, reading their headers, decoding them with Pillow.

Rules (docs/data.md says them to users):
- classes are the sorted names of the non-hidden subfolders (code-point order: "10" before
  "2"), or the spec's `classes` in its order; files are found recursively in a class folder,
  hidden files and folders are skipped, and a class's files are sorted by relative path;
- image files are told by extension (EXTENSIONS), and their content must be what the
  extension says (a JPEG named .png is a bad file, so is a text file);
- EXIF orientation is applied; the mode conversion is explicit: 16-bit gray is scaled to 8 bits
  (v * 255 / 65535, rounded), never clipped; alpha (LA, RGBA, palette transparency) is
  composited on `background`; gray from colour is ITU-R 601-2 luma (Pillow's "L":
  R*299/1000 + G*587/1000 + B*114/1000); colour from gray repeats the channel;
- resizing uses a named Pillow filter, after an optional centre crop to the target's aspect.

`header` and `decode` never raise for a bad file: they return a reason, so that every bad
file of a dataset is listed at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# extension -> the Pillow formats its content may have (Keras' and torchvision's lists)
EXTENSIONS = {
    ".bmp": ("BMP", "DIB"), ".gif": ("GIF",), ".jpeg": ("JPEG", "MPO"), ".jpg": ("JPEG", "MPO"),
    ".png": ("PNG",), ".ppm": ("PPM",), ".pgm": ("PPM",), ".pbm": ("PPM",),
    ".tif": ("TIFF",), ".tiff": ("TIFF",), ".webp": ("WEBP",),
}
FORMAT_EXTENSION = {"BMP": ".bmp", "GIF": ".gif", "JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png",
                    "PPM": ".ppm", "TIFF": ".tif", "WEBP": ".webp"}
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class BadFile(Exception):
    """Why one file cannot be used (a message for a list of bad files)."""


@dataclass(frozen=True)
class ImageFile:
    path: Path
    label: int
    size: int  # bytes
    mtime_ns: int


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def walk_images(folder: Path, problems: list, seen: set | None = None) -> tuple[list, int]:
    """(image paths under `folder`, sorted by relative path; count of other files), walking
    subfolders and symlinks; loops, broken links and unreadable folders go to `problems` as
    (path, reason)."""
    seen = set() if seen is None else seen
    found, others = [], 0
    try:
        info = os.stat(folder)
    except OSError as e:
        problems.append((str(folder), _os_reason(e, folder)))
        return [], 0
    key = (info.st_dev, info.st_ino)
    if key in seen:
        problems.append((str(folder), "a symlink loop: this folder is one of its own parents"))
        return [], 0
    seen = seen | {key}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        problems.append((str(folder), _os_reason(e, folder)))
        return [], 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            if is_image_name(entry.name) or entry.is_symlink():
                problems.append((str(path), _os_reason(e, path)))
            continue
        if stat.S_ISDIR(mode):
            sub, more = walk_images(path, problems, seen)
            found += sub
            others += more
        elif stat.S_ISREG(mode) and is_image_name(entry.name):
            found.append(path)
        else:
            others += 1
    return found, others


def _os_reason(e: OSError, path: Path) -> str:
    if e.errno == errno.ELOOP:
        return f"a symlink loop ({os.readlink(path) if os.path.islink(path) else 'links'} " \
               "leads back to itself)"
    if e.errno == errno.ENOENT and os.path.islink(path):
        return f"a broken symlink (to {os.readlink(path)}, which does not exist)"
    if isinstance(e, PermissionError):
        return "permission denied: make it readable"
    return f"cannot read: {e.strerror or e}"


def stat_files(paths: list[Path], label: int, problems: list) -> list[ImageFile]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as e:
            problems.append((str(path), _os_reason(e, path)))
            continue
        out.append(ImageFile(path, label, st.st_size, st.st_mtime_ns))
    return out


# ------------------------------------------------------------------ headers


@contextlib.contextmanager
def pixel_limit(max_pixels: int):
    """Pillow's own bomb guard set to `max_pixels` (netspec checks the size itself first)."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def header(path: Path, max_pixels: int) -> tuple:
    """(width, height, gray) as the image will be decoded (EXIF rotation applied where the
    header tells it), or (None, None, reason) for a bad file."""
    try:
        with open_checked(path, max_pixels) as im:
            w, h = im.size
            if im.format in ("JPEG", "MPO", "TIFF", "WEBP") and _orientation(im) in TRANSPOSED:
                w, h = h, w
            return w, h, is_gray(im)
    except BadFile as e:
        return None, None, str(e)


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - damaged EXIF: decode() tells, with the file's reason
        return 1


def is_gray(im) -> bool:
    """Whether the image has no colour: a gray mode, or a palette of grays only."""
    if im.mode in GRAY_MODES:
        return True
    if im.mode in ("P", "PA"):
        palette = im.getpalette() or []
        rgb = np.asarray(palette[:768], np.int64).reshape(-1, 3)
        return bool(len(rgb)) and bool(np.all(rgb == rgb[:, :1]))
    return False


@contextlib.contextmanager
def open_checked(path: Path, max_pixels: int):
    """Image.open with every failure turned into a BadFile: unreadable, not an image, content
    other than the extension says, or more than `max_pixels`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with pixel_limit(2 * max_pixels + 1), Image.open(path) as im:
            allowed = EXTENSIONS.get(Path(path).suffix.lower())
            if allowed is not None and im.format not in allowed:
                right = FORMAT_EXTENSION.get(im.format, f"the {im.format} extension")
                raise BadFile(f"the content is {im.format} but the name ends in "
                              f"{Path(path).suffix}: rename it to {right} (or convert it)")
            w, h = im.size
            if w * h > max_pixels:
                raise BadFile(f"{w:,}x{h:,} = {w * h:,} pixels, more than data.image.max_pixels "
                              f"({max_pixels:,}): refused as a possible decompression bomb; "
                              "raise data.image.max_pixels if the image is genuine")
            yield im
    except BadFile:
        raise
    except UnidentifiedImageError:
        raise BadFile(f"not an image Pillow can read ({_starts(path)})") from None
    except Image.DecompressionBombError as e:
        raise BadFile(f"refused as a possible decompression bomb: {e}") from None
    except PermissionError:
        raise BadFile("permission denied: make the file readable") from None
    except OSError as e:
        text = str(e.strerror or e)
        if "runcated" in text:
            raise BadFile(f"truncated: {text} (the file was cut short)") from None
        raise BadFile(f"cannot read: {text}") from None
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many types for bad headers
        raise BadFile(f"damaged header ({type(e).__name__}: {e})") from None


def _starts(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return "unreadable"
    if not head:
        return "the file is empty"
    text = head.decode("ascii", "replace")
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"it starts with the text {text!r}: a text file?"
    return "it starts with bytes " + " ".join(f"{b:02x}" for b in head[:8])


# ------------------------------------------------------------------ decoding


FILTERS = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
           "lanczos": "LANCZOS", "box": "BOX", "hamming": "HAMMING"}


def decode(path: Path, settings: dict, shape: tuple) -> np.ndarray:
    """The file as uint8 (C, H, W) for `shape` = (C, H, W); BadFile says why it cannot be.

    `settings` is LoadOptions.image_settings(): color (ignored: C decides), resize, size,
    crop_to_aspect_ratio, background, max_pixels.
    """
    from PIL import Image, ImageOps

    channels, height, width = shape
    with open_checked(path, settings["max_pixels"]) as im:
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            pixels = to_channels(im, channels, settings["background"])  # (h, w, C)
        except BadFile:
            raise
        except Exception as e:  # noqa: BLE001 - truncated or corrupt data: a reason to list
            raise BadFile(_decode_reason(e)) from None
    h, w = pixels.shape[:2]
    if settings["resize"] != "none":
        if settings["crop_to_aspect_ratio"]:
            pixels = _centre_crop(pixels, height / width)
        if pixels.shape[:2] != (height, width):
            filt = getattr(Image.Resampling, FILTERS[settings["resize"]])
            img = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if channels == 1
                                                       else pixels))
            pixels = np.asarray(img.resize((width, height), filt)).reshape(height, width, -1)
    elif (h, w) != (height, width):
        raise BadFile(f"{w}x{h} pixels, but the images are {width}x{height} (input.shape): "
                      "set data.image.resize (e.g. bilinear) to resize, or fix the file")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W)


def _decode_reason(e: Exception) -> str:
    text = str(e)
    if "truncated" in text:
        return f"truncated: {text} (the file was cut short)"
    return f"cannot be decoded ({type(e).__name__}: {text})"


def to_channels(im, channels: int, background) -> np.ndarray:
    """uint8 (h, w, channels) from a Pillow image of any mode, by the rules above."""
    mode = im.mode
    alpha = None
    if mode in SIXTEEN_BIT:
        values = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        color = ((values * 255 + 32767) // 65535).astype(np.uint8)[..., None]  # rounded
    elif mode == "F":
        raise BadFile("32-bit floating-point pixels: netspec reads 8- and 16-bit images; save "
                      "it as an 8- or 16-bit PNG")
    elif mode in ("1", "L"):
        color = np.asarray(im.convert("L"))[..., None]
    elif mode in ("LA", "La"):
        both = np.asarray(im.convert("LA"))
        color, alpha = both[..., :1], both[..., 1]
    elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        both = np.asarray(im.convert("RGBA"))
        color, alpha = both[..., :3], both[..., 3]
    else:  # RGB, P, CMYK, YCbCr, LAB, HSV, ...
        color = np.asarray(im.convert("RGB"))
    bg = np.asarray(background, np.int64)
    if color.shape[-1] == 1:
        bg = luma(bg[None, None, :])[0, 0]
    if alpha is not None:  # (c * a + bg * (255 - a)) / 255, rounded, in integers
        a = alpha.astype(np.int64)[..., None]
        color = ((color.astype(np.int64) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
    if channels == 1 and color.shape[-1] == 3:
        color = luma(color)
    elif channels == 3 and color.shape[-1] == 1:
        color = np.repeat(color, 3, axis=-1)
    return color


def luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 1) uint8: Pillow's "L" conversion, R*299/1000 + G*587/1000 +
    B*114/1000 in its fixed point (the same integers as Image.convert("L"))."""
    v = rgb.astype(np.int64)
    out = (v[..., 0] * 19595 + v[..., 1] * 38470 + v[..., 2] * 7471 + 0x8000) >> 16
    return out.astype(np.uint8)[..., None]


def _centre_crop(pixels: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred window of `pixels` (h, w, C) with height / width = aspect."""
    h, w = pixels.shape[:2]
    if h > aspect * w:
        new_h = max(1, round(aspect * w))
        top = (h - new_h) // 2
        return pixels[top:top + new_h]
    new_w = max(1, round(h / aspect))
    left = (w - new_w) // 2
    return pixels[:, left:left + new_w]
