"""The per-image step: exact against a plain reference, centred crops, every quirk."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from preprocessing.image import ImageProcessor, ImageSettings, Processed, Rejected

SIZES = [
    (500, 375),
    (375, 500),
    (257, 256),
    (256, 259),
    (1024, 768),
    (640, 2000),
    (100, 60),
    (300, 300),
    (1601, 1201),
    (77, 301),
]


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A photograph-like image: smooth random fields at several scales, plus grain and edges."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((3, 90), (12, 40), (48, 15)):
        small = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        big = Image.fromarray(((small + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        out += (np.asarray(big, np.float32) / 127.5 - 1) * amp
    out += 120 + rng.normal(0, 4, out.shape)
    out[:, w // 3 : w // 3 + max(w // 50, 1)] = 240  # a sharp edge
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def reference(data: bytes, size: int = 256) -> np.ndarray:
    """The straightforward pipeline: full decode, RGB, shorter side to size, centre crop."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def decoded(p: Processed) -> np.ndarray:
    with Image.open(io.BytesIO(p.data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("size", SIZES)
def test_png_without_draft_equals_the_reference_exactly(size):
    data = encode(photo(*size), quality=92)
    out = ImageProcessor(ImageSettings(format="png", draft=False))(data)
    assert isinstance(out, Processed)
    assert out.pixels.shape == (256, 256, 3)
    np.testing.assert_array_equal(decoded(out), reference(data))
    np.testing.assert_array_equal(out.pixels, decoded(out))


@pytest.mark.parametrize("size", SIZES)
def test_jpeg_with_draft_is_close_to_the_reference(size):
    data = encode(photo(*size, seed=1), quality=90)
    out = ImageProcessor(ImageSettings())(data)  # the defaults: JPEG q95, draft on
    assert isinstance(out, Processed) and (out.width, out.height) == size
    # the stored pixels are exactly what a reader decodes
    np.testing.assert_array_equal(out.pixels, decoded(out))
    drafted = min(size) >= 512
    assert psnr(out.pixels, reference(data)) > (32 if drafted else 38)


@pytest.mark.parametrize("excess", [0, 1, 2, 3, 101])
@pytest.mark.parametrize("portrait", [False, True])
def test_crop_is_centred_to_the_pixel(excess, portrait):
    # Pixels encode their own coordinates: R = x mod 256, G = x div 256, B = y.
    w, h = 256 + excess, 256
    x = np.arange(w)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1] = x % 256, x // 256
    img[..., 2] = np.arange(h)[:, None]
    if portrait:
        img = img.transpose(1, 0, 2).copy()
    out = ImageProcessor(ImageSettings(format="png"))(encode(Image.fromarray(img), "PNG"))
    start = excess // 2  # the extra column (odd excess) is dropped on the right
    along = out.pixels[0, :, :2] if not portrait else out.pixels[:, 0, :2]
    coords = along[:, 0].astype(int) + 256 * along[:, 1].astype(int)
    np.testing.assert_array_equal(coords, np.arange(start, start + 256))


def test_upscales_small_images():
    out = ImageProcessor(ImageSettings(format="png"))(encode(photo(80, 50), "PNG"))
    assert isinstance(out, Processed) and out.pixels.shape == (256, 256, 3)
    assert (out.width, out.height) == (80, 50)


def test_cmyk_jpeg_becomes_rgb():
    rgb = photo(400, 300)
    out = ImageProcessor(ImageSettings(format="png", draft=False))(
        encode(rgb.convert("CMYK"), quality=95)
    )
    assert isinstance(out, Processed) and out.source_mode == "CMYK"
    assert psnr(out.pixels, reference(encode(rgb, "PNG"))) > 30


def test_grayscale_jpeg_becomes_three_equal_channels():
    out = ImageProcessor(ImageSettings(format="png"))(encode(photo(300, 400).convert("L")))
    assert isinstance(out, Processed) and out.source_mode == "L"
    assert np.array_equal(out.pixels[..., 0], out.pixels[..., 1])
    assert np.array_equal(out.pixels[..., 1], out.pixels[..., 2])


def test_png_named_jpeg_is_decoded_as_png():
    out = ImageProcessor(ImageSettings(format="png", draft=False))(encode(photo(300, 300), "PNG"))
    assert isinstance(out, Processed) and out.source_format == "PNG"


def test_palette_png_keeps_its_colours():
    im = Image.new("P", (300, 256))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (150, 0, 300, 256))
    out = ImageProcessor(ImageSettings(format="png"))(encode(im, "PNG"))
    assert isinstance(out, Processed) and out.source_mode == "P"
    assert tuple(out.pixels[10, 10]) == (255, 0, 0) and tuple(out.pixels[10, 250]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P-transparency"])
def test_transparency_is_matted_on_white(mode):
    if mode == "P-transparency":
        im = Image.new("P", (256, 256), 0)
        im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
        im.paste(1, (0, 0, 128, 256))
        im.info["transparency"] = 0
        data = encode(im, "PNG", transparency=0)
    else:
        rgba = np.zeros((256, 256, 4), np.uint8)
        rgba[:, :128] = (200, 100, 50, 255)  # opaque left half
        rgba[:, 128:, :3] = (10, 20, 30)  # fully transparent right half
        im = Image.fromarray(rgba, "RGBA")
        data = encode(im if mode == "RGBA" else im.convert("LA"), "PNG")
    out = ImageProcessor(ImageSettings(format="png"))(data)
    assert isinstance(out, Processed)
    assert tuple(out.pixels[5, 250]) == (255, 255, 255)  # transparent -> white
    left = tuple(out.pixels[5, 5])
    grey = Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0))  # LA has no hue
    assert left == ((200, 100, 50) if mode != "LA" else (grey, grey, grey))


def test_16_bit_png_is_scaled_not_clipped():
    a = np.zeros((256, 256), np.uint16)
    a[:, :64], a[:, 64:128], a[:, 128:192], a[:, 192:] = 0, 257 * 100, 32768, 65535
    out = ImageProcessor(ImageSettings(format="png"))(encode(Image.fromarray(a), "PNG"))
    assert isinstance(out, Processed)
    assert out.source_mode.startswith("I")
    assert [int(out.pixels[0, x, 0]) for x in (10, 100, 150, 250)] == [0, 100, 128, 255]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"<html><body>404</body></html>", "not an image"),
        (encode(photo(400, 300))[:3000], "truncated file: the image data ends early"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "corrupt JPEG header"),
    ],
    ids=["empty", "html", "truncated", "broken-header"],
)
def test_bad_files_are_rejected_with_a_reason(data, reason):
    out = ImageProcessor(ImageSettings())(data)
    assert isinstance(out, Rejected)
    assert out.reason.startswith(reason), out.reason  # its own reason, not a generic one


def test_pixel_limit_rejects_decompression_bombs():
    data = encode(photo(600, 400))
    out = ImageProcessor(ImageSettings(max_pixels=200_000))(data)
    assert isinstance(out, Rejected)
    assert "600x400 = 240,000" in out.reason and "--max-pixels" in out.reason
    assert isinstance(ImageProcessor(ImageSettings(max_pixels=240_000))(data), Processed)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("width, height", [(80_000, 1), (1, 80_000), (8_000, 1), (6_500, 100)])
def test_an_extreme_strip_is_rejected_before_its_resize(width, height):
    """Issue 22.3: an 80000x1 PNG (80k pixels, far under --max-pixels) was resized to
    20,480,000x256 first: MemoryError, and the whole stage stopped. Now a reject with
    the reason, decided from the header: the work an image may cause is bounded."""
    data = _png(width, height)
    assert len(data) < 4_000  # a small file can ask for a huge resize
    out = ImageProcessor(ImageSettings())(data)
    assert isinstance(out, Rejected)
    assert f"extreme aspect ratio: {width}x{height} is more than 64:1" in out.reason
    long = round(max(width, height) * 256 / min(width, height))
    assert (f"{long}x256" if width > height else f"256x{long}") in out.reason


def test_the_aspect_limit_is_64_to_1_inclusive():
    assert isinstance(ImageProcessor(ImageSettings())(_png(64 * 5, 5)), Processed)
    assert isinstance(ImageProcessor(ImageSettings())(_png(64 * 5 + 1, 5)), Rejected)


def test_settings_are_checked_when_made():
    """One mechanism (issue 24): the rules declared on the fields, checked by check_fields."""
    with pytest.raises(ValueError, match=r"quality is out of range: 0 \(must be >= 1 and <= 100\)"):
        ImageSettings(quality=0)
    with pytest.raises(ValueError, match="format must be one of jpg, png, got 'webp'"):
        ImageSettings(format="webp")
    with pytest.raises(ValueError, match="size is out of range: 4"):
        ImageSettings(size=4)
