"""Decoding any image file into the model's input: RGB uint8, square, one resize filter.

`prepare` and `predict` both call `load_image`, so a photo is seen the same way in training and in use.
"""

from __future__ import annotations

import errno
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import SkinSageError
from ..log import progress

# LANCZOS is what MedMNIST used to make its files: the demo, DermaMNIST and user photos match.
RESIZE_FILTER = Image.Resampling.LANCZOS
OS_CLUTTER = {"thumbs.db", "desktop.ini", "icon\r"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# The only Pillow decoders SkinSage runs, whatever a file is named: the formats above. Others are
# attack surface for no benefit; EPS, for one, makes Pillow start Ghostscript. (JPEG includes MPO,
# the multi-picture JPEG many phones write.)
OPEN_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
SUPPORTED_FORMATS_TEXT = "JPEG, PNG, BMP, GIF, TIFF or WebP"


class ImageError(SkinSageError, ValueError):
    """A file that cannot be used as an image, with the reason."""


def load_image(source: str | Path | Image.Image, size: int, max_pixels: int | None = None) -> np.ndarray:
    """Open, orient (EXIF), convert to RGB and resize the whole image to size x size, uint8.
    `max_pixels`: a tighter decoding bound than Pillow's (the web app's)."""
    if isinstance(source, Image.Image):
        return to_model_input(source, size)
    path = Path(source)
    try:
        _check_regular_file(path)
        with warnings.catch_warnings():
            # The warning only says "more than MAX_IMAGE_PIXELS"; _check_pixels decides, after
            # JPEG's draft mode has had its chance to decode at reduced scale.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=OPEN_FORMATS) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
                _check_pixels(image, max_pixels)
                return to_model_input(image, size)
    except ImageError as err:  # to_model_input's reasons do not know the file: name it
        if str(err).startswith(f"{path}: "):
            raise
        raise ImageError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: {_unsupported_reason(path)}") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to decode safely ({err})") from None
    except OSError as err:
        if err.errno is not None:  # the file system's error (symlink loop, I/O error), not Pillow's
            raise ImageError(f"{path}: cannot read file ({err.strerror})") from None
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None
    except (SyntaxError, ValueError) as err:  # corrupt data
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None


def load_photo(source: str | Path | Image.Image, max_side: int | None = None,
               max_pixels: int | None = None) -> np.ndarray:
    """The photo as people see it: EXIF-oriented RGB uint8 at its own size and aspect (shrunk to
    `max_side` on its longer side if given), for drawing explanations over. Opened with the same
    format allow-list and memory bound as `load_image`, whose checks and messages callers meet
    first (they prepare the model input before this)."""
    if not isinstance(source, Image.Image):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _check_pixels decides
            with Image.open(source, formats=OPEN_FORMATS) as image:
                image.draft("RGB", _draft_size(image.size, max_side))
                try:
                    _check_pixels(image, max_pixels)
                except Image.DecompressionBombError as err:
                    raise ImageError(f"{source}: too large to decode safely ({err})") from None
                return load_photo(image, max_side)
    image = _to_rgb(ImageOps.exif_transpose(source))
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), RESIZE_FILTER)
    return np.asarray(image, dtype=np.uint8)


def _draft_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """What JPEG draft mode is asked for: `max_side`, else the full size, halved until it is within
    Pillow's bound (a 95 MP phone photo is shown at half its side, as `load_image` reads it)."""
    if max_side:
        return max_side, max_side
    width, height = size
    limit = Image.MAX_IMAGE_PIXELS or width * height
    while width * height > limit and min(width, height) > 1:
        width, height = -(-width // 2), -(-height // 2)
    return width, height


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks forever."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ImageError(f"{path}: not a regular file ({kind})")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")


def _check_pixels(image: Image.Image, max_pixels: int | None = None) -> None:
    """The memory bound: never decode more than Image.MAX_IMAGE_PIXELS (~89 MP, ~270 MB as RGB).

    Pillow itself refuses anything above twice that at open (DecompressionBombError). Between the
    two, a JPEG is accepted when draft mode decodes it at a reduced scale (down to 1/8 per side)
    within the bound: that is how 90-108 MP phone photos are read. Other formats decode in full,
    so they are refused there, as Pillow's warning advises. `max_pixels` tightens the bound for a
    caller that needs less (the web app).
    """
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size  # after draft(): the size that will actually be decoded
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{width} x {height} pixels ({width * height / 1e6:.1f} megapixels) is more "
                         f"than this decodes: at most {max_pixels / 1e6:.0f} megapixels; resize the photo")
    if limit is not None and width * height > limit:
        raise Image.DecompressionBombError(
            f"Image size ({width * height} pixels) exceeds limit of {limit} pixels, could be "
            "decompression bomb DOS attack.")


def _unsupported_reason(path: Path) -> str:
    """Why Pillow found no image: a format SkinSage does not open (named by its signature alone,
    nothing decoded), or not an image at all."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError:
        prefix = b""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name not in OPEN_FORMATS and accept is not None and _accepts(accept, prefix):
            return f"not a supported image ({name} file; SkinSage reads {SUPPORTED_FORMATS_TEXT})"
    return "not an image Pillow can read"


def _accepts(accept, prefix: bytes) -> bool:
    try:
        return bool(accept(prefix))
    except Exception:  # noqa: BLE001  a plugin's signature test must not turn into a crash
        return False


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    if image.width == 0 or image.height == 0:  # resizing nothing would invent a black image
        raise ImageError(f"empty image ({image.width}x{image.height} pixels)")
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
    for i, array in enumerate(progress(images, desc=f"resize to {size} px")):
        out[i] = to_model_input(Image.fromarray(np.squeeze(array)), size)
    return out


def is_os_clutter(name: str) -> bool:
    """Hidden files (.DS_Store, ._x.jpg) and the files Windows and macOS leave in photo folders."""
    return name.startswith(".") or name.lower() in OS_CLUTTER


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
