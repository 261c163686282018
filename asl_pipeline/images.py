"""Decoding any photo a user or the dataset may hold into RGB uint8, or a clear reason why not."""
import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps, WebPImagePlugin

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class UnreadableImage(Exception):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


GREY_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16- and 32-bit greyscale: Pillow scales only 8-bit images down
# Memory decode_rgb takes per decoded pixel, as a multiple of the decoded mode's bytes per pixel: the decoded image,
# the copy Pillow reduces it into, the resampled and RGB copies (measured: 7.3 bytes a pixel for RGB, 11.3 for RGBA).
COPIES = 2.8
# Modes decoded into one byte a pixel more: 16- and 32-bit grey scaled to 8 bits, a palette resampled through RGB.
COPIED_MODES = (*GREY_MODES, "P", "PA")
# libwebp decodes into two RGBA canvases of its own before Pillow copies the picture out (measured: 16.5 to 17.4
# bytes a pixel in all, against 3 x COPIES).
WEBP_CANVAS_BYTES = 8
# Deflate writes at most 1032 bytes from one (a run of 258 bytes in two bits): a PNG shorter than its pixels over
# this is cut short, whatever its header declares.
DEFLATE_MAX_RATIO = 1032


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16- or 32-bit greyscale image as 8-bit "L", its values scaled rather than clipped at 255 (as Pillow's
    convert does). A 16-bit image is scaled even when all its values are small (a dark photo); a 32-bit "I" one
    only when it exceeds 8 bits. Row block by row block: a large image costs no float copy of itself."""
    grey = np.asarray(image)
    divisor = 257.0 if image.mode != "I" or grey.max() > 255 else 1.0
    eight = np.empty(grey.shape, np.uint8)
    for top in range(0, grey.shape[0], 512):
        block = grey[top:top + 512].astype(np.float32) / divisor
        eight[top:top + 512] = np.clip(np.round(block), 0, 255)
    converted = Image.fromarray(eight, "L")
    converted.info = image.info  # its EXIF orientation, for exif_transpose
    return converted


def _to_rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)  # phone photos are often stored sideways
    if image.mode in GREY_MODES:
        image = _eight_bit(image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, path="<bytes>", max_side: int | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) from encoded bytes; UnreadableImage for anything not a full image.

    max_side: scaled down (never up) to at most this on the longest side, while decoding where the format
    allows (a JPEG decodes straight at 1/2, 1/4 or 1/8 scale), so a large photo never takes its full size in memory.
    """
    if not data:
        raise UnreadableImage(path, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened
            if max_side and image.mode in GREY_MODES:
                image = _eight_bit(image)  # scaled to 8 bits first: Pillow reduces no 16-bit image
            if max_side:
                # reducing_gap 1: the JPEG draft scale may come down to max_side itself, not twice it.
                image.thumbnail((max_side, max_side), Image.LANCZOS, reducing_gap=1.0)
            image.load()  # a truncated file only fails here
            array = _to_rgb(image)
    except Image.UnidentifiedImageError:
        # Pillow's own message names an in-memory object by address: not reproducible in skipped.csv.
        raise UnreadableImage(path, "not a readable image (unknown format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(path, f"not a readable image ({error})") from None
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise UnreadableImage(path, "image has no pixels")
    return array


@dataclasses.dataclass(frozen=True)
class Header:
    """What an image's header says, read without decoding it: what it is, its size, and what decoding it takes."""

    kind: str  # Pillow's name of its format: "JPEG", "PNG", "WEBP", ...
    width: int
    height: int
    decode_bytes: int  # memory decode_rgb(max_side) takes for it, at most


def read_header(data: bytes, path="<bytes>", max_side: int | None = None) -> Header:
    """The image's Header, from its header alone, however many pixels it declares (a flat 12000 x 12000 PNG is a
    few kilobytes on disk and 430 MB decoded): a caller can refuse what it cannot afford before decoding it.

    decode_bytes counts the pixels as decode_rgb will decode them (a JPEG at its draft scale for max_side) times
    the bytes of each in the decoded mode, plus what the format needs beyond them: a progressive JPEG's
    coefficients of the whole image, libwebp's canvases. UnreadableImage for a PNG too short for the pixels it
    declares (cut short, or made to look large).
    """
    if not data:
        raise UnreadableImage(path, "empty file")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        # Pillow's WebP opener makes libwebp's decoder, canvases included: the size is read from the RIFF header.
        size = WebPImagePlugin._get_size(data[:30])
        if size is None:
            raise UnreadableImage(path, "not a readable image (a WebP without its size)")
        pixels = size[0] * size[1]
        return Header("WEBP", *size, int(pixels * (4 * COPIES + WEBP_CANVAS_BYTES)))
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            declared = width * height * mode_bytes(image.mode)
            if kind == "PNG" and len(data) * DEFLATE_MAX_RATIO < declared:
                raise UnreadableImage(path, f"cut short: its {len(data):,} bytes cannot hold the {width} x {height} "
                                            "pixels it declares")
            extra = coefficient_bytes(image) if image.info.get("progressive") else 0
            if max_side:
                scale = min(1.0, max_side / max(width, height))
                image.draft(None, (max(1, round(width * scale)), max(1, round(height * scale))))
            decoded = image.size[0] * image.size[1] * (mode_bytes(image.mode) + (image.mode in COPIED_MODES))
    except Image.UnidentifiedImageError:
        raise UnreadableImage(path, "not a readable image (unknown format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(path, f"not a readable image ({error})") from None
    return Header(kind, width, height, int(decoded * COPIES) + extra)


def mode_bytes(mode: str) -> int:
    """Bytes a pixel takes in Pillow's `mode` (1 for a 1-bit mode: Pillow keeps a byte a pixel)."""
    described = ImageMode.getmode(mode)
    return len(described.bands) * int(described.typestr[-1])


def coefficient_bytes(jpeg: Image.Image) -> int:
    """What libjpeg holds for a progressive JPEG whatever its draft scale: every component's DCT coefficients,
    2 bytes each, of the whole image (a subsampled component has fewer)."""
    width, height = jpeg.size
    most_h = max(h for _, h, _, _ in jpeg.layer)
    most_v = max(v for _, _, v, _ in jpeg.layer)
    return sum(2 * width * height * h * v // (most_h * most_v) for _, h, v, _ in jpeg.layer)


def load_rgb(path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImage(path, f"cannot read file ({error.strerror or error})") from None
    return decode_rgb(data, path)


def fingerprint(rgb: np.ndarray) -> np.ndarray:
    """A 16x16 grayscale thumbnail, centred and unit-norm: near-identical frames have a dot product near 1."""
    thumbnail = Image.fromarray(rgb).convert("L").resize((16, 16), Image.BILINEAR)
    vector = np.asarray(thumbnail, dtype=np.float32).ravel()
    vector -= vector.mean()
    return vector / (np.linalg.norm(vector) + 1e-6)


def inspect(path):
    """(sha256 of the bytes, fingerprint, None) for a readable image, (None, None, reason) otherwise.

    One read and one decode per file: the split stage calls it on every image of the dataset.
    """
    try:
        data = Path(path).read_bytes()
        rgb = decode_rgb(data, path)
    except OSError as error:
        return None, None, f"cannot read file ({error.strerror or error})"
    except UnreadableImage as error:
        return None, None, error.reason
    return hashlib.sha256(data).hexdigest(), fingerprint(rgb), None
