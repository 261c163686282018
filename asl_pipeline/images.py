"""Decoding any photo a user or the dataset may hold into RGB uint8, or a clear reason why not."""
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class UnreadableImage(Exception):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _to_rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)  # phone photos are often stored sideways
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's convert("RGB") clips 16-bit values at 255; scale them instead. A 16-bit image is scaled
        # even when all its values are small (a dark photo); 32-bit "I" only when it exceeds 8 bits.
        gray = np.asarray(image).astype(np.float64)
        sixteen_bit = image.mode != "I" or gray.max() > 255
        gray = np.clip(np.round(gray / (257.0 if sixteen_bit else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, path="<bytes>", max_side: int | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) from encoded bytes; UnreadableImage for anything not a full image.

    max_side: scaled down (never up) to at most this on the longest side, while decoding where the format
    allows (a JPEG decodes straight at 1/2, 1/4 or 1/8 scale), so a large photo never takes its full size in memory.
    """
    if not data:
        raise UnreadableImage(path, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
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


def header_size(data: bytes, path="<bytes>") -> tuple[int, int]:
    """(width, height) from the image's header alone: a caller can refuse a huge image before decoding it.

    Only the header is read, however many pixels the file declares (a flat 12000 x 12000 PNG is a few
    kilobytes on disk and 430 MB decoded).
    """
    if not data:
        raise UnreadableImage(path, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.UnidentifiedImageError:
        raise UnreadableImage(path, "not a readable image (unknown format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(path, f"not a readable image ({error})") from None


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
