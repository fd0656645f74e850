"""Generated, seeded, learnable images: coloured shapes on noisy skin-toned backgrounds.

They exist so the whole pipeline runs offline in minutes. They are not skin images, and every
name derived from them says "synthetic".
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ...errors import SkinSageError
from ...params import SyntheticParams
from .dataset import RawDataset

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
COLOURS = {"circle": (120, 40, 30), "square": (60, 30, 90), "triangle": (150, 90, 40),
           "cross": (40, 70, 110), "ring": (90, 20, 60), "bar": (30, 90, 50)}


def make_synthetic(p: SyntheticParams, size: int, seed: int) -> RawDataset:
    if p.num_classes > len(SHAPES):
        raise SkinSageError(f"data.synthetic.num_classes: at most {len(SHAPES)} shapes exist, "
                         f"got {p.num_classes}")
    rng = np.random.default_rng(seed)
    shapes = SHAPES[: p.num_classes]
    labels = np.repeat(np.arange(p.num_classes), p.images_per_class)
    images = np.stack([_draw(shapes[label], size, rng) for label in labels])
    return RawDataset(
        name=f"synthetic shapes ({p.num_classes} classes, generated, not skin images)",
        class_names=[f"synthetic_{shape}" for shape in shapes],
        images={"all": images},
        labels={"all": labels.astype(np.int64)},
    )


def _draw(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    skin = np.array([205, 160, 140]) + rng.integers(-25, 26, size=3)
    canvas = Image.new("RGB", (size, size), tuple(int(c) for c in skin))
    draw = ImageDraw.Draw(canvas)
    radius = size * rng.uniform(0.18, 0.32)
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
    colour = tuple(int(c) for c in np.clip(np.array(COLOURS[shape]) + rng.integers(-20, 21, 3), 0, 255))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    width = max(1, int(radius / 3))
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    elif shape == "cross":
        draw.line((cx - radius, cy, cx + radius, cy), fill=colour, width=width)
        draw.line((cx, cy - radius, cx, cy + radius), fill=colour, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=width)
    else:
        draw.rectangle((cx - radius, cy - radius / 3, cx + radius, cy + radius / 3), fill=colour)
    pixels = np.asarray(canvas, dtype=np.int16) + rng.normal(0, 12, (size, size, 3)).astype(np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)
