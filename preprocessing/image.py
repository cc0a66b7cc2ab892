"""Decode anything ImageNet throws at us, resize the shorter side, crop the centre.

`ImageProcessor(settings)(data)` returns a `Processed` (the encoded 256x256
image, its decoded pixels as stored, and facts about the original) or a
`Rejected` with a reason a person understands. It never raises for bad input,
so one broken file never kills a shard (img2dataset's resizer does the same).

Conversions to 8-bit RGB:
- CMYK (and Adobe's inverted CMYK) JPEGs: Pillow's CMYK -> RGB conversion.
- L, I;16 / I (16-bit) grayscale: replicated to three channels; 16-bit values
  are scaled to 8 bits (round(v * 255 / 65535)), not clipped.
- P (palette), LA, RGBA, and images with a transparency key: matted on white.
- The format is found from the content; a PNG named `.JPEG` decodes as a PNG.

Resize: shorter side to `size` with Pillow's LANCZOS (a windowed-sinc filter
whose support widens with the scale factor, so downscaling is antialiased),
then the central `size` x `size` crop: offset `(W - size) // 2`, so for an odd
excess the extra column or row is dropped on the right or bottom. Images
smaller than `size` are upscaled by the same rule.

Draft: for JPEGs whose shorter side is at least twice `size`, the decoder is
asked for a 1/2, 1/4 or 1/8 scale (DCT-domain downscaling, libjpeg's
`scale_num/scale_denom`), never below `size` on the shorter side; LANCZOS then
does the rest. It changes pixels slightly, so it is a setting.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass

import numpy as np
from PIL import Image

from shards.pixels import decode_rgb
from shards.settings import check_fields, option, rule

# We enforce our own, configurable pixel limit before decoding; Pillow's own
# check would raise a warning or error with less useful words.
Image.MAX_IMAGE_PIXELS = None

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
# The longest a side may be against the shorter one. The resize to `size` on the shorter
# side comes before the crop, so an 80000x1 strip (80k pixels, 312 bytes as a PNG) would
# be resized to 20,480,000x256: 15 GB. At 64:1 the resized image is at most 64 x 256 x 256
# pixels (12.6 MB); real photographs, panoramas included, stay far below it.
MAX_ASPECT = 64
# The largest input file read (ImageNet's largest JPEG is a few tens of MB): /dev/zero, or
# a huge file named .JPEG, is a reject, not a worker that reads until memory runs out.
MAX_FILE_BYTES = 256 << 20


def read_image_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; an OSError with the
    reason otherwise (a FIFO, a device or a folder is refused before it is opened, so
    nothing hangs or reads forever)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a device, FIFO or folder)", str(path))
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the stat
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB: not read", str(path))
    return data


@dataclass(frozen=True)
class ImageSettings:
    """Every setting that changes a stored byte."""

    size: int = rule(256, minimum=8)  # the paper's; not an option
    format: str = option("jpg", "stored image format (png is lossless)", choices=["jpg", "png"])
    quality: int = option(95, "JPEG quality of the shards", minimum=1, maximum=100)
    filter: str = option("lanczos", "resampling filter of the resize", choices=sorted(RESAMPLING))
    draft: bool = option(
        True,
        "let the JPEG decoder downscale by 1/2, 1/4 or 1/8 first when the shorter side is "
        ">= 512 (faster; changes pixels slightly)",
    )
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS, "reject images with more pixels (decompression bombs)", minimum=1
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class Processed:
    data: bytes  # the encoded image, as stored in the shard
    pixels: np.ndarray  # (size, size, 3) uint8: what a reader decodes from `data`
    width: int  # of the original
    height: int
    source_format: str  # what the content is (JPEG, PNG, ...), whatever the name says
    source_mode: str  # Pillow mode of the original (RGB, CMYK, L, P, RGBA, I;16, ...)


@dataclass
class Rejected:
    reason: str


_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _sniff(data: bytes) -> str | None:
    """The format that `data`'s first bytes claim, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB (see the module docstring for the rules)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if mode == "I" and a.max(initial=0) <= 255 and im.format != "PNG":
            a8 = np.clip(a, 0, 255).astype(np.uint8)
        else:  # 16-bit samples: scale, don't clip
            a8 = ((np.clip(a, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8), "L").convert(
            "RGB"
        )
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `size`, the other in proportion."""
    if w <= h:
        return (size, max(size, round(h * size / w)))
    return (max(size, round(w * size / h)), size)


def resize_and_crop(im: Image.Image, size: int, resample: int) -> Image.Image:
    """Shorter side to `size`, then the central `size` x `size` patch."""
    w, h = im.size
    new = resized_size(w, h, size)
    if new != (w, h):
        im = im.resize(new, resample)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


class ImageProcessor:
    """Bytes of any image file -> `Processed` or `Rejected`. Configured once, called per image."""

    def __init__(self, settings: ImageSettings) -> None:
        self.s = settings
        self.resample = RESAMPLING[settings.filter]

    def __call__(self, data: bytes) -> Processed | Rejected:
        s = self.s
        if not data:
            return Rejected("empty file (0 bytes)")
        try:
            im = Image.open(io.BytesIO(data))
        except Exception as err:  # UnidentifiedImageError, or a header Pillow chokes on
            claimed = _sniff(data)
            if claimed:
                return Rejected(
                    f"corrupt {claimed} header: starts like a {claimed} but cannot be read "
                    f"({type(err).__name__})"
                )
            return Rejected(f"not an image: unrecognised content (starts with {data[:16]!r})")
        with im:
            width, height = im.size
            fmt, mode = im.format or "unknown", im.mode
            if width * height > s.max_pixels:
                return Rejected(
                    f"too many pixels: {width}x{height} = {width * height:,} exceeds the "
                    f"--max-pixels limit of {s.max_pixels:,} (a possible decompression bomb)"
                )
            if width < 1 or height < 1:
                return Rejected(f"image has no pixels ({width}x{height})")
            if max(width, height) > MAX_ASPECT * min(width, height):
                return Rejected(
                    f"extreme aspect ratio: {width}x{height} is more than {MAX_ASPECT}:1; its "
                    f"resize to {s.size} on the shorter side would be "
                    "{}x{} pixels before the crop".format(*resized_size(width, height, s.size))
                )
            try:
                if s.draft and fmt == "JPEG" and min(width, height) >= 2 * s.size:
                    k = s.size / min(width, height)
                    im.draft(
                        im.mode, (max(s.size, round(width * k)), max(s.size, round(height * k)))
                    )
                im.load()
                rgb = to_rgb(im)
                out = resize_and_crop(rgb, s.size, self.resample)
            except (OSError, SyntaxError, ValueError, EOFError) as err:
                msg = str(err) or type(err).__name__
                if "truncated" in msg.lower() or isinstance(err, EOFError):
                    return Rejected(f"truncated file: the image data ends early ({msg})")
                return Rejected(f"corrupt image data: {type(err).__name__}: {msg}")
        return self._encode(out, width, height, fmt, mode)

    def _encode(self, out: Image.Image, width: int, height: int, fmt: str, mode: str) -> Processed:
        buf = io.BytesIO()
        if self.s.format == "png":
            out.save(buf, "PNG", compress_level=6)
            pixels = np.asarray(out)
        else:
            out.save(buf, "JPEG", quality=self.s.quality)
            # The pixels as stored: what any reader of the shard decodes.
            pixels = decode_rgb(buf.getvalue())
        return Processed(buf.getvalue(), pixels, width, height, fmt, mode)
