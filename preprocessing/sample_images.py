"""The pictures of the synthetic ImageNet tree: each class a shape, a colour and a texture,
drawn at a random size, place and aspect, so that a small net can learn them and a
broken augmentation or label shows (`preprocessing/sample_data.py` writes the tree)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw


class Sides(Protocol):
    """The image-size bounds `draw_image` takes (a `SampleSpec` has them)."""

    min_side: int
    max_side: int


SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")

COLOURS = {
    "red": (220, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (35, 170, 60),
    "cyan": (30, 205, 215),
    "blue": (40, 70, 225),
    "purple": (145, 45, 195),
    "white": (245, 245, 245),
}

TEXTURES = (
    "plain",
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes",
    "checkerboard",
    "dots",
    "grid",
    "waves",
)

MAX_CLASSES = len(SHAPES) * len(COLOURS) * len(TEXTURES)  # 512


@dataclass(frozen=True)
class SampleClass:
    index: int
    wnid: str
    name: str
    shape: str
    colour: str
    texture: str


def sample_class(index: int) -> SampleClass:
    """The class at `index`: a bijection from 0..511 onto (shape, colour, texture).

    With k = 64a + 8b + d: shape d, colour d+b, texture d+2b+a (mod 8). The first
    eight classes therefore differ in all three attributes, and any two classes
    differ in at least one.
    """
    if not 0 <= index < MAX_CLASSES:
        raise ValueError(f"class index {index} out of range 0..{MAX_CLASSES - 1}")
    a, b, d = index // 64, (index // 8) % 8, index % 8
    shape = SHAPES[d]
    colour = list(COLOURS)[(d + b) % 8]
    texture = TEXTURES[(d + 2 * b + a) % 8]
    # wnid-shaped ids ("n" + 8 digits) that sort in class order, as the real ones do.
    wnid = f"n{1441000 + 1000 * index:08d}"
    return SampleClass(index, wnid, f"{colour} {shape}, {texture}", shape, colour, texture)


@dataclass
class Drawn:
    """One generated image: its encoded bytes and where the object is."""

    data: bytes
    width: int
    height: int
    bbox: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max of the object
    quirk: str | None = None


def _texture_mask(texture: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean (h, w) pattern; True where the second background tone goes."""
    period = int(rng.integers(10, 40))
    yy, xx = np.ogrid[:h, :w]
    yy = yy + int(rng.integers(0, period))
    xx = xx + int(rng.integers(0, period))
    half = max(period // 2, 1)
    if texture == "plain":
        return np.zeros((h, w), dtype=bool)
    if texture == "horizontal stripes":
        return np.broadcast_to((yy // half) % 2 == 0, (h, w))
    if texture == "vertical stripes":
        return np.broadcast_to((xx // half) % 2 == 0, (h, w))
    if texture == "diagonal stripes":
        return ((xx + yy) // half) % 2 == 0
    if texture == "checkerboard":
        return ((xx // half) + (yy // half)) % 2 == 0
    if texture == "dots":
        dy, dx = (yy % period) - period / 2, (xx % period) - period / 2
        return dy * dy + dx * dx < (period * 0.28) ** 2
    if texture == "grid":
        line = max(period // 6, 2)
        return (xx % period < line) | (yy % period < line)
    if texture == "waves":
        return np.sin(2 * np.pi * xx / period + 3.0 * np.sin(2 * np.pi * yy / (2.5 * period))) > 0
    raise ValueError(f"unknown texture {texture!r}")


def _unit_vertices(shape: str) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inside the unit circle, unrotated."""

    def ring(n: int, phase: float = 0.0, radii: tuple[float, ...] = (1.0,)) -> list:
        return [
            (
                radii[k % len(radii)] * math.cos(phase + 2 * math.pi * k / n),
                radii[k % len(radii)] * math.sin(phase + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    t = 0.33  # half the width of a cross's arm
    return {
        "triangle": ring(3),
        "square": ring(4, math.pi / 4),
        "hexagon": ring(6),
        "star": ring(10, radii=(1.0, 0.42)),
        "diamond": [(0, -1), (0.55, 0), (0, 1), (-0.55, 0)],
        "cross": [
            (t, 1),
            (t, t),
            (1, t),
            (1, -t),
            (t, -t),
            (t, -1),
            (-t, -1),
            (-t, -t),
            (-1, -t),
            (-1, t),
            (-t, t),
            (-t, 1),
        ],
    }[shape]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of `shape` with radius r centred at (cx, cy), rotated by angle."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos))
        for x, y in _unit_vertices(shape)
    ]


def draw_image(
    cls: SampleClass, rng: np.random.Generator, spec: Sides
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Draw one RGB image of class `cls` and return it with the object's bounding box."""
    # Size: shorter side and aspect ratio (landscape or portrait), within the bounds.
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))  # width / height
    short = int(rng.integers(spec.min_side, max(spec.min_side + 1, int(spec.max_side / 1.7) + 1)))
    w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    w, h = min(max(w, spec.min_side), spec.max_side), min(max(h, spec.min_side), spec.max_side)

    # Background: the class's texture in two random, muted tones (so that the
    # background colour itself carries no class information, only its pattern).
    base = rng.uniform(40, 200)
    tone0 = np.clip(base + rng.normal(0, 18, 3), 0, 255)
    tone1 = np.clip(
        tone0 + rng.choice([-1, 1]) * rng.uniform(45, 80) + rng.normal(0, 10, 3), 0, 255
    )
    mask = _texture_mask(cls.texture, h, w, rng)
    pixels = np.where(mask[..., None], tone1, tone0).astype(np.float32)
    if cls.texture == "plain":  # a soft vertical gradient, like an out-of-focus scene
        pixels += np.linspace(-25, 25, h, dtype=np.float32)[:, None, None] * rng.choice([-1, 1])

    # The object: class colour with a little jitter, random place, size and angle.
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    colour = tuple(
        int(c) for c in np.clip(np.array(COLOURS[cls.colour]) + rng.normal(0, 12, 3), 0, 255)
    )
    r = rng.uniform(0.18, 0.38) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    angle = rng.uniform(0, 2 * math.pi)
    draw = ImageDraw.Draw(img)
    if cls.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif cls.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(int(0.32 * r), 2))
    else:
        draw.polygon(_polygon(cls.shape, cx, cy, r, angle), fill=colour)
    bbox = (
        max(int(cx - r), 0),
        max(int(cy - r), 0),
        min(int(cx + r), w - 1),
        min(int(cy + r), h - 1),
    )

    # Sensor noise.
    noisy = np.asarray(img, dtype=np.float32)
    noisy += rng.standard_normal(noisy.shape, dtype=np.float32) * np.float32(rng.uniform(2, 12))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB"), bbox
