"""What the demo page accepts from a browser (an uploaded photo, a snapshot, a live frame), checked before it
costs memory, and how many are read at once: one place for the page (serve.py) and its live endpoint (live.py)."""
import contextlib
import dataclasses
import math
import threading
import time

import numpy as np

from asl_pipeline import images

# Of a photo, and of Streamlit's own uploads (its uploader refuses a larger file in the browser, saying so): one
# limit everywhere, so that no upload the page would refuse is held in the server's memory first.
MAX_UPLOAD_MB = 10
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in images.IMAGE_SUFFIXES)
# A photo is read scaled down to this on its longest side: the hand models see the whole photo at 192 pixels
# and the hand in a 224-pixel crop, so more pixels only cost memory (a 50-megapixel photo read whole takes
# about 1 GB while its request runs; scaled on decoding, a JPEG about 50 MB and a PNG about 200 MB).
READ_SIDE = 2048
# Photos and frames decoded and read at once, whatever number of requests arrive: the bound on the memory they
# take. The model reads one at a time anyway, so a second slot only lets the next photo decode meanwhile.
WORK_SLOTS = 2
# The memory the photos and frames decoded at once may take (images.Header.decode_bytes, told from each one's
# header): a photo takes its share while decoded and read, and one larger than all of it is refused. A 49-megapixel
# JPEG takes about 100 MB (read at half scale), a flat 49-megapixel RGB PNG about 410 MB (two do not decode at
# once); a WebP (no reduced decoding) passes it up to about 27 megapixels. The demo's peak stays under 2 GB.
DECODE_BUDGET_MB = 500
BUSY_SECONDS = 20.0  # a request waits this long for a slot, then is told the demo is busy


@dataclasses.dataclass(frozen=True)
class Limits:
    """The largest upload of one kind: refused before it is decoded."""

    what: str  # "photo", "frame": named in the refusal
    max_mb: float
    max_pixels: int

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)  # Streamlit's megabyte


# Ten megabytes of JPEG or flat PNG can hold hundreds of megapixels; beyond 50, decoding takes seconds for no
# better prediction.
PHOTO = Limits("photo", MAX_UPLOAD_MB, 50_000_000)
# The live page sends frames of at most 320 pixels a side (live.FRAME_SIDE), some 30 KB of JPEG: a frame may be
# a few megapixels at most (a full-HD camera frame sent as is), so that a flood of frames costs little memory.
FRAME = Limits("frame", 2, 2_100_000)
MAX_UPLOAD_BYTES = PHOTO.max_bytes

_work_slots = threading.BoundedSemaphore(WORK_SLOTS)
_budget = threading.Condition()  # guards _budget_free: the bytes of DECODE_BUDGET_MB no decode holds now
_budget_free = [DECODE_BUDGET_MB * 1024 * 1024]


class BadUpload(Exception):
    """An upload the page cannot classify; the message says what to do instead."""


class Busy(BadUpload):
    """Every work slot stayed taken for BUSY_SECONDS: too many photos arrived at once."""


@contextlib.contextmanager
def work_slot(decode_bytes: int = 0):
    """Hold one of the WORK_SLOTS, and `decode_bytes` of DECODE_BUDGET_MB, while a photo is decoded and read;
    Busy when they do not free up in BUSY_SECONDS."""
    deadline = time.monotonic() + BUSY_SECONDS
    busy = Busy(f"The demo is busy reading other photos ({WORK_SLOTS} at a time, in {DECODE_BUDGET_MB} MB) and "
                f"this one waited {BUSY_SECONDS:.0f} s for its turn: try again in a moment.")
    if not _work_slots.acquire(timeout=BUSY_SECONDS):
        raise busy
    try:
        with _budget:
            if not _budget.wait_for(lambda: _budget_free[0] >= decode_bytes, deadline - time.monotonic()):
                raise busy
            _budget_free[0] -= decode_bytes
        try:
            yield
        finally:
            with _budget:
                _budget_free[0] += decode_bytes
                _budget.notify_all()
    finally:
        _work_slots.release()


def check_size(data: bytes, limits: Limits) -> int:
    """The memory decoding the bytes takes (images.Header.decode_bytes); BadUpload unless they are within `limits`
    and their decoding fits DECODE_BUDGET_MB, told from the image's header alone."""
    if len(data) > limits.max_bytes:
        raise BadUpload(f"The {limits.what} is {len(data) / 1024 / 1024:.1f} MB; the demo takes {limits.what}s of "
                        f"up to {limits.max_mb:g} MB. Save it smaller (as a JPEG, or scaled down) and try again.")
    if not data:
        raise BadUpload("The upload is empty (0 bytes). Pick a photo file, or take the snapshot again.")
    try:
        header = images.read_header(data, "upload", READ_SIDE)
    except images.UnreadableImage as error:
        raise unreadable(error) from None
    pixels, side = header.width * header.height, math.isqrt(limits.max_pixels)
    if pixels > limits.max_pixels:
        raise BadUpload(f"The {limits.what} is {header.width} x {header.height} pixels ({pixels:,}); the demo takes "
                        f"{limits.what}s of up to {limits.max_pixels:,} pixels ({side} x {side}). Scale it down and "
                        "try again.")
    if header.decode_bytes > DECODE_BUDGET_MB * 1024 * 1024:
        raise BadUpload(f"The {limits.what} is a {header.width} x {header.height} {header.kind}: reading it would take "
                        f"{header.decode_bytes / 1024 / 1024:,.0f} MB of memory, and the demo reads {limits.what}s of "
                        f"up to {DECODE_BUDGET_MB} MB. Save it as a JPEG (read at a reduced scale), or scale it down, "
                        "and try again.")
    return header.decode_bytes


def unreadable(error: images.UnreadableImage) -> BadUpload:
    return BadUpload(f"This file is not an image the demo can read: {error.reason}. Upload a photo "
                     f"({', '.join(UPLOAD_TYPES)}).")


def read_photo(data: bytes, limits: Limits | None = None) -> np.ndarray:
    """The uploaded bytes as an RGB uint8 photo of at most READ_SIDE a side, or BadUpload saying what is wrong
    with them."""
    check_size(data, limits or PHOTO)
    return _decoded(data)


def _decoded(data: bytes) -> np.ndarray:
    """Bytes check_size passed, decoded at most READ_SIDE a side."""
    try:
        return images.decode_rgb(data, "upload", max_side=READ_SIDE)
    except images.UnreadableImage as error:
        raise unreadable(error) from None


@contextlib.contextmanager
def reading(data: bytes, limits: Limits | None = None):
    """The uploaded bytes as read_photo's photo, decoded and used inside one of the WORK_SLOTS with its share of
    DECODE_BUDGET_MB, held until the block ends: all photos being decoded and read take that budget at most. Bytes
    over the limits are refused at once, from the header, without waiting; Busy when no slot or share frees up."""
    decode_bytes = check_size(data, limits or PHOTO)
    with work_slot(decode_bytes):
        yield _decoded(data)  # checked above: its header is not read again on the live path
