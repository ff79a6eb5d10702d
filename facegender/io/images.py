"""Image decoding: every image, from any source, is decoded here to an upright RGB PIL image.

Handles EXIF orientation, every common mode (L, LA, P, RGBA, CMYK, I;16, 16-bit PNG),
animated files (first frame) and a pixel limit against decompression bombs. Anything that
cannot be used raises ImageError naming the source and the reason.
"""

from __future__ import annotations

import importlib
import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from .files import DEFAULT_MAX_PIXELS, byte_cap, read_file, too_large

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "decode_bytes", "is_image_path", "load_image"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm",
                    ".pgm", ".jfif"}

# The only decoders tried (those this Pillow has; HEIF once pillow-heif is registered). PIL
# knows ~40 formats: several (TGA, SPIDER, ...) have signatures random bytes can match, and
# EPS hands the file to Ghostscript.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "AVIF", "HEIF")
# Plugins of _FORMATS beyond Image.preinit()'s; HEIF registers itself (pillow-heif's opener).
_MORE_PLUGINS = ("WebPImagePlugin", "TiffImagePlugin", "AvifImagePlugin", "MpoImagePlugin")

# What a file that no decoder accepted really is, judged by its first bytes.
_NOT_IMAGE_SIGNATURES = (
    (b"<!doctype html", "an HTML page, not an image"),
    (b"<html", "an HTML page, not an image"),
    (b"<?xml", "an XML/SVG document, not a raster image"),
    (b"<svg", "an SVG document, not a raster image"),
    (b"%pdf", "a PDF document, not an image"),
    (b"%!ps", "a PostScript/EPS document, not a supported image"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript/EPS document, not a supported image"),
    (b"pk\x03\x04", "a ZIP archive, not an image"),
    (b"\x1f\x8b", "a gzip archive, not an image"),
    (b"{", "a JSON/text file, not an image"),
    (b"[", "a JSON/text file, not an image"),
)
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}

# EXIF orientation -> the transpose that makes the image upright (as in ImageOps).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@lru_cache(maxsize=1)
def _load_plugins() -> None:
    """Register the plugins of _FORMATS only: Image.init() imports all ~50 of Pillow's (28 ms of
    a one-photo run), and with an explicit format list Image.open never needs the others."""
    Image.preinit()  # BMP, GIF, JPEG, PPM, PNG
    for name in _MORE_PLUGINS:
        try:
            importlib.import_module(f"PIL.{name}")
        except ImportError:  # not in this Pillow build (AVIF before Pillow 11.2)
            pass


def _formats() -> list[str]:
    """The formats in _FORMATS this Pillow can open."""
    _load_plugins()
    return [f for f in _FORMATS if f in Image.OPEN]


def _why_not(data: bytes) -> str:
    """The reason for bytes no decoder accepted: what they are, if that can be told."""
    head = data[:64].lstrip().lower()
    for sig, reason in _NOT_IMAGE_SIGNATURES:
        if head.startswith(sig):
            return reason
    if data[4:8] == b"ftyp":  # ISO media: HEIC/AVIF photos and MP4/MOV videos
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "a HEIC/HEIF image, which needs the pillow-heif plugin (pip install pillow-heif)"
        if brand in (b"avif", b"avis"):
            return "an AVIF image, which this Pillow build cannot decode"
        return "a video (MP4/MOV), not an image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP file whose header is corrupt"
    for magic, fmt in _IMAGE_MAGIC:
        if data.startswith(magic):
            return f"a {fmt} file whose header is corrupt"
    return "not a recognised image format (JPEG, PNG, GIF, BMP, WebP, TIFF, PPM)"


class _Source(io.BytesIO):
    """Bytes to decode that note whether the decoder ever asked for data past the end.

    PIL raises on that itself, unless ImageFile.LOAD_TRUNCATED_IMAGES has been set somewhere
    in the process (training code often does): then it fills the missing rows with grey. The
    flag is process-wide, so it is neither read nor set here.
    """

    ran_out = False

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if not chunk and size != 0:
            self.ran_out = True
        return chunk


def _failure(label: str, exc: Exception) -> ImageError:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in msg.lower():
        return ImageError(label, f"image data is truncated ({msg})")
    return ImageError(label, f"image data is corrupt ({msg})")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode in ("1", "L", "RGB") and img.info.get("transparency") is not None:
        # A PNG colour key: pixels of that colour are as transparent as alpha 0.
        try:
            img, mode = img.convert("RGBA"), "RGBA"
        except (ValueError, TypeError):  # a malformed key: ignore it rather than lose the image
            pass
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Wide grey: scale the value range the data was written in to 8 bits, never clip.
        arr = np.asarray(img, dtype=np.float64)
        if arr.ndim == 3:
            arr = arr[..., 0]
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if mode.startswith("I;16") or img.format == "PPM":  # PIL scales PGM/PPM to 16 bits
            top = 65535.0
        elif mode == "F" and lo >= 0 and hi <= 1:
            top = 1.0  # float images are usually 0..1
        elif lo >= 0 and hi <= 255:
            top = 255.0  # 8-bit data held in a wide mode (e.g. img.convert("I"))
        elif mode == "I" and lo >= 0 and hi <= 65535:
            top = 65535.0  # e.g. 16-bit TIFF
        else:
            arr, top = arr - lo, max(hi - lo, 1e-12)  # anything else: stretch
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("P", "PA"):
        # Palette transparency only survives through RGBA.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _upright(img: Image.Image) -> Image.Transpose | None:
    """The transpose that the EXIF orientation asks for, if any.

    Not ImageOps.exif_transpose: that also rewrites the EXIF block and raises on a broken one
    after the orientation was read, which would leave a good photo lying on its side.
    """
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # broken EXIF must not lose an otherwise good image
        return None
    return _UPRIGHT.get(orientation) if isinstance(orientation, int) else None


def _finish(img: Image.Image, label: str) -> Image.Image:
    try:
        method = _upright(img)
        rgb = _to_rgb(img)  # before transposing: that drops img.format, which _to_rgb reads
        return rgb if method is None else rgb.transpose(method)
    except MemoryError:
        raise
    except Exception as exc:  # exotic modes PIL cannot convert
        raise ImageError(label, f"unsupported image mode {img.mode!r} ({exc})") from None


def load_image(
    source: str | os.PathLike | bytes | Image.Image,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> Image.Image:
    """Decode a path, raw bytes or PIL image into an upright RGB image.

    `name` is what error messages call the input (defaults to the path, or '<bytes>').
    Raises ImageError for anything unusable: missing, empty, not a regular file, over the byte
    cap (io.files.byte_cap), truncated, not an image, unsupported format, or more than
    `max_pixels` pixels. An animation gives its first frame.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if isinstance(source, Image.Image):
        label = name or "<image>"
        _check_pixels(source, limit, label)
        try:
            source.load()  # a lazily opened file is decoded only now
        except MemoryError:  # the machine, not the file
            raise
        except Exception as exc:
            raise _failure(label, exc) from None
        img = _finish(source, label)
        return img.copy() if img is source else img  # never hand back the caller's object

    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), name or "<bytes>", limit, max_bytes)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_image() takes a path, bytes or a PIL image, not "
                        f"{type(source).__name__}")
    label = name or os.fsdecode(source)
    data = read_file(source, label, cap=byte_cap(limit, max_bytes))
    return decode_bytes(data, label, limit, max_bytes)


def checked_pixels(img: Image.Image, label: str, max_pixels: int | None = None) -> Image.Image:
    """`img` (decoded RGB, e.g. a video frame) if it has pixels and no more than `max_pixels`
    (default: the limit every decoded image gets); else ImageError naming `label`."""
    _check_pixels(img, DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels), label)
    return img


def _check_pixels(img: Image.Image, limit: int, label: str) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(label, f"image has no pixels ({w}x{h})")
    if w * h > limit:
        raise ImageError(
            label,
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
            "(possible decompression bomb; raise max_pixels / FACEGENDER_MAX_PIXELS to allow)",
        )


_ARITHMETIC_SOF = (b"\xff\xc9", b"\xff\xca", b"\xff\xcb", b"\xff\xcd", b"\xff\xce", b"\xff\xcf")


def _jpeg_too_small(img: Image.Image, data: bytes) -> bool:
    """True when the data is under one bit per 8x8 luma block, the least any Huffman-coded JPEG
    needs (a DC code per block): the header claims far more pixels than the file holds, and
    libjpeg would fill the rest with grey without a word. Arithmetic coding can go lower."""
    blocks = -(-img.size[0] // 8) * -(-img.size[1] // 8)
    if len(data) * 8 >= blocks:
        return False
    return not any(sof in data for sof in _ARITHMETIC_SOF)


class EncodedImage:
    """One image, decoded on demand at the scale each use needs.

    The header is read (and the pixel limit checked) at once; `decode(k)` gives the upright RGB
    image at 1/k of the full size (k = 1, 2, 4 or 8), pixel (x, y) covering full-size pixels
    k*x .. k*x + k on each axis. A JPEG decodes at 1/k straight from its DCT coefficients (PIL's
    draft mode: 22 ms for a 12-MP photo at 1/8 against 56 ms at full size, measured here);
    anything else, or a JPEG with draft=False, is decoded at full size and box-averaged
    (Image.reduce), which gives nearly the same pixels. Each scale is made once and kept while
    the object lives. Raises ImageError as decode_bytes.
    """

    def __init__(self, data: bytes, label: str, max_pixels: int | None = None,
                 max_bytes: int | None = None, *, draft: bool = True) -> None:
        self.label = label
        self._data = data if isinstance(data, bytes) else bytes(data)  # bytearray / memoryview
        self._limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
        cap = byte_cap(self._limit, max_bytes)
        if len(self._data) > cap:
            raise ImageError(label, too_large(len(self._data), cap))
        self._decoded: dict[int, Image.Image] = {}
        self._img: Image.Image | None = self._open()
        self._raw_size = self._img.size
        # MPO: the multi-picture JPEG some phones write; its first frame is a plain JPEG.
        self._draft = draft and self._img.format in ("JPEG", "MPO") and len(self._img.tile) == 1
        self._size: tuple[int, int] | None = None
        if self._draft:  # a JPEG's EXIF is in its header; other formats may need the pixels
            w, h = self._raw_size
            turn = _upright(self._img) in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                                           Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
            self._size = (h, w) if turn else (w, h)

    @classmethod
    def from_image(cls, img: Image.Image, label: str) -> EncodedImage:
        """Wrap an already decoded upright RGB image (smaller scales are box-averaged)."""
        self = cls.__new__(cls)
        self.label, self._data, self._img, self._draft = label, b"", None, False
        self._decoded = {1: img}
        self._raw_size = self._size = img.size
        return self

    def _open(self) -> Image.Image:
        data, label = self._data, self.label
        if len(data) == 0:
            raise ImageError(label, "file is empty (0 bytes)")
        self._fp = fp = _Source(data)
        try:
            # Reads only the header, so the size is checked before any pixel is decoded. Between
            # PIL's own limits (~89 and ~179 MP) PIL warns; warnings.catch_warnings is not
            # thread-safe, so the warning is left alone and the check below still refuses.
            img = Image.open(fp, formats=_formats())
        except UnidentifiedImageError:
            raise ImageError(label, _why_not(data)) from None
        except Image.DecompressionBombError as exc:
            raise ImageError(label, f"possible decompression bomb: {exc}") from None
        except MemoryError:  # the machine, not the file
            raise
        except Exception as exc:  # plugins raise many types on corrupt headers
            raise _failure(label, exc) from None
        _check_pixels(img, self._limit, label)
        if img.format == "JPEG" and _jpeg_too_small(img, data):
            w, h = img.size
            raise ImageError(label, f"image data is truncated or corrupt: {len(data):,} bytes "
                                    f"cannot hold the {w}x{h} JPEG its header claims")
        return img

    @property
    def size(self) -> tuple[int, int]:
        """The upright full-resolution size: what decode(1) returns, what boxes are measured in."""
        if self._size is None:
            self._size = self.decode(1).size
        return self._size

    def reduction_for(self, min_long: float = 0, min_short: float = 0) -> int:
        """The largest k (1, 2, 4 or 8) for which decode(k) still has at least `min_long`
        pixels on its longer side and `min_short` on its shorter."""
        short, long = sorted(self._raw_size)
        return next((k for k in (8, 4, 2) if short >= 8 * k and -(-long // k) >= min_long
                     and -(-short // k) >= min_short), 1)

    def decode(self, k: int = 1) -> Image.Image:
        """The upright RGB image at 1/k of the full size, ceil(size / k) pixels."""
        if k not in (1, 2, 4, 8):
            raise ValueError(f"decode scale must be 1, 2, 4 or 8, not {k}")
        if k not in self._decoded:
            if k == 1 or (self._draft and min(self._raw_size) >= 8 * k):
                self._decoded[k] = self._load(k)
            else:
                self._decoded[k] = self.decode(1).reduce(k)
        return self._decoded[k]

    def _load(self, k: int) -> Image.Image:
        img = self._img if self._img is not None else self._open()
        self._img = None  # a PIL image decodes once: another scale opens the bytes again
        fp = self._fp
        if k > 1:
            w, h = self._raw_size
            img.draft(None, (w // k, h // k))  # reduction_for keeps both sides >= 8k
        fp.ran_out = False  # reading the header may probe past the end; decoding must not
        try:
            img.load()  # the first frame of an animation
        except MemoryError:
            raise
        except Exception as exc:
            raise _failure(self.label, exc) from None
        if fp.ran_out:
            raise ImageError(self.label,
                             "image data is truncated (the file ends before the image)")
        return _finish(img, self.label)


def decode_bytes(data: bytes, label: str, max_pixels: int | None = None,
                 max_bytes: int | None = None) -> Image.Image:
    """Decode encoded image bytes at full size; see load_image."""
    return EncodedImage(data, label, max_pixels, max_bytes).decode(1)
