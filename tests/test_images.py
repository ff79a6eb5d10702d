"""A generated corpus of odd and broken image files run through facegender.images.

Every file is built in a temporary folder from scratch, so the test needs no fixtures on disk.
Good files must come back as upright RGB with the colours that were drawn; bad files must raise
ImageError naming the file and a specific reason.
"""

from __future__ import annotations

import io
import os
import random
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from facegender.errors import ImageError
from facegender.io.images import decode_bytes, load_image

W, H = 48, 32  # not square, so a missed 90-degree rotation shows in the size
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


# --------------------------------------------------------------------------- builders


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def quad() -> Image.Image:
    """Upright pattern: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    img = Image.new("RGB", (W, H))
    img.paste(RED, (0, 0, W // 2, H // 2))
    img.paste(GREEN, (W // 2, 0, W, H // 2))
    img.paste(BLUE, (0, H // 2, W // 2, H))
    img.paste(YELLOW, (W // 2, H // 2, W, H))
    return img


def jpeg(img: Image.Image, **kw) -> bytes:
    return save(img, "JPEG", quality=95, subsampling=0, **kw)


# How to store the pattern so that a viewer applying the orientation shows it upright.
_STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def oriented(fmt: str, orientation: int) -> Callable[[], bytes]:
    def build() -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = quad().transpose(_STORED[orientation])
        if fmt == "JPEG":
            return jpeg(stored, exif=exif)
        return save(stored, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))

    return build


def with_app1(payload: bytes, img: Image.Image | None = None) -> bytes:
    """A JPEG of the pattern with a hand-made APP1 (EXIF) segment right after SOI."""
    data = jpeg(img or quad())
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + seg + data[2:]


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """Little-endian TIFF header + one IFD; entries are (tag, type, count, 4-byte value)."""
    body = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        body += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", next_ifd)


def png_chunk(cid: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))


def raw_png(width: int, height: int, depth: int, ctype: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand, for bit depths and sizes PIL will not write itself."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"")
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def rows16(pixels: list[tuple[int, ...]], height: int = 2) -> bytes:
    """Big-endian 16-bit PNG scanlines (filter 0), every row the same."""
    row = b"\0" + b"".join(struct.pack(f">{len(p)}H", *p) for p in pixels)
    return row * height


LEVELS16 = [65535, 32768, 0, 1000]  # -> 255, 128, 0, 4 (scaled, never clipped)
LEVELS8 = [255, 128, 0, 4]


def gray16_png_pil() -> bytes:
    arr = np.tile(np.array(LEVELS16, dtype=np.uint16), (2, 1))
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    return save(img, "PNG")


def rgba() -> Image.Image:
    arr = np.zeros((2, 4, 4), dtype=np.uint8)
    arr[:, 0] = (255, 0, 0, 0)  # fully transparent red -> white, not red or black
    arr[:, 1] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    arr[:, 2] = (0, 255, 0, 255)  # opaque green stays green
    arr[:, 3] = (0, 0, 0, 0)  # fully transparent black -> white
    return Image.fromarray(arr, "RGBA")


def la() -> Image.Image:
    arr = np.zeros((2, 3, 2), dtype=np.uint8)
    arr[:, 0] = (0, 0)
    arr[:, 1] = (0, 255)
    arr[:, 2] = (100, 255)
    return Image.fromarray(arr, "LA")


def palette(transparent: bool) -> Callable[[], bytes]:
    def build() -> bytes:
        img = Image.new("P", (W, H), 0)
        img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        img.paste(1, (W // 2, 0, W, H))
        return save(img, "PNG", **({"transparency": 0} if transparent else {}))

    return build


def transparent_gif() -> bytes:
    img = Image.new("P", (W, H), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (W // 2, 0, W, H))
    return save(img, "GIF", transparency=0)


def one_bit() -> Image.Image:
    img = Image.new("1", (W, H), 0)
    img.paste(1, (0, 0, W // 2, H))
    return img


def animated(fmt: str, **kw) -> Callable[[], bytes]:
    def build() -> bytes:
        frames = [Image.new("RGB", (W, H), c) for c in (RED, BLUE, GREEN)]
        data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100,
                    **kw)
        with Image.open(io.BytesIO(data)) as im:
            assert im.n_frames == 3, "the builder must really write an animation"
        return data

    return build


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("face.jpg", jpeg(quad()))
    return buf.getvalue()


def pgm16() -> bytes:
    header = f"P5\n{len(LEVELS16)} 2\n65535\n".encode()
    return header + struct.pack(f">{len(LEVELS16)}H", *LEVELS16) * 2


# --------------------------------------------------------------------------- checkers


def px(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return img.getpixel((x, y))


def near(got, want, tol: int) -> bool:
    return all(abs(int(g) - int(w)) <= tol for g, w in zip(got, want, strict=True))


def is_quad(tol: int = 40) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        assert img.size == (W, H), f"size {img.size}: not upright"
        for (x, y), want in {
            (W // 4, H // 4): RED, (3 * W // 4, H // 4): GREEN,
            (W // 4, 3 * H // 4): BLUE, (3 * W // 4, 3 * H // 4): YELLOW,
        }.items():
            assert near(px(img, x, y), want, tol), f"({x},{y}) = {px(img, x, y)}, want {want}"

    return check


def is_flat(colour, tol: int = 3, size=(W, H)) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        assert img.size == size
        arr = np.asarray(img).reshape(-1, 3)
        assert (np.abs(arr.astype(int) - colour).max()) <= tol, f"got {arr.min(0)}..{arr.max(0)}"

    return check


def is_row(colours, tol: int = 2) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        assert img.size == (len(colours), 2)
        for x, want in enumerate(colours):
            for y in (0, 1):
                assert near(px(img, x, y), want, tol), f"({x},{y}) = {px(img, x, y)}, want {want}"

    return check


def halves(left, right, tol: int = 2) -> Callable[[Image.Image], None]:
    def check(img: Image.Image) -> None:
        assert img.size == (W, H)
        assert near(px(img, W // 4, H // 2), left, tol), px(img, W // 4, H // 2)
        assert near(px(img, 3 * W // 4, H // 2), right, tol), px(img, 3 * W // 4, H // 2)

    return check


def key_is_white(img: Image.Image) -> None:
    """quad() saved with red as the PNG colour key: red is transparent, so white."""
    assert img.size == (W, H)
    assert px(img, W // 4, H // 4) == WHITE and px(img, 3 * W // 4, H // 4) == GREEN


GREY16 = [(v, v, v) for v in LEVELS8]

# filename -> (builder, checker)
GOOD: dict[str, tuple[Callable[[], bytes], Callable[[Image.Image], None]]] = {
    # EXIF orientation: the stored pixels are rotated; the result must be upright.
    "exif_orient_3.jpg": (oriented("JPEG", 3), is_quad()),
    "exif_orient_6.jpg": (oriented("JPEG", 6), is_quad()),
    "exif_orient_8.jpg": (oriented("JPEG", 8), is_quad()),
    "exif_orient_6.png": (oriented("PNG", 6), is_quad(0)),
    "exif_orient_8.webp": (oriented("WEBP", 8), is_quad(0)),
    "orient_6.tif": (lambda: save(quad().transpose(_STORED[6]), "TIFF", tiffinfo={0x0112: 6}),
                     is_quad(0)),
    # Every common mode.
    "mode_L.png": (lambda: save(Image.new("L", (W, H), 200), "PNG"), is_flat((200,) * 3, 0)),
    "mode_LA.png": (lambda: save(la(), "PNG"), is_row([WHITE, BLACK, (100,) * 3], 0)),
    "mode_P.png": (palette(False), halves(RED, BLUE, 0)),
    "mode_P_transparent.png": (palette(True), halves(WHITE, BLUE, 0)),
    "mode_P_transparent.gif": (transparent_gif, halves(WHITE, BLUE, 0)),
    "mode_RGBA.png": (lambda: save(rgba(), "PNG"),
                      is_row([WHITE, (127, 127, 127), GREEN, WHITE], 1)),
    "mode_RGBA.webp": (lambda: save(rgba(), "WEBP", lossless=True, exact=True),
                       is_row([WHITE, (127, 127, 127), GREEN, WHITE], 1)),
    "mode_CMYK.jpg": (lambda: jpeg(Image.new("CMYK", (W, H), (0, 255, 255, 0))),
                      is_flat(RED, 8)),
    "mode_CMYK.tif": (lambda: save(Image.new("CMYK", (W, H), (255, 0, 255, 0)), "TIFF"),
                      is_flat(GREEN, 0)),
    "rgb_colour_key.png": (lambda: save(quad(), "PNG", transparency=RED),
                           key_is_white),
    "L_colour_key.png": (lambda: save(Image.new("L", (W, H), 7), "PNG", transparency=7),
                         is_flat(WHITE, 0)),
    "mode_I16.png": (gray16_png_pil, is_row(GREY16, 1)),
    "mode_I16.tif": (lambda: save(Image.open(io.BytesIO(gray16_png_pil())), "TIFF"),
                     is_row(GREY16, 1)),
    "float32.tif": (lambda: save(Image.fromarray(np.full((H, W), 0.5, np.float32), "F"), "TIFF"),
                    is_flat((128,) * 3, 0)),
    "gray16_raw.png": (lambda: raw_png(4, 2, 16, 0, rows16([(v,) for v in LEVELS16])),
                       is_row(GREY16, 1)),
    "rgb16_raw.png": (lambda: raw_png(2, 2, 16, 2, rows16([(65535, 32768, 0), (0, 0, 65535)])),
                      is_row([(255, 128, 0), BLUE], 1)),
    "rgba16_raw.png": (lambda: raw_png(2, 2, 16, 6, rows16([(0, 0, 0, 0),
                                                            (65535, 0, 0, 65535)])),
                       is_row([WHITE, RED], 1)),
    "gray16.pgm": (pgm16, is_row(GREY16, 1)),
    # 16-bit but very dark: must stay dark, not be read as 8-bit data.
    "dark16.pgm": (lambda: b"P5\n2 2\n65535\n" + struct.pack(">4H", 255, 0, 255, 0),
                   is_row([(1, 1, 1), BLACK], 0)),
    "twelve_bit.pgm": (lambda: b"P5\n2 2\n4095\n" + struct.pack(">4H", 4095, 2048, 4095, 2048),
                       is_row([WHITE, (128, 128, 128)], 1)),
    "mode_1.png": (lambda: save(one_bit(), "PNG"), halves(WHITE, BLACK, 0)),
    "mode_1.tif": (lambda: save(one_bit(), "TIFF"), halves(WHITE, BLACK, 0)),
    # Animations: the first frame.
    "animated.gif": (animated("GIF"), is_flat(RED, 0)),
    "animated.webp": (animated("WEBP", lossless=True), is_flat(RED, 0)),
    "animated.png": (animated("PNG"), is_flat(RED, 0)),  # APNG
    "stereo.mpo": (animated("MPO", quality=95), is_flat(RED, 4)),  # multi-picture JPEG
    "stereo_mpo.jpg": (animated("MPO", quality=95), is_flat(RED, 4)),
    # Sizes, encodings, containers.
    "tiny_1x1.png": (lambda: save(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
                     is_flat((10, 20, 30), 0, (1, 1))),
    "tiny_1x1.jpg": (lambda: jpeg(Image.new("RGB", (1, 1), (200, 100, 50))),
                     is_flat((200, 100, 50), 6, (1, 1))),
    "gray.jpg": (lambda: jpeg(Image.new("L", (W, H), 128)), is_flat((128,) * 3, 2)),
    "progressive.jpg": (lambda: jpeg(quad(), progressive=True), is_quad()),
    "baseline.jpg": (lambda: jpeg(quad()), is_quad()),
    "plain.bmp": (lambda: save(quad(), "BMP"), is_quad(0)),
    "plain.tif": (lambda: save(quad(), "TIFF"), is_quad(0)),
    "lzw.tiff": (lambda: save(quad(), "TIFF", compression="tiff_lzw"), is_quad(0)),
    "lossy.webp": (lambda: save(quad(), "WEBP", quality=90), is_quad()),
    "plain.ppm": (lambda: save(quad(), "PPM"), is_quad(0)),
    "UPPER.JPG": (lambda: jpeg(quad()), is_quad()),
    "UPPER.PNG": (lambda: save(quad(), "PNG"), is_quad(0)),
    "png_named.jpg": (lambda: save(quad(), "PNG"), is_quad(0)),
    "trailing_junk.jpg": (lambda: jpeg(quad()) + b"\0" * 100 + zip_bytes(), is_quad()),
    "trailing_junk.png": (lambda: save(quad(), "PNG") + b"junk" * 100, is_quad(0)),
    "jpeg_named.png": (lambda: jpeg(quad()), is_quad()),
    "no_extension": (lambda: save(quad(), "PNG"), is_quad(0)),
    # Broken EXIF must not lose a good image.
    "exif_random.jpg": (lambda: with_app1(b"Exif\0\0" + random.Random(1).randbytes(200)),
                        is_quad()),
    "exif_bad_offset.jpg": (lambda: with_app1(b"Exif\0\0II*\x00\xf0\xff\xff\xff"), is_quad()),
    "exif_huge_count.jpg": (lambda: with_app1(b"Exif\0\0II*\x00\x08\0\0\0\xff\xff" + b"\0" * 16),
                            is_quad()),
    "exif_empty.jpg": (lambda: with_app1(b"Exif\0\0"), is_quad()),
    "exif_orient_text.jpg": (lambda: with_app1(b"Exif\0\0" + tiff_ifd([(0x0112, 2, 2, b"6")])),
                             is_quad()),
    "exif_orient_99.jpg": (lambda: with_app1(b"Exif\0\0" + tiff_ifd([(0x0112, 3, 1, b"\x63")])),
                           is_quad()),
    # A valid orientation next to broken tags: still applied. (ImageOps.exif_transpose raises
    # on the BYTE-typed ImageWidth while rewriting the EXIF, after reading the orientation.)
    "exif_orient_6_odd_tag.jpg": (
        lambda: with_app1(
            b"Exif\0\0" + tiff_ifd([(0x0112, 3, 1, b"\x06"), (0x0100, 1, 1, b"\x01")]),
            quad().transpose(_STORED[6]),
        ),
        is_quad(),
    ),
    "exif_orient_6_bad_subifd.jpg": (
        lambda: with_app1(
            b"Exif\0\0" + tiff_ifd([(0x0112, 3, 1, b"\x06"), (0x8769, 4, 1, b"\xff\xff\xff\x7f")],
                                   next_ifd=0x7FFFFFF0),
            quad().transpose(_STORED[6]),
        ),
        is_quad(),
    ),
}

if features.check("avif"):
    GOOD["plain.avif"] = (lambda: save(quad(), "AVIF", quality=90), is_quad(50))


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def photo() -> Image.Image:
    """Noise, so the pixel data dwarfs the header and a cut lands in the middle of it."""
    arr = np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def cut_in_half(fmt: str, **kw) -> Callable[[], bytes]:
    def build() -> bytes:
        data = truncated(save(photo(), fmt, **kw))
        with Image.open(io.BytesIO(data)) as im:  # the header is intact: only pixels are lost
            assert im.size == photo().size
        return data

    return build


def corrupt_jpeg_header() -> bytes:
    data = bytearray(jpeg(quad()))
    sof = data.index(b"\xff\xc0")
    data[sof + 4 : sof + 12] = b"\xff" * 8  # precision, height, width, components: garbage
    return bytes(data)


def corrupt_png_idat() -> bytes:
    data = bytearray(save(quad(), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 20] = b"\xaa" * 20  # not a zlib stream any more
    return bytes(data)


def random_bytes() -> bytes:
    rng = random.Random(1234)
    return bytes([0x42, 0x00]) + rng.randbytes(4094)


BOMB = raw_png(30000, 30000, 8, 2)  # header says 900 megapixels; the data is empty
BIG = raw_png(8000, 8000, 8, 0)  # 64 megapixels: over the default 50 MP limit
WARNS = raw_png(10000, 10000, 8, 0)  # 100 MP: PIL only warns; our limit must still refuse

# filename -> (builder, words the reason must contain (any of), load_image kwargs)
BAD: dict[str, tuple[Callable[[], bytes] | None, tuple[str, ...], dict]] = {
    "empty.jpg": (lambda: b"", ("empty",), {}),
    "truncated_half.jpg": (cut_in_half("JPEG", quality=90), ("truncated",), {}),
    "truncated_progressive.jpg": (cut_in_half("JPEG", progressive=True), ("truncated",), {}),
    "truncated_header.jpg": (lambda: jpeg(quad())[:120], ("truncated", "corrupt"), {}),
    "truncated_half.png": (cut_in_half("PNG"), ("truncated",), {}),
    "truncated_no_iend.png": (lambda: save(quad(), "PNG")[:-12 - 4], ("truncated",), {}),
    "truncated.gif": (cut_in_half("GIF"), ("truncated",), {}),
    "truncated.webp": (lambda: truncated(save(photo(), "WEBP")), ("truncated", "corrupt"), {}),
    "truncated.tif": (cut_in_half("TIFF"), ("truncated",), {}),
    # PIL writes this one's directory after the pixels, so the cut takes the header too.
    "truncated_lzw.tif": (lambda: truncated(save(photo(), "TIFF", compression="tiff_lzw")),
                          ("TIFF file whose header is corrupt",), {}),
    "truncated.bmp": (cut_in_half("BMP"), ("truncated",), {}),
    "truncated.ppm": (cut_in_half("PPM"), ("truncated",), {}),
    "random.jpg": (random_bytes, ("not a recognised image",), {}),
    "page.jpg": (lambda: b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>",
                 ("HTML",), {}),
    "page_lower.jpg": (lambda: b"\n  <html><head></head></html>", ("HTML",), {}),
    "drawing.svg": (lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
                    ("SVG",), {}),
    "drawing_bare.jpg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="4"/>',
                         ("SVG",), {}),
    "doc.pdf": (lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", ("PDF",), {}),
    "archive.zip": (zip_bytes, ("ZIP",), {}),
    "data.json": (lambda: b'{"label": "male", "score": 0.9}', ("JSON",), {}),
    "list.json": (lambda: b'[{"label": "male"}]', ("JSON",), {}),
    "notes.txt": (lambda: b"just some text, certainly not pixels\n", ("not a recognised",), {}),
    "figure.eps": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
                   ("PostScript",), {}),
    "archive.gz": (lambda: b"\x1f\x8b\x08\x00" + b"\0" * 60, ("gzip",), {}),
    "phone.heic": (lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 40,
                   ("HEIC", "HEIF"), {}),
    "bomb.png": (lambda: BOMB, ("bomb",), {}),
    "bomb_allowed_by_us.png": (lambda: BOMB, ("bomb",), {"max_pixels": 10**10}),
    "big_default_limit.png": (lambda: BIG, ("limit",), {}),
    "big_pil_warns.png": (lambda: WARNS, ("limit",), {}),
    "small_limit.png": (lambda: save(quad(), "PNG"), ("limit", "pixels"), {"max_pixels": 100}),
    "zero_size.png": (lambda: raw_png(0, 0, 8, 2), ("corrupt", "no pixels"), {}),
    "corrupt_header.jpg": (corrupt_jpeg_header, ("corrupt",), {}),
    "soi_eoi_only.jpg": (lambda: b"\xff\xd8\xff\xd9", ("corrupt", "truncated"), {}),
    "corrupt_idat.png": (corrupt_png_idat, ("corrupt",), {}),
    "a_directory.jpg": (None, ("directory",), {}),
    "missing.jpg": (None, ("not found",), {}),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, (build, *_rest) in {**GOOD, **BAD}.items():
        path = root / name
        if name == "a_directory.jpg":
            path.mkdir()
        elif build is not None:
            path.write_bytes(build())
        paths[name] = path
    return paths


def test_corpus_is_big_enough():
    assert len(GOOD) >= 20 and len(BAD) >= 20


# --------------------------------------------------------------------------- the corpus


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_file_decodes(corpus, name):
    img = load_image(corpus[name])
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    GOOD[name][1](img)


# PIL warns about these as it reads them; the warnings are PIL's to give, the refusal ours.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_rejected(corpus, name):
    _build, words, kwargs = BAD[name]
    with pytest.raises(ImageError) as info:
        load_image(corpus[name], **kwargs)
    err = info.value
    assert name in str(err) and err.source == str(corpus[name])
    assert any(w.lower() in err.reason.lower() for w in words), err.reason


def test_reason_names_the_limit(corpus):
    with pytest.raises(ImageError) as info:
        load_image(corpus["small_limit.png"], max_pixels=100)
    assert f"{W}x{H}" in info.value.reason and "100" in info.value.reason


def test_bytes_and_name(corpus):
    data = corpus["exif_orient_6.jpg"].read_bytes()
    is_quad()(load_image(data))
    is_quad()(load_image(bytearray(data)))
    is_quad()(load_image(memoryview(data)))
    is_quad()(decode_bytes(memoryview(data), "x"))
    is_quad()(decode_bytes(data, "x", None))
    with pytest.raises(ImageError, match=r"^<bytes>: .*truncated"):
        load_image(truncated(data))
    with pytest.raises(ImageError, match=r"^upload\.jpg: .*HTML"):
        load_image(b"<html></html>", name="upload.jpg")
    with pytest.raises(ImageError, match="limit"):
        decode_bytes(data, "x", 10)


def test_name_overrides_path_label(corpus):
    with pytest.raises(ImageError, match=r"^shown\.jpg: "):
        load_image(corpus["empty.jpg"], name="shown.jpg")
    with pytest.raises(ImageError, match="not found"):
        load_image(str(corpus["missing.jpg"]))


def test_pil_images():
    out = load_image(rgba())
    assert out.mode == "RGB" and px(out, 0, 0) == WHITE and px(out, 2, 0) == GREEN
    src = quad()
    out = load_image(src)
    is_quad(0)(out)
    assert out is not src, "the caller's image must not be handed back to be mutated"
    is_quad(0)(load_image(quad().convert("P")))
    is_row(GREY16, 1)(load_image(Image.open(io.BytesIO(gray16_png_pil()))))
    # A lazily opened file still gets its EXIF orientation applied.
    is_quad()(load_image(Image.open(io.BytesIO(oriented("JPEG", 8)()))))
    with pytest.raises(ImageError, match=r"^<image>: .*limit"):
        load_image(src, max_pixels=10)
    with pytest.raises(ImageError, match=r"^face: .*truncated"):
        load_image(Image.open(io.BytesIO(cut_in_half("JPEG")())), name="face")


def test_wide_modes_scale_not_clip():
    # 8-bit data held in "I" stays as it is; 16-bit data in "I" is scaled from 65535.
    is_flat((100,) * 3, 0, (4, 2))(load_image(Image.new("L", (4, 2), 100).convert("I")))
    wide = Image.fromarray(np.array([[65535, 32768]], dtype=np.int32), "I")
    assert [px(load_image(wide), x, 0) for x in (0, 1)] == [WHITE, (128, 128, 128)]
    # Float images in 0..1.
    flat = Image.fromarray(np.full((2, 4), 0.5, dtype=np.float32), "F")
    is_flat((128,) * 3, 0, (4, 2))(load_image(flat))


def test_special_paths(corpus, tmp_path):
    link = tmp_path / "link.jpg"
    link.symlink_to(corpus["baseline.jpg"])
    is_quad()(load_image(link))
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="not found"):
        load_image(dangling)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # reading it would block for ever
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(fifo)


def test_wrong_source_type():
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_truncation_caught_even_if_someone_set_load_truncated_images(corpus, monkeypatch):
    """Training scripts often set this flag process-wide; truncated files must still fail."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name in [n for n in BAD if n.startswith("truncated")]:
        with pytest.raises(ImageError, match="truncated|corrupt"):
            load_image(corpus[name])
    for name, (_build, check) in GOOD.items():
        check(load_image(corpus[name]))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the caller's setting must be left alone"


def test_global_state_untouched(corpus):
    filters = list(warnings.filters)
    flag = ImageFile.LOAD_TRUNCATED_IMAGES
    for name in ("bomb.png", "truncated_half.jpg", "random.jpg"):
        with pytest.raises(ImageError):
            load_image(corpus[name])
    load_image(corpus["exif_orient_6.jpg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is flag and list(warnings.filters) == filters


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_threads_agree_with_serial(corpus):
    names = sorted(GOOD) + ["truncated_half.jpg", "bomb.png", "page.jpg"]

    def outcome(name):
        try:
            return np.asarray(load_image(corpus[name])).tobytes()
        except ImageError as exc:
            return exc.reason

    serial = {n: outcome(n) for n in names}
    results: dict[int, dict] = {}

    def work(i):
        order = names[i:] + names[:i]
        results[i] = {n: outcome(n) for n in order}

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == serial for r in results.values())
