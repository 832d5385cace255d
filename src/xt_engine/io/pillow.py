"""PNG and JPEG images (small, whole-file formats) through Pillow.

The file is decoded once into memory as one level:

* RGB (and palette / CMYK / YCbCr images, converted to RGB) -> (3, H, W) uint8, axes ``cyx``;
* grayscale -> (H, W), axes ``yx`` (1 channel): ``L`` / ``1`` as uint8, 16-bit PNG as uint16,
  32-bit ``I`` / ``F`` as int32 / float32;
* an alpha channel (``RGBA``, ``LA``, palette transparency) is dropped when it is fully opaque;
  an image with transparent pixels is refused (the model would see colours nobody sees).

These formats hold no pyramid and no pixel size, so the source has one level and none. Images
beyond Pillow's decompression-bomb limit are refused: convert those to a tiled TIFF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xt_engine.errors import InputError
from xt_engine.io.source import ImageSource

_GRAY_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32, "F": np.float32}


def open_pillow(path: Path) -> ImageSource:
    """Decode a PNG / JPEG file into a one-level :class:`ImageSource` (see module docstring)."""
    try:
        with Image.open(path) as image:
            fmt = image.format or path.suffix.lstrip(".").upper()
            image.load()
            array = _to_array(image, path.name)
    except Image.DecompressionBombError as err:
        raise InputError(
            f"{path.name} is too large to decode whole ({err})",
            "convert it to a tiled (pyramidal) TIFF, e.g. vips tiffsave --tile --pyramid",
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(
            f"{path.name} is not a readable PNG / JPEG image ({type(err).__name__}: {err})",
            "check that the file is complete and not corrupted (export it again)",
        ) from err
    axes = "cyx" if array.ndim == 3 else "yx"
    return ImageSource(levels=[array], axes=axes, name=path.name, metadata={"format": fmt})


def _to_array(image: Image.Image, name: str) -> np.ndarray:
    """A loaded PIL image -> (3, H, W) or (H, W) numpy array (see module docstring)."""
    if image.mode == "1":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        image = _drop_opaque_alpha(image, name)
    if image.mode in _GRAY_MODES:
        return np.asarray(image, dtype=_GRAY_MODES[image.mode])
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV (JPEG)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def _drop_opaque_alpha(image: Image.Image, name: str) -> Image.Image:
    """The image without its alpha band, which must be fully opaque (else InputError)."""
    alpha = np.asarray(image.getchannel("A"))
    if int(alpha.min()) < 255:
        raise InputError(
            f"{name} has transparent pixels (an alpha channel); the model takes colour only",
            "flatten it onto a background first (e.g. magick IN -background white "
            "-flatten OUT.png) or save it without alpha",
        )
    return image.convert("RGB" if image.mode == "RGBA" else "L")
