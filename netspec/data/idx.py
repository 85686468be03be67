"""Reading IDX files (the format of MNIST): gzipped or raw, every header field checked.

`read_idx(path)` returns the array; `read_idx_digest(path)` also the SHA-256 of the decompressed
content. `IdxCheck` checks and hashes a byte stream as it arrives (used while downloading), so no
file is decompressed whole in memory just to verify it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from netspec.errors import DataError, Problem

CHUNK = 1 << 20  # bytes per read when decompressing, hashing or downloading

# IDX data type codes (third byte of the magic number); netspec reads only 0x08.
_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
              0x0E: "float64"}



def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """The array stored in the IDX file `path` (gzipped or raw; detected from the content).

    Only unsigned-byte IDX (magic 0x00 0x00 0x08 NDIM) is accepted. The header's dimensions
    must match the payload exactly; `ndim`, when given, is the number of dimensions required.
    Returns a writable uint8 array of the declared shape. Raises DataError naming the file.
    """
    return read_idx_digest(Path(path), ndim=ndim)[0]


def read_idx_digest(path: Path, *, ndim: int | None = None) -> tuple[np.ndarray, str]:
    """(array, SHA-256 hex of the decompressed bytes) of the IDX file `path`."""

    def fail(message: str) -> DataError:
        return DataError([Problem(message, file=str(path))])

    redo = "; replace the file with a good copy (or delete it and let netspec download it)"
    try:
        with open(path, "rb") as raw:
            start = raw.read(4)
            raw.seek(0)
            compressed = start[:2] == b"\x1f\x8b"
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            digest = hashlib.sha256()
            try:
                header = _read_exactly(stream, 4)
                magic_ok = len(header) == 4 and header[:2] == b"\0\0"
                if not magic_ok or header[2] not in _IDX_TYPES:
                    if not start:
                        raise fail("the file is empty (0 bytes): it was truncated" + redo)
                    shown = " ".join(f"{b:02x}" for b in header) or "nothing"
                    what = "not an IDX file"
                    if path.name.endswith(".gz") and not compressed:
                        what += " and not gzip-compressed although its name ends in .gz"
                    if header[:1] == b"<":
                        what += " (it looks like an HTML or XML page)"
                    raise fail(f"{what}: it starts with bytes {shown}, expected 00 00 08 NN "
                               f"(unsigned-byte IDX with NN dimensions){redo}")
                if header[2] != 0x08:
                    raise fail(f"IDX data type 0x{header[2]:02x} ({_IDX_TYPES[header[2]]}) is "
                               "not supported: netspec reads unsigned-byte (0x08) IDX files, "
                               "the format of MNIST")
                n_dims = header[3]
                if n_dims == 0:
                    raise fail("the IDX header declares 0 dimensions" + redo)
                if ndim is not None and n_dims != ndim:
                    raise fail(f"the IDX header declares {n_dims} dimension(s), expected "
                               f"{ndim} ({_ROLE_SHAPES.get(ndim, 'array')}): is this the "
                               "right file?")
                dims_bytes = _read_exactly(stream, 4 * n_dims)
                if len(dims_bytes) < 4 * n_dims:
                    raise fail(f"truncated header: it declares {n_dims} dimensions (needs "
                               f"{4 + 4 * n_dims} bytes) but the file ends after "
                               f"{4 + len(dims_bytes)} bytes{redo}")
                dims = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
                size = math.prod(dims)  # payload bytes the header promises
                digest.update(header)
                digest.update(dims_bytes)
                payload = bytearray()
                while len(payload) < size:
                    chunk = stream.read(min(CHUNK, size - len(payload)))
                    if not chunk:
                        break
                    payload += chunk
                shape = "x".join(str(d) for d in dims)
                if len(payload) < size:
                    raise fail(f"truncated: the header declares {shape} = {size} bytes of data "
                               f"but only {len(payload)} follow{redo}")
                extra = 0
                while chunk := stream.read(CHUNK):
                    extra += len(chunk)
                if extra:
                    raise fail(f"{extra} unexpected byte(s) after the {shape} = {size} bytes "
                               f"of data the header declares: the header is wrong{redo}")
                digest.update(payload)
            except (OSError, EOFError, zlib.error) as exc:
                raise fail(f"corrupt gzip data ({exc}): the file is damaged or was cut short "
                           f"while downloading{redo}") from None
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a directory, expected an IDX file") from None
    except PermissionError:
        raise fail("permission denied: make the file readable") from None
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or exc}") from None
    # uint8 (dims...), a view of the bytearray, so writable
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims), digest.hexdigest()


_ROLE_SHAPES = {1: "labels: (count,)", 3: "images: (count, height, width)"}


def _read_exactly(stream, n: int) -> bytes:
    """Up to `n` bytes; fewer only at the end of the stream."""
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out



class IdxCheck:
    """Checks and hashes an IDX file while its bytes arrive, gzipped or raw, in bounded memory.

        check = IdxCheck(max_content)
        for chunk in chunks:
            check.feed(chunk)      # ValueError as soon as the content cannot be valid IDX
        digest = check.finish()    # SHA-256 of the decompressed content; ValueError if cut short

    It accepts what `read_idx` accepts (unsigned-byte IDX, exactly the declared size) and
    never holds more than about CHUNK decompressed bytes; `max_content` caps the decompressed
    size (a gzip bomb stops there).
    """

    def __init__(self, max_content: int):
        self.max_content = max_content
        self.digest = hashlib.sha256()
        self.start = b""  # the first two raw bytes decide gzip or not
        self.inflate = None  # zlib decompressor, or False for raw content
        self.head = b""  # decompressed bytes until the header is complete
        self.size = 0  # decompressed bytes so far
        self.expected = None  # header + payload bytes the header declares

    def feed(self, data: bytes) -> None:
        if self.inflate is None:
            self.start += data
            if len(self.start) < 2:
                return
            data, self.start = self.start, b""
            self.inflate = (zlib.decompressobj(16 + zlib.MAX_WBITS)
                            if data[:2] == b"\x1f\x8b" else False)
        if self.inflate is False:
            self._content(data)
            return
        try:
            while data:
                if self.inflate.eof:  # a second gzip member (or trailing zeros, ignored)
                    if not data.strip(b"\0"):
                        return
                    self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._content(self.inflate.decompress(data, CHUNK))  # at most CHUNK bytes
                data = self.inflate.unconsumed_tail or self.inflate.unused_data
        except zlib.error as exc:
            raise ValueError(f"corrupt gzip data ({exc})") from None

    def _content(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_content:
            raise ValueError(f"it decompresses to more than {self.max_content:,} bytes, more "
                             "than such a file can hold")
        if self.expected is not None and self.size > self.expected:
            raise ValueError(f"longer than its header says: more than the {self.expected:,} "
                             "bytes it declares")
        self.digest.update(data)
        if self.expected is None:
            self.head += data
            self._parse_header()

    def _parse_header(self) -> None:
        head = self.head
        if len(head) < 4:
            return
        if head[:3] != b"\0\0\x08" or head[3] == 0:
            shown = " ".join(f"{b:02x}" for b in head[:4])
            html = " (it looks like an HTML or XML page)" if head[:1] == b"<" else ""
            raise ValueError(f"not an unsigned-byte IDX file: it starts with bytes {shown}, "
                             f"expected 00 00 08 NN{html}")
        n_dims = head[3]
        if len(head) < 4 + 4 * n_dims:
            return
        dims = np.frombuffer(head[4:4 + 4 * n_dims], dtype=">u4")
        self.expected = 4 + 4 * n_dims + math.prod(int(d) for d in dims)
        if self.expected > self.max_content:
            raise ValueError(f"its header declares {self.expected:,} bytes, more than the "
                             f"{self.max_content:,} such a file can hold")
        self.head = b""

    def finish(self) -> str:
        """The SHA-256 (hex) of the decompressed content; ValueError if it is incomplete."""
        if self.inflate is None:
            raise ValueError("the file is empty" if not self.start else "the file is cut short")
        if self.inflate is not False:
            try:
                self._content(self.inflate.flush())  # output zlib still held back
            except zlib.error as exc:
                raise ValueError(f"corrupt gzip data ({exc})") from None
        if self.inflate is not False and not self.inflate.eof:
            raise ValueError("the gzip stream is cut short")
        if self.expected is None:
            raise ValueError(f"the IDX header is cut short after {self.size} bytes")
        if self.size != self.expected:
            what = "cut short" if self.size < self.expected else "longer than its header says"
            raise ValueError(f"{what}: {self.size:,} bytes of content, the header declares "
                             f"{self.expected:,}")
        return self.digest.hexdigest()


def check_idx_file(path: Path, max_content: int) -> str:
    """SHA-256 of the decompressed content of the IDX file `path`, read in chunks and checked
    as by IdxCheck; OSError or ValueError if it cannot be read or is not valid IDX."""
    check = IdxCheck(max_content)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            check.feed(chunk)
    return check.finish()
