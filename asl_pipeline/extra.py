"""More signers' photos for training: data.extra_train's folders and .zip files, data.extra_kaggle's
Kaggle datasets, each entry gathered into data/extra/<name>.

The split stage adds them to the training split only. They are copied into the pipeline (DVC outputs, so
`dvc push` shares them and every experiment trains on the same bytes) by the extra_train@<name> stages, one
per entry, each with its folder or .zip as a DVC dependency: a changed photo re-runs that entry's stage
alone, and `dvc status` is clean once they ran. Kaggle datasets have no local bytes to hash; the
extra_kaggle stage re-runs when their names change.

Layout: data/extra/<name>/<CLASS>/<file> and data/extra/<name>/manifest.csv with one row per photo (path
from the project root, label, origin: the entry's name, or kaggle:owner/dataset; the file within the
source; sha256 of its bytes). data.extra_kaggle's datasets share data/extra/kaggle.
"""
import csv
import hashlib
import os
import shutil
from pathlib import Path

from asl_pipeline import download, images
from asl_pipeline.atomic import atomic_dir
from asl_pipeline.config import ALL_CLASSES, EXTRA_KAGGLE_NAME, DataParams, input_path
from asl_pipeline.errors import PipelineError

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["path", "label", "origin", "source_file", "sha256"]
KAGGLE_PREFIX = "kaggle:"  # the origin of a data.extra_kaggle photo: kaggle:owner/dataset


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
                            "remove the entry from data.extra_train in params.yaml")
    if path.is_file() and path.suffix.lower() != ".zip":
        raise PipelineError(f"data.extra_train: {source} is a file but not a .zip; expected a folder or a "
                            ".zip of <CLASS>/<photo>")
    return path


def gather(name: str, source: str, root: Path, dest: Path) -> int:
    """Copy the photos of data.extra_train entry `name` (a folder or .zip, `source`) into `dest`
    (data/extra/<name>), replacing it whole; returns how many photos it holds."""
    with atomic_dir(dest) as tmp:
        rows = _copy_source(name, _local(source, root), root, dest, tmp)
        _write_manifest(tmp, rows)
    return len(rows)


def gather_kaggle(datasets, root: Path, dest: Path) -> dict:
    """Download data.extra_kaggle's datasets (owner/name) into `dest` (data/extra/kaggle), one folder each;
    returns {origin: photos}."""
    counts = {}
    with atomic_dir(dest) as tmp:
        rows = []
        for index, dataset in enumerate(datasets):
            unpacked = tmp / ".unpacked" / str(index)
            zip_path = download.kaggle_download(dataset, unpacked / ".download")
            download.safe_extract(zip_path, unpacked)
            found = _copy_source(KAGGLE_PREFIX + dataset, unpacked, root, dest / str(index), tmp / str(index))
            counts[KAGGLE_PREFIX + dataset] = len(found)
            rows += found
        shutil.rmtree(tmp / ".unpacked", ignore_errors=True)
        _write_manifest(tmp, rows)
    return counts


def _write_manifest(folder: Path, rows) -> None:
    with open(folder / MANIFEST, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)


def _copy_source(origin: str, source: Path, root: Path, dest: Path, tmp: Path) -> list:
    """Copy one entry's photos (a folder, or a .zip unpacked into tmp first) into tmp/<CLASS>/; manifest rows
    with paths as they will be in dest."""
    folder = source
    if source.is_file():
        folder = tmp / ".unpacked"
        download.safe_extract(source, folder)
    rows = []
    for label, photo in _photos(_class_root(folder, origin)):
        target = tmp / label / photo.name
        if target.exists():  # two files of one name in nested folders of a class
            target = target.with_name(f"{photo.parent.name}_{photo.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
        final = dest / target.relative_to(tmp)
        rows.append([Path(os.path.relpath(final, root)).as_posix(), label, origin,
                     photo.relative_to(folder).as_posix(), _sha256(target)])
    shutil.rmtree(tmp / ".unpacked", ignore_errors=True)
    return rows


def read_manifest(path: Path) -> list[dict]:
    """One data/extra/<name>/manifest.csv as dicts."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run `dvc repro` (the extra_train stages write it)") from None
    if rows and list(rows[0]) != MANIFEST_COLUMNS:
        raise PipelineError(f"{path} must have the columns {','.join(MANIFEST_COLUMNS)}; re-run `dvc repro`")
    return rows


def read_manifests(extra_dir: Path, data: DataParams) -> list[dict]:
    """The manifest rows of every entry data.extra_train and data.extra_kaggle list now (a folder of an entry
    since removed from params.yaml is not read)."""
    names = list(data.extra_train) + ([EXTRA_KAGGLE_NAME] if data.extra_kaggle else [])
    return [row for name in names for row in read_manifest(extra_dir / name / MANIFEST)]
