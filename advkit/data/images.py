"""Reading and writing single images, and the conversions between disk and library layouts.

On disk an image is uint8 RGB, height × width × 3 (HWC); in the library it is a float tensor in
[0, 1], channels first (CHW, or NCHW for batches). Everything Pillow can decode is read (PNG, JPEG,
BMP, GIF, TIFF, WebP, ...), at any size. Images that are not 8-bit RGB are converted, each with an
`ImageConversionWarning` naming the file and what was done:

- RGBA / LA / palette with transparency: composited onto a **white** background (dropping alpha
  instead would expose whatever colour the encoder left in fully transparent pixels, often black
  or noise). A fully opaque alpha channel is simply dropped (the warning says so).
- greyscale (8-bit, 16-bit, bilevel): replicated to three channels.
- palette, CMYK, YCbCr, LAB, HSV: Pillow's conversion to RGB.
- 16 bits per channel: reduced to 8 bits (greyscale: rounded; RGB/RGBA: Pillow keeps the high byte).
- several frames (animated GIF, multi-page TIFF): the first frame.

The EXIF orientation tag of photos is applied (silently), so images come out upright as viewers
show them. Missing files, folders, non-images, truncated or corrupt images (every image is fully
decoded, so truncation is caught on read) and decompression bombs (Pillow's
``Image.MAX_IMAGE_PIXELS`` limit) raise `advkit.errors.ImageReadError`.

`write_png` writes losslessly and atomically: a reader sees the old file or the complete new one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from advkit.errors import ImageReadError, OutputError
from advkit.utils import atomic_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageConversionWarning",
    "from_uint8_hwc",
    "read_image",
    "read_image_uint8",
    "resize_center_crop",
    "to_uint8_hwc",
    "write_png",
]

#: File name suffixes treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
)  # fmt: skip

_EXIF_ORIENTATION = 0x0112
_GREY_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageConversionWarning(UserWarning):
    """An image was not 8-bit RGB and was converted on read (the message says how)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _warn(path: Path, what: str) -> None:
    warnings.warn(ImageConversionWarning(f"{path}: {what}"), stacklevel=4)


def read_image_uint8(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ImageReadError: missing file, a folder, not an image, corrupt or truncated data, or an
            image larger than Pillow's decompression-bomb limit.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"cannot read image {path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a folder, not an image file")
    try:
        with Image.open(path) as im:
            return _decode_rgb(im, path)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"cannot read image {path}: refused as a possible decompression bomb ({_one_line(exc)})"
        ) from exc
    except PermissionError as exc:
        raise ImageReadError(f"cannot read image {path}: permission denied") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"cannot read image {path}: not an image file Pillow can decode") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated data as OSError, broken PNG chunks as SyntaxError, and so on.
        raise ImageReadError(
            f"cannot read image {path}: corrupt or truncated image data ({_one_line(exc) or type(exc).__name__})"
        ) from exc
    except Exception as exc:  # noqa: BLE001  (decoders raise odd types on malformed input)
        raise ImageReadError(
            f"cannot read image {path}: corrupt image data ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc


def _decode_rgb(im: Image.Image, path: Path) -> np.ndarray:
    frames = getattr(im, "n_frames", 1)
    # The PNG decoder's raw mode is the only trace of 16-bit RGB(A) once Pillow has loaded it as 8-bit.
    rawmode = im.tile[0].args if im.tile and isinstance(im.tile[0].args, str) else ""
    im.load()  # decode everything now, so truncated data fails here and not later
    if frames > 1:
        _warn(path, f"has {frames} frames; using the first")
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)

    mode = im.mode
    sixteen = rawmode.endswith(";16B") or rawmode.endswith(";16")
    if mode == "RGB":
        if sixteen:
            _warn(path, "16-bit RGB image reduced to 8 bits per channel")
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        # Pillow loads 16-bit greyscale + alpha as RGBA; the file's own mode is the raw mode's.
        stored = rawmode.split(";")[0] if sixteen else mode
        source = f"{'16-bit ' if sixteen else ''}{'palette' if stored in ('P', 'PA') else stored} image"
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return _composite_on_white(rgba, path, source)
    if mode == "L" or mode == "1":
        what = "bilevel (1-bit)" if mode == "1" else "greyscale"
        _warn(path, f"{what} image replicated to 3 RGB channels")
        grey = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _GREY_16BIT_MODES or mode == "I":
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(
                f"cannot read image {path}: 32-bit integer pixels outside the 16-bit range; "
                "convert it to 8-bit RGB first"
            )
        _warn(path, "16-bit greyscale image reduced to 8 bits and replicated to 3 RGB channels")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        raise ImageReadError(
            f"cannot read image {path}: floating-point pixels (mode F) have no defined range; "
            "convert it to 8-bit RGB first"
        )
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"cannot read image {path}: cannot convert mode {mode} to RGB") from exc
    _warn(path, f"{'palette' if mode == 'P' else mode} image converted to RGB")
    return np.asarray(rgb, dtype=np.uint8).copy()


def _composite_on_white(rgba: np.ndarray, path: Path, source: str) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    if bool((alpha == 255).all()):
        _warn(path, f"{source}: alpha channel is fully opaque and was dropped")
        return rgba[:, :, :3].copy()
    _warn(path, f"{source}: transparent pixels composited onto a white background")
    rgb = rgba[:, :, :3].astype(np.uint32)
    # round(rgb·a/255 + 255·(1 − a/255)) in integers
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a float32 tensor (3, H, W) in [0, 1], RGB.

    Same conversions, warnings and errors as `read_image_uint8`.
    """
    return from_uint8_hwc(read_image_uint8(path))


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """Float [0, 1] (3, H, W) or (B, 3, H, W) tensor → uint8 (H, W, 3) or (B, H, W, 3) array.

    Values are clamped to [0, 1] and rounded to the nearest of the 256 levels. A uint8 tensor is
    only transposed.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"to_uint8_hwc takes a torch.Tensor, got {type(images).__name__}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(
            f"to_uint8_hwc expects a (3, H, W) or (B, 3, H, W) tensor, got shape {tuple(images.shape)}"
        )
    x = images.detach().cpu()
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ValueError(f"to_uint8_hwc expects a float or uint8 tensor, got {x.dtype}")
        x = x.float()
        if torch.isnan(x).any():
            raise ValueError("to_uint8_hwc: the image contains NaN values")
        x = x.clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(x.movedim(-3, -1).numpy())


def from_uint8_hwc(images: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) array → float32 (3, H, W) or (N, 3, H, W) tensor in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"from_uint8_hwc expects a uint8 array, got {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(
            f"from_uint8_hwc expects an (H, W, 3) or (N, H, W, 3) array, got shape {images.shape}"
        )
    t = torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3)
    return t.to(torch.float32).div_(255).contiguous()


def write_png(path: str | os.PathLike[str], image: torch.Tensor | np.ndarray) -> Path:
    """Write one RGB image as a lossless 8-bit PNG, atomically.

    Args:
        path: destination; missing parent folders are created.
        image: float tensor (3, H, W) or (1, 3, H, W) in [0, 1] (clamped, rounded to 8 bits),
            a uint8 tensor of the same shape, or a uint8 array (H, W, 3).

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: wrong shape or dtype.
        OutputError: the destination cannot be written (a folder in the way, no permission,
            disk full); no partial file is left behind.
    """
    path = Path(path)
    if isinstance(image, torch.Tensor):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"write_png expects a (3, H, W) or (1, 3, H, W) tensor, got shape {tuple(image.shape)}"
            )
        array = to_uint8_hwc(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                "write_png expects a uint8 (H, W, 3) array, "
                f"got {image.dtype} array of shape {image.shape}"
            )
        array = np.ascontiguousarray(image)
    else:
        raise TypeError(f"write_png takes a torch.Tensor or numpy array, got {type(image).__name__}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"write_png: empty image of shape {array.shape}")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
    except OSError as exc:
        reason = exc.strerror or _one_line(exc) or type(exc).__name__
        raise OutputError(f"cannot write {path}: {reason}") from exc
    return path


def resize_center_crop(
    image: np.ndarray, size: tuple[int, int], *, crop_fraction: float = 224 / 256
) -> np.ndarray:
    """Resize, then center-crop, a uint8 (H, W, 3) image to ``size`` = (height, width).

    ImageNet-style evaluation preprocessing: the image is scaled (bilinear, antialiased by
    Pillow) so that it covers ``size / crop_fraction`` — for a square target S, its short side
    becomes round(S · 256/224), e.g. 256 for 224, 342 for 299, 37 for 32 — and the central
    ``size`` window is kept. ``crop_fraction=1`` scales the short side to exactly S. An image
    already of ``size`` is returned unchanged (no resampling).
    """
    th, tw = (int(size[0]), int(size[1]))
    if th < 1 or tw < 1:
        raise ValueError(f"resize_center_crop: size must be positive, got {size}")
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"resize_center_crop: crop_fraction must be in (0, 1], got {crop_fraction}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"resize_center_crop expects a uint8 (H, W, 3) array, got {image.dtype} {image.shape}"
        )
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image
    scale = max(th / h, tw / w) / crop_fraction
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.Resampling.BILINEAR)
    )
    top = int(round((nh - th) / 2.0))
    left = int(round((nw - tw) / 2.0))
    return np.ascontiguousarray(resized[top : top + th, left : left + tw])
