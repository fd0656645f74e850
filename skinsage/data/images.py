"""Decoding any image file into the model's input: RGB uint8, square, one resize filter.

`prepare` and `predict` both call `load_image`, so a photo is seen the same way in training and in use.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import SkinSageError

# LANCZOS is what MedMNIST used to make its files: the demo, DermaMNIST and user photos match.
RESIZE_FILTER = Image.Resampling.LANCZOS
OS_CLUTTER = {"thumbs.db", "desktop.ini", "icon\r"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageError(SkinSageError, ValueError):
    """A file that cannot be used as an image, with the reason."""


def load_image(source: str | Path | Image.Image, size: int) -> np.ndarray:
    """Open, orient (EXIF), convert to RGB and resize the whole image to size x size, uint8."""
    if isinstance(source, Image.Image):
        return to_model_input(source, size)
    path = Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if path.stat().st_size == 0:
                raise ImageError(f"{path}: empty file (0 bytes)")
            with Image.open(path) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
                return to_model_input(image, size)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: too large to decode safely ({err})") from None
    except OSError as err:
        if err.errno is not None:  # the file system's error (symlink loop, I/O error), not Pillow's
            raise ImageError(f"{path}: cannot read file ({err.strerror})") from None
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None
    except (SyntaxError, ValueError) as err:  # corrupt data
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None


def load_photo(source: str | Path | Image.Image, max_side: int | None = None) -> np.ndarray:
    """The photo as people see it: EXIF-oriented RGB uint8 at its own size and aspect (shrunk to
    `max_side` on its longer side if given), for drawing explanations over. Decode errors as
    `load_image`'s (its checks run first: callers prepare the model input before this)."""
    if not isinstance(source, Image.Image):
        with Image.open(source) as image:
            return load_photo(image, max_side)
    image = _to_rgb(ImageOps.exif_transpose(source))
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), RESIZE_FILTER)
    return np.asarray(image, dtype=np.uint8)


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), RESIZE_FILTER)
    return np.asarray(image, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit grey: scale, don't clip
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.round(values * 255.0 / peak).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):  # flatten transparency onto black, like the dermatoscope's rim
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resize_array(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a (N, H, W, C) uint8 batch with the same filter; grey images become RGB."""
    if images.shape[1:3] == (size, size) and images.ndim == 4 and images.shape[-1] == 3:
        return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, array in enumerate(images):
        out[i] = to_model_input(Image.fromarray(np.squeeze(array)), size)
    return out


def is_os_clutter(name: str) -> bool:
    """Hidden files (.DS_Store, ._x.jpg) and the files Windows and macOS leave in photo folders."""
    return name.startswith(".") or name.lower() in OS_CLUTTER


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
