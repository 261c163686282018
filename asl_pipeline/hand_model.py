"""The MediaPipe hand-landmark model bundle: a local copy or Google's published download, sha256-pinned.

Either way the bytes must be one of the pinned bundles, so a featurize run on any machine uses a known
model. The bundle lands in models/, and train copies it into the folder of each model variant that reads
hands: predict on another machine needs nothing else.
"""
import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from asl_pipeline.atomic import atomic_file
from asl_pipeline.errors import PipelineError

DOWNLOAD_URL = ("https://storage.googleapis.com/mediapipe-models/hand_landmarker/hand_landmarker/"
                "float16/1/hand_landmarker.task")
# sha256 -> what these bytes are. Both bundles hold the same two models (palm detector, hand landmarks).
PINNED_SHA256 = {
    "3d53882509afffb0be5409a8640b7c401546cd90f37f07e64da7d8dba10cd0af":
        "float32 build from the mediapipe 0.10.14 wheel (../shared/models/mediapipe-hands, build_task.py)",
    "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1":
        f"Google's published float16 build ({DOWNLOAD_URL})",
}
BOTH_WAYS = (f"either put a pinned copy at hands.local_file (../shared/models/mediapipe-hands/hand_landmarker.task, "
             f"or rebuild it byte for byte with build_task.py there), or allow network access to {DOWNLOAD_URL}")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_pinned(data: bytes, origin: str) -> str:
    """The sha256 of `data`, or an error naming `origin` when it is not one of the pinned bundles."""
    digest = sha256_of(data)
    if digest not in PINNED_SHA256:
        raise PipelineError(f"hand model {origin} has sha256 {digest}, which is not a pinned MediaPipe bundle "
                            f"({', '.join(PINNED_SHA256)}): the file is damaged or another model; {BOTH_WAYS}")
    return digest


def _download(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PipelineError(f"could not download the hand model from {url} ({reason}); {BOTH_WAYS}") from None


def fetch_bundle(source: str, local_file: Path, dest: Path, timeout: float = 30.0) -> dict:
    """Put the pinned bundle at `dest` from `source` ('auto' | 'local' | 'download'); report where from."""
    local_file = Path(local_file)
    if source == "local" or (source == "auto" and local_file.is_file()):
        if not local_file.is_file():
            raise PipelineError(f"hands.source is local, but hands.local_file {local_file} does not exist; "
                                f"{BOTH_WAYS}")
        data, origin = local_file.read_bytes(), str(local_file)
    else:
        if source == "auto":
            print(f"hand model: no local copy at {local_file}; downloading {DOWNLOAD_URL}")
        data, origin = _download(DOWNLOAD_URL, timeout), DOWNLOAD_URL
    digest = check_pinned(data, origin)
    with atomic_file(dest) as tmp:
        tmp.write_bytes(data)
    return {"source": "local" if origin == str(local_file) else "download", "sha256": digest,
            "build": PINNED_SHA256[digest], "bytes": len(data)}


def verified_bundle(path: Path) -> bytes:
    """The bytes of a bundle next to a model; an error naming the file if it is missing or not pinned."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"hand model {path} not found: it is written by the hand_model stage "
                            "(`dvc repro hand_model`), or `dvc pull models/` on another machine")
    data = path.read_bytes()
    check_pinned(data, str(path))
    return data

