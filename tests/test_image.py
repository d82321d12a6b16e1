"""Loading photos: odd modes and formats load as RGB, bad input gets a typed error naming the file."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facecore.errors import ImageError
from recognizer.image import load_photo, to_rgb

CELEB = "5-celebrity-faces/train"
GREY_RGBA_PNG = {
    # SOURCES.md names these oddities of the celebrity set.
    "png_named_jpg": f"{CELEB}/ben_afflek/httpwwwrumenewscomwpcontentuploadsbenafflekxpng.jpg",
}


def _png_header(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header is rewritten to claim another size (valid CRC, tiny data)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(png)


def test_odd_files_of_the_celebrity_set_load_as_rgb(data):
    modes = {}
    for path in sorted((data / "5-celebrity-faces").glob("*/*/*")):
        with Image.open(path) as raw:
            modes[path.name] = raw.mode
        photo = load_photo(path)
        assert photo.image.mode == "RGB", path
    # The set really holds the odd cases we mean to cover.
    assert "RGBA" in modes.values() and "L" in modes.values()
    png = data / GREY_RGBA_PNG["png_named_jpg"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_photo(png).image.mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I"])
def test_every_mode_converts_to_rgb(data, mode):
    src = Image.open(data / "facenet-pytorch-test-images/aligned/paul_rudd/1.png").convert("RGB")
    if mode == "I;16":
        arr = np.asarray(src.convert("L"), np.uint16) * 257
        img = Image.fromarray(arr)  # uint16 arrays become mode I;16
    elif mode == "I":
        img = src.convert("L").convert("I")
    else:
        img = src.convert(mode)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == src.size
    # 16-bit data is scaled down, not clipped to white.
    assert np.asarray(out).mean() < 250


def test_rgba_png_matches_its_rgb_twin(data):
    rgba = load_photo(data / "face_recognition-examples/unlabeled/32bit_rgba.png").image
    rgb = load_photo(data / "face_recognition-examples/people/barack_obama/examples__obama2.jpg").image
    assert rgba.size == rgb.size
    diff = np.abs(np.asarray(rgba, np.int16) - np.asarray(rgb, np.int16)).mean()
    assert diff < 10


def test_bytes_and_pil_sources(data):
    path = data / "facenet-pytorch-test-images/people/paul_rudd/1.jpg"
    a = load_photo(path)
    b = load_photo(path.read_bytes())
    c = load_photo(Image.open(path))
    assert a.content_hash == b.content_hash
    assert a.size == b.size == c.size


def _bad_inputs(tmp_path, data):
    jpeg = (data / "facenet-pytorch-test-images/people/paul_rudd/1.jpg").read_bytes()
    files = {
        "missing.jpg": None,
        "a directory.jpg": "dir",
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "text.jpg": b"this is not an image, only text\n" * 10,
        "huge header.png": _png_header(100_000, 100_000),
    }
    for name, content in files.items():
        p = tmp_path / name
        if content == "dir":
            p.mkdir()
        elif content is not None:
            p.write_bytes(content)
        yield p


def test_bad_input_gets_typed_error_naming_the_file(tmp_path, data):
    for path in _bad_inputs(tmp_path, data):
        with pytest.raises(ImageError) as err:
            load_photo(path)
        assert str(path) in str(err.value), err.value


def test_bad_bytes_name_the_source():
    with pytest.raises(ImageError, match="<bytes>"):
        load_photo(b"\xff\xd8\xff\xe0 garbage")
    with pytest.raises(ImageError, match="over the limit"):
        load_photo(_png_header(100_000, 100_000))
