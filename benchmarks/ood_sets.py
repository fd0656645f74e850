"""Pictures that are not dermoscopic lesion photos, built offline, per group, for benchmarks/ood.py.

Sources are what installed packages ship (scikit-image's and scikit-learn's sample data,
matplotlib's sample_data) plus pictures rendered here (matplotlib charts, Pillow drawings, noise).
These sets MEASURE the detector; it is never fitted on them (the `train` stage never sees them).
Each source picture gives several crops (random position and scale, seeded) so a group has enough
images for an AUROC; every picture is a Pillow image at its own size, as a user's upload is, and
reaches the model through `load_image` like one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GROUPS = ("faces_skin", "medical", "natural", "textures", "digits", "charts", "generated")


def _skimage_dir() -> Path | None:
    try:
        import skimage
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data"


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _crops(image: Image.Image, count: int, rng, min_frac: float = 0.35) -> list[Image.Image]:
    """The whole picture and `count` - 1 random square-ish crops of 35-100% of its shorter side."""
    out = [image]
    w, h = image.size
    for _ in range(count - 1):
        side = int(min(w, h) * rng.uniform(min_frac, 1.0))
        aspect = rng.uniform(0.75, 1.33)
        cw, ch = min(w, int(side * aspect)), side
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        out.append(image.crop((x, y, x + cw, y + ch)))
    return out


def faces_skin(rng) -> list[Image.Image]:
    """Faces and bare skin without lesions: scikit-image's astronaut and LFW subset, matplotlib's
    Grace Hopper; crops of cheeks/forehead/hands at several scales."""
    out = []
    data = _skimage_dir()
    import matplotlib

    hopper = _open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    out += _crops(hopper.crop((120, 40, 420, 400)), 20, rng)        # the face
    out += _crops(hopper.crop((170, 200, 260, 300)), 10, rng, 0.5)   # a cheek
    if data:
        astronaut = _open(data / "astronaut.png")
        out += _crops(astronaut.crop((140, 20, 260, 200)), 20, rng)  # the face
        out += _crops(astronaut.crop((170, 110, 230, 160)), 10, rng, 0.5)  # cheek skin
        faces = np.load(data / "lfw_subset.npy")[:100]  # 25x25 grey faces in [0, 1]
        out += [Image.fromarray((face * 255).astype(np.uint8)).convert("RGB") for face in faces]
    return out


def medical(rng) -> list[Image.Image]:
    """Other medical pictures: a fundus photograph (scikit-image retina, microaneurysms), stained
    tissue (immunohistochemistry), microscopy of cells, an MRI slice (matplotlib's s1045.ima)."""
    out = []
    data = _skimage_dir()
    if data:
        out += _crops(_open(data / "retina.jpg"), 40, rng)
        out += _crops(_open(data / "microaneurysms.png"), 10, rng)
        out += _crops(_open(data / "ihc.png"), 40, rng)
        out += _crops(_open(data / "cell.png"), 10, rng)
    out += _crops(_mri(), 10, rng)
    return out


def _mri() -> Image.Image:
    import gzip

    import matplotlib

    raw = gzip.open(Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz").read()
    slice_ = np.frombuffer(raw, np.uint16).reshape(256, 256).astype(np.float64)
    return Image.fromarray((255 * slice_ / slice_.max()).astype(np.uint8)).convert("RGB")


def natural(rng) -> list[Image.Image]:
    """Photographs: scikit-learn's china and flower, scikit-image's cat, coffee, rocket, motorcycle,
    Hubble field, camera man, coins."""
    from sklearn.datasets import load_sample_images

    pictures = [Image.fromarray(a) for a in load_sample_images().images]
    data = _skimage_dir()
    if data:
        pictures += [_open(data / name) for name in ("chelsea.png", "coffee.png", "rocket.jpg",
                     "motorcycle_left.png", "hubble_deep_field.jpg", "camera.png", "coins.png")]
    return [crop for picture in pictures for crop in _crops(picture, 12, rng)]


def textures(rng) -> list[Image.Image]:
    """Textures: scikit-image's brick, grass, gravel (grey, and tinted in random colours)."""
    data = _skimage_dir()
    if not data:
        return []
    out = []
    for name in ("brick.png", "grass.png", "gravel.png"):
        for crop in _crops(_open(data / name), 25, rng, 0.2):
            out.append(crop)
            tint = rng.uniform(0.4, 1.0, 3)
            out.append(Image.fromarray((np.asarray(crop) * tint).astype(np.uint8)))
    return out


def digits(rng) -> list[Image.Image]:
    """Handwritten digits: scikit-learn's 8x8 digits, white on black and black on white."""
    from sklearn.datasets import load_digits

    images = load_digits().images[rng.choice(1797, 120, replace=False)]
    out = []
    for i, digit in enumerate(images):
        grey = (digit / 16 * 255).astype(np.uint8)
        grey = grey if i % 2 else 255 - grey
        out.append(Image.fromarray(grey).resize((64, 64), Image.Resampling.BILINEAR).convert("RGB"))
    return out


def charts(rng) -> list[Image.Image]:
    """matplotlib renderings: confusion matrices, bar charts, line plots, a page of text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for i in range(40):
        fig, ax = plt.subplots(figsize=(rng.uniform(3, 6), rng.uniform(3, 5)), dpi=60)
        kind = i % 4
        if kind == 0:
            matrix = rng.integers(0, 200, (7, 7))
            ax.imshow(matrix, cmap=rng.choice(["Blues", "viridis", "magma", "Oranges"]))
            for (r, c), v in np.ndenumerate(matrix):
                ax.text(c, r, str(v), ha="center", va="center", fontsize=6)
        elif kind == 1:
            ax.bar(range(7), rng.uniform(0, 1, 7), color=plt.cm.tab10(rng.integers(0, 10)))
        elif kind == 2:
            for _ in range(3):
                ax.plot(np.cumsum(rng.normal(size=50)))
            ax.grid(True)
        else:
            ax.axis("off")
            for line in range(12):
                ax.text(0, 1 - line / 12, "SkinSage predict --format json  " * 2, fontsize=7,
                        transform=ax.transAxes)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        out.append(Image.open(buffer).convert("RGB"))
    return out


def generated(rng) -> list[Image.Image]:
    """Noise, flat colours, gradients and drawn scenes (sky, grass, a sun; houses; shapes)."""
    out = []
    for _ in range(20):
        out.append(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
        out.append(Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3))))
        ramp = np.linspace(0, 1, 64)[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 255, 3) * (
            1 - np.linspace(0, 1, 64)[:, None, None])
        out.append(Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8)))
        out.append(_scene(rng))
        out.append(_shapes(rng))
    return out


def _scene(rng) -> Image.Image:
    image = Image.new("RGB", (200, 150), (int(rng.integers(90, 160)), int(rng.integers(150, 210)), 255))
    draw = ImageDraw.Draw(image)
    horizon = int(rng.integers(70, 110))
    draw.rectangle((0, horizon, 200, 150), fill=(40, int(rng.integers(120, 200)), 40))
    x, y, r = int(rng.integers(20, 180)), int(rng.integers(10, 50)), int(rng.integers(8, 20))
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 220, 0))
    if rng.random() < 0.5:  # a house
        hx = int(rng.integers(20, 140))
        draw.rectangle((hx, horizon - 40, hx + 40, horizon), fill=(180, 60, 40))
        draw.polygon([(hx - 5, horizon - 40), (hx + 20, horizon - 65), (hx + 45, horizon - 40)], fill=(90, 30, 20))
    return image


def _shapes(rng) -> Image.Image:
    image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 6))):
        box = sorted(rng.integers(0, 96, 2)), sorted(rng.integers(0, 96, 2))
        xy = (box[0][0], box[1][0], box[0][1] + 4, box[1][1] + 4)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(xy, fill=fill)
    return image


def build(seed: int = 0) -> dict[str, list[Image.Image]]:
    """group -> its pictures (Pillow RGB, own sizes); a group with none (a source missing) is left out."""
    rng = np.random.default_rng(seed)
    groups = {name: globals()[name](rng) for name in GROUPS}
    return {name: pictures for name, pictures in groups.items() if pictures}


def missing_sources() -> dict[str, str]:
    """group -> what it lacks because a source package is not installed (its figures then cover
    fewer kinds of picture); empty when every source is there."""
    if _skimage_dir() is not None:
        return {}
    lack = "scikit-image is not installed (pip install -r requirements-dev.txt)"
    return {"faces_skin": f"{lack}: Grace Hopper only, no astronaut or LFW faces",
            "medical": f"{lack}: the MRI slice only, no fundus, stained tissue or cells",
            "natural": f"{lack}: scikit-learn's two photos only",
            "textures": f"{lack}: left out, no pictures"}
