"""data.extra_train: photos of more signers (folders, .zip files, Kaggle datasets) gathered into data/extra.

The split stage adds them to the training split only. They are copied into the pipeline (a DVC output,
so `dvc push` shares them and every experiment trains on the same bytes) by the extra_train stage, which
DVC runs on every `dvc repro` (`always_changed`): DVC cannot hash a list of folders named in params.yaml,
so the stage hashes them itself and rewrites data/extra only when their content changed. When it did not,
data/extra keeps its hash and nothing downstream re-runs.

Layout: data/extra/<n>/<CLASS>/<file> for the n-th source, and data/extra/manifest.csv with one row per
photo (path from the project root, label, origin: the data.extra_train entry, file within the source,
sha256 of its bytes).
"""
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

from asl_pipeline import download, images
from asl_pipeline.atomic import atomic_dir, write_json
from asl_pipeline.config import ALL_CLASSES, KAGGLE_PREFIX, input_path
from asl_pipeline.errors import PipelineError

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["path", "label", "origin", "source_file", "sha256"]
SOURCES_FILE = "sources.json"  # what data/extra was built from: the entries and their content hashes


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _class_root(folder: Path, origin: str) -> Path | None:
    """The folder under `folder` whose subfolders are class folders (A, B, ..., del, nothing, space): the
    folder itself, or one up to download.MAX_LAYOUT_DEPTH levels down (a zip's top folder, Kaggle's
    asl_alphabet_train/asl_alphabet_train). None when it holds no class folders at all (an empty folder)."""
    level = [folder]
    for _ in range(download.MAX_LAYOUT_DEPTH + 1):
        for candidate in level:
            names = [sub.name for sub in download.visible_subdirs(candidate)]
            if names and any(name in ALL_CLASSES for name in names):
                unknown = [name for name in names if name not in ALL_CLASSES]
                if unknown:
                    raise PipelineError(f"data.extra_train: {origin} has folders {unknown} beside its class "
                                        f"folders; expected only class names ({', '.join(ALL_CLASSES)}): "
                                        "rename or remove them")
                return candidate
        level = [sub for candidate in level for sub in download.visible_subdirs(candidate)]
    if any(path.suffix.lower() in images.IMAGE_SUFFIXES for path in folder.rglob("*")):
        raise PipelineError(f"data.extra_train: {origin} holds photos but no class folders; expected "
                            "<CLASS>/<photo> inside, e.g. A/photo1.jpg")
    return None


def _photos(class_root: Path | None):
    """(label, path) of every photo under a class root, in a stable order."""
    if class_root is None:
        return []
    return [(class_dir.name, path) for class_dir in download.visible_subdirs(class_root)
            for path in sorted(class_dir.rglob("*"))
            if path.is_file() and not download.is_hidden(path.name) and path.suffix.lower() in images.IMAGE_SUFFIXES]


def _local(source: str, root: Path) -> Path:
    path = input_path(root, source)
    if not path.exists():
        raise PipelineError(f"data.extra_train: {source} does not exist (looked at {path}); create it, or "
                            "remove it from the list in params.yaml")
    if path.is_file() and path.suffix.lower() != ".zip":
        raise PipelineError(f"data.extra_train: {source} is a file but not a .zip; expected a folder or a "
                            ".zip of <CLASS>/<photo>")
    return path


def fingerprint(sources, root: Path) -> list:
    """What data/extra is built from: per entry, the sha256 of every photo of a folder, of a .zip's bytes,
    or a Kaggle dataset's name (downloading it again to compare would defeat the purpose)."""
    entries = []
    for source in sources:
        if source.startswith(KAGGLE_PREFIX):
            entries.append({"source": source})
            continue
        path = _local(source, root)
        if path.is_file():
            entries.append({"source": source, "zip_sha256": _sha256(path)})
        else:
            entries.append({"source": source, "photos": [[label, path.relative_to(input_path(root, source))
                                                          .as_posix(), _sha256(path)]
                                                         for label, path in _photos(_class_root(path, source))]})
    return entries


def gather(sources, root: Path, dest: Path) -> dict:
    """Rebuild `dest` (data/extra) from `sources` unless it was built from the same content; returns
    {"changed": bool, "photos": {origin: count}}."""
    wanted = fingerprint(sources, root)
    previous = dest / SOURCES_FILE
    if previous.is_file() and json.loads(previous.read_text(encoding="utf-8")) == wanted:
        return {"changed": False, "photos": _counts(dest / MANIFEST)}
    with atomic_dir(dest) as tmp:
        rows = []
        for index, source in enumerate(sources):
            rows += _copy_source(index, source, root, dest, tmp)
        shutil.rmtree(tmp / ".unpacked", ignore_errors=True)
        with open(tmp / MANIFEST, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(rows)
        write_json(tmp / SOURCES_FILE, wanted)
    return {"changed": True, "photos": _counts(dest / MANIFEST)}


def _copy_source(index: int, source: str, root: Path, dest: Path, tmp: Path) -> list:
    """Copy one entry's photos into tmp/<index>/<CLASS>/; manifest rows with paths as they will be in dest."""
    unpacked = tmp / ".unpacked" / str(index)
    if source.startswith(KAGGLE_PREFIX):
        zip_path = download.kaggle_download(source[len(KAGGLE_PREFIX):], unpacked / ".download")
        download.safe_extract(zip_path, unpacked)
        folder = unpacked
    else:
        folder = _local(source, root)
        if folder.is_file():
            download.safe_extract(folder, unpacked)
            folder = unpacked
    rows = []
    for label, photo in _photos(_class_root(folder, source)):
        target = tmp / str(index) / label / photo.name
        if target.exists():  # two files of one name in nested folders of a class
            target = target.with_name(f"{photo.parent.name}_{photo.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
        final = dest / target.relative_to(tmp)
        rows.append([Path(os.path.relpath(final, root)).as_posix(), label, source,
                     photo.relative_to(folder).as_posix(), _sha256(target)])
    return rows


def read_manifest(path: Path) -> list[dict]:
    """data/extra/manifest.csv as dicts; [] when data.extra_train is empty."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run `dvc repro extra_train`") from None
    if rows and list(rows[0]) != MANIFEST_COLUMNS:
        raise PipelineError(f"{path} must have the columns {','.join(MANIFEST_COLUMNS)}; re-run "
                            "`dvc repro extra_train`")
    return rows


def _counts(manifest: Path) -> dict:
    counts = {}
    for row in read_manifest(manifest):
        counts[row["origin"]] = counts.get(row["origin"], 0) + 1
    return counts
