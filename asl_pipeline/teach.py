"""Teach mode's files: the photos of the user's own hand that the demo page saves per letter, for the next
training run (data.extra_train reads the folder).

Everything the page writes goes through here: a name the server makes, a letter from the model's own class
list, a size limit per file, per save and for the whole folder, and writes that land all together or not at
all. Deciding which photo shows a hand is the page's (serve.Demo.teach): it needs the model.
"""
import datetime
import io
import secrets
from pathlib import Path

from PIL import Image

from asl_pipeline import images
from asl_pipeline.atomic import atomic_files, remove_temporaries
from asl_pipeline.uploads import BadUpload

JPEG_QUALITY = 95  # of a photo uploaded in another format, re-encoded
SAVE_LIMIT_MB = 50  # what one press of Save may write: a dozen phone photos
FOLDER_LIMIT_MB = 500  # the whole teach folder: hundreds of photos, far more than teaching a hand takes
# Segments a JPEG keeps when saved: APP0 (JFIF: pixel density), APP2 (ICC colour profile), APP14 (Adobe: how
# to read its colours). The other APPn segments and comments carry metadata (EXIF with a phone's location
# and serial number, XMP, IPTC) that training never reads.
KEPT_JPEG_SEGMENTS = {0xE0, 0xE2, 0xEE}
START_OF_SCAN, END_OF_IMAGE, COMMENT = 0xDA, b"\xff\xd9", 0xFE
EXIF_ORIENTATION = 0x0112


def file_name(now: datetime.datetime) -> str:
    """A new file name made by the server: the time orders the photos, the random part keeps two photos
    taken in the same second apart."""
    return f"teach_{now:%Y%m%dT%H%M%SZ}_{secrets.token_hex(4)}.jpg"


def check_label(label: str, classes) -> None:
    """BadUpload unless `label` is one of the model's classes: checked against that list and never the file
    system, so that no label can name a path outside the teach folder."""
    if label not in classes:
        raise BadUpload(f"{label!r} is not one of the model's classes ({', '.join(classes)}): pick the "
                        "letter from the list.")


def stored_bytes(data: bytes, pixels) -> bytes:
    """The file to save for an uploaded photo that uploads.read_photo read as `pixels`: a JPEG's own bytes
    without their metadata (never inflated by re-encoding), any other format re-encoded as a JPEG from those
    pixels (at most uploads.READ_SIDE a side)."""
    with Image.open(io.BytesIO(data)) as image:
        kind, orientation = image.format, image.getexif().get(EXIF_ORIENTATION, 1)
    if kind == "JPEG":
        try:
            return without_metadata(data, orientation)
        except ValueError:  # segments that do not parse (Pillow read past them): its pixels, re-encoded
            pass
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def without_metadata(jpeg: bytes, orientation: int = 1) -> bytes:
    """The JPEG with its compressed pixels as they are, but without metadata segments and without anything
    after its end marker; the EXIF orientation, which says which way up to read it, kept alone.
    ValueError for segments that do not parse."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start marker")
    kept = [b"\xff\xd8"]
    if orientation != 1:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        payload = exif.tobytes()
        kept.append(b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload)
    at = 2
    while True:
        if at + 4 > len(jpeg) or jpeg[at] != 0xFF:
            raise ValueError(f"no JPEG segment at byte {at}")
        marker = jpeg[at + 1]
        if marker == 0xFF:  # a fill byte before the marker
            at += 1
            continue
        if marker == START_OF_SCAN:
            # The compressed pixels: a 0xFF inside them is always followed by 0x00 or a restart marker, so the
            # first end marker after the first scan is the image's (progressive scans have no end marker).
            end = jpeg.find(END_OF_IMAGE, at)
            if end < 0:
                raise ValueError("no JPEG end marker")
            kept.append(jpeg[at:end + 2])
            return b"".join(kept)
        length = int.from_bytes(jpeg[at + 2:at + 4], "big")
        metadata = (0xE0 <= marker <= 0xEF and marker not in KEPT_JPEG_SEGMENTS) or marker == COMMENT
        if not metadata:
            kept.append(jpeg[at:at + 2 + length])
        at += 2 + length


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under the teach folder."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def check_room(folder: Path, used: int, saving: int) -> None:
    """BadUpload when `saving` more bytes would pass the per-save limit, or the folder's limit with `used`
    bytes there already."""
    if saving > SAVE_LIMIT_MB * 1024 * 1024:
        raise BadUpload(f"These photos come to {saving / 1024 / 1024:.1f} MB or more; one save takes up to "
                        f"{SAVE_LIMIT_MB} MB. Nothing was saved: save them a few at a time.")
    if used + saving > FOLDER_LIMIT_MB * 1024 * 1024:
        raise BadUpload(f"{folder} holds {used / 1024 / 1024:.1f} MB of photos and these would pass its "
                        f"{FOLDER_LIMIT_MB} MB limit. Nothing was saved: remove photos you no longer need from it, "
                        "or start the demo with another --teach-dir.")


def save(photos: list, label: str, classes, folder: Path) -> list:
    """Write the files `photos` (bytes from stored_bytes) as folder/<label>/<new name>.jpg, all of them or,
    on any error, none (temporaries included): training never sees half a save. Their paths, in order."""
    check_label(label, classes)
    check_room(folder, folder_bytes(folder), sum(len(photo) for photo in photos))
    now = datetime.datetime.now(datetime.timezone.utc)
    paths = [Path(folder) / label / file_name(now) for _ in photos]
    with atomic_files(*paths) as temporaries:
        for photo, temporary in zip(photos, temporaries):
            temporary.write_bytes(photo)
    return paths


def counts(folder: Path, classes) -> dict:
    """{class: how many photos it has in folder/<class>/}, in the model's class order.

    Counts every image file there, photos dropped in by hand included; hidden files (an unfinished save's
    temporary) are not photos.
    """
    def photos(class_folder: Path) -> int:
        if not class_folder.is_dir():
            return 0
        return sum(1 for path in class_folder.iterdir() if path.is_file() and not path.name.startswith(".")
                   and path.suffix.lower() in images.IMAGE_SUFFIXES)

    return {label: photos(Path(folder) / label) for label in classes}


def remove_stale_temporaries(folder: Path, classes) -> list:
    """At start-up: the temporaries of saves killed outright (SIGKILL, power loss) in the class folders."""
    return [path for label in classes for path in remove_temporaries(Path(folder) / label)]
