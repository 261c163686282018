"""What the demo page accepts from a browser (an uploaded photo, a snapshot, a live frame), checked before it
costs memory: one place for the page (serve.py) and its live endpoint (live.py)."""
import numpy as np

from asl_pipeline import images

MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # Streamlit's megabyte
# Streamlit refuses a file over its own limit in the browser, marking only the file name red; up to this
# size a file reaches read_photo instead, whose refusal says on the page what was wrong and what to do.
STREAMLIT_UPLOAD_LIMIT_MB = 5 * MAX_UPLOAD_MB
# Ten megabytes of JPEG or flat PNG can hold hundreds of megapixels; beyond this, decoding and drawing
# take seconds and gigabytes for no better prediction.
MAX_PIXELS = 50_000_000
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in images.IMAGE_SUFFIXES)


class BadUpload(Exception):
    """An upload the page cannot classify; the message says what to do instead."""


def read_photo(data: bytes) -> np.ndarray:
    """The uploaded bytes as an RGB uint8 photo, or BadUpload saying what is wrong with them."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadUpload(f"The file is {len(data) / 1024 / 1024:.1f} MB; the demo takes photos of up to "
                        f"{MAX_UPLOAD_MB} MB. Save it smaller (as a JPEG, or scaled down) and upload it again.")
    if not data:
        raise BadUpload("The upload is empty (0 bytes). Pick a photo file, or take the snapshot again.")
    try:
        # The size from the header first: a photo over the limit is refused before it takes the memory.
        width, height = images.header_size(data, "upload")
        if height * width > MAX_PIXELS:
            raise BadUpload(f"The photo is {width} x {height} pixels ({height * width / 1e6:.0f} megapixels); "
                            f"the demo takes up to {MAX_PIXELS / 1e6:.0f} megapixels. Scale it down and upload "
                            "it again.")
        return images.decode_rgb(data, "upload")
    except images.UnreadableImage as error:
        raise BadUpload(f"This file is not an image the demo can read: {error.reason}. Upload a photo "
                        f"({', '.join(UPLOAD_TYPES)}).") from None
