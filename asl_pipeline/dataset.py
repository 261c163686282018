"""Discovery, validation, de-duplication and leakage-free splitting of the Kaggle-layout images.

Manifests (CSV: path,label,origin) replace image copies. Paths are relative to the project root; origin is
`dataset` or the data.extra_train entry a training photo came from.
"""
import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np

from asl_pipeline import images, progress
from asl_pipeline.config import ALL_CLASSES, DATASET_ORIGIN, KAGGLE_TEST, SPLITS, SplitParams
from asl_pipeline.errors import PipelineError

_FRAME_NUMBER = re.compile(r"(\d+)$")
_KAGGLE_TEST_NAME = re.compile(r"^(.+)_test$")


@dataclasses.dataclass(frozen=True)
class Item:
    path: str  # relative to the project root, POSIX separators
    label: str
    sha256: str
    fingerprint: np.ndarray = dataclasses.field(compare=False, repr=False)
    origin: str = DATASET_ORIGIN

    @property
    def frame(self) -> int | None:
        """Frame number of the video the Kaggle image came from, parsed from e.g. 'A123.jpg'."""
        match = _FRAME_NUMBER.search(Path(self.path).stem)
        return int(match.group(1)) if match else None


@dataclasses.dataclass
class ScanReport:
    unknown_class_folders: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason)
    duplicates_dropped: int = 0
    conflicting_labels_dropped: int = 0
    kaggle_test_overlap_dropped: int = 0
    extra_excluded: int = 0  # data.extra_train photos of split.extra_exclude's classes


def _candidate_files(folder: Path, dataset_root: Path, report: ScanReport, root: Path):
    """Regular, non-hidden files under `folder`; symlinks leading outside the dataset are reported."""
    if not folder.resolve().is_relative_to(dataset_root.resolve()):
        # A symlinked folder: the files under it are no symlinks themselves, but lie outside all the same.
        report.skipped.append((_relative(folder, root), "symlink pointing outside the dataset"))
        return
    for path in sorted(p for p in folder.rglob("*") if not p.name.startswith(".")):
        if path.is_symlink() and not path.resolve().is_relative_to(dataset_root.resolve()):
            report.skipped.append((_relative(path, root), "symlink pointing outside the dataset"))
        elif path.is_file():
            yield path


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _inspect_all(paths):
    # Pillow releases the GIL while decoding, so threads use every core.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(progress.bar(len(paths), "split: decoding", iterable=pool.map(images.inspect, paths)))


def scan(raw_dir: Path, classes, root: Path, report: ScanReport):
    """Readable training images of `classes` and Kaggle test images, as Items; the rest goes to `report`."""
    train_dir, test_dir = raw_dir / "asl_alphabet_train", raw_dir / "asl_alphabet_test"
    if not train_dir.is_dir():
        raise PipelineError(f"{train_dir} not found: run `dvc repro download` (or check data.local_dir)")
    labelled = []
    for folder in sorted(p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in ALL_CLASSES:
            report.unknown_class_folders.append(folder.name)
        elif folder.name in classes:
            labelled += [(path, folder.name) for path in _candidate_files(folder, raw_dir, report, root)]
    test = []
    if test_dir.is_dir():
        for path in _candidate_files(test_dir, raw_dir, report, root):
            match = _KAGGLE_TEST_NAME.match(path.stem)
            if match and match.group(1) in classes:
                test.append((path, match.group(1)))
    results = _inspect_all([path for path, _ in labelled + test])
    train_items, test_items = [], []
    for index, ((path, label), (digest, thumbnail, reason)) in enumerate(zip(labelled + test, results)):
        if reason:
            report.skipped.append((_relative(path, root), reason))
        else:
            (train_items if index < len(labelled) else test_items).append(
                Item(_relative(path, root), label, digest, thumbnail))
    return train_items, test_items


def deduplicate(items, kaggle_test, params: SplitParams, report: ScanReport):
    """Drop copies so that no image, nor a frame block it belongs to, sits on two sides of a split.

    Byte-identical copies within a class keep the first path; copies under different classes contradict
    each other and are all dropped. Kaggle's test photos are frames of the same videos as the training
    images: every frame block holding a near-identical frame (thumbnail similarity at or above
    split.near_duplicate_similarity) leaves the pool, or kaggle_test would score memorised neighbours.
    """
    by_hash = collections.defaultdict(list)
    for item in items:
        by_hash[item.sha256].append(item)
    kept = []
    for copies in by_hash.values():
        if len({c.label for c in copies}) > 1:
            report.conflicting_labels_dropped += len(copies)
            labels = ", ".join(sorted({c.label for c in copies}))
            report.skipped += [(c.path, f"same bytes under different classes ({labels})") for c in copies]
            continue
        kept.append(min(copies, key=lambda c: c.path))
        report.duplicates_dropped += len(copies) - 1
    leaked = {(i.label, _block(i, params.block_size)) for i in _near_test(kept, kaggle_test, params)}
    clean = [i for i in kept if (i.label, _block(i, params.block_size)) not in leaked]
    report.kaggle_test_overlap_dropped += len(kept) - len(clean)
    return sorted(clean, key=lambda i: i.path)


def _near_test(items, kaggle_test, params: SplitParams):
    """Items byte-identical to a Kaggle test photo, or whose thumbnail is near-identical to one of its class."""
    test_hashes = {t.sha256 for t in kaggle_test}
    yield from (item for item in items if item.sha256 in test_hashes)
    for label in {t.label for t in kaggle_test}:
        pool = [i for i in items if i.label == label]
        if not pool:
            continue
        tests = np.stack([t.fingerprint for t in kaggle_test if t.label == label])
        similarity = np.stack([i.fingerprint for i in pool]) @ tests.T
        yield from (item for item, s in zip(pool, similarity.max(axis=1))
                    if s >= params.near_duplicate_similarity)


def _block(item: Item, block_size: int):
    frame = item.frame
    return ("file", item.path) if frame is None else ("block", (frame - 1) // block_size)


def _take(units, target: int, keep_for_train: int):
    """Pop whole units from the front of `units` until about `target` images are taken."""
    taken, count = [], 0
    if target <= 0:
        return taken
    while len(units) > keep_for_train and (not taken or count + len(units[0]) / 2 <= target):
        unit = units.pop(0)
        taken += unit
        count += len(unit)
    return taken


def split_items(items, params: SplitParams):
    """Stratified split per class; under `block`, whole blocks of frame numbers go to one side."""
    by_class = collections.defaultdict(list)
    for item in items:
        by_class[item.label].append(item)
    splits = {name: [] for name in SPLITS}
    for class_index, label in enumerate(params.classes):
        members = sorted(by_class.get(label, []), key=lambda i: (i.frame is None, i.frame or 0, i.path))
        if not members:
            raise PipelineError(
                f"class {label!r} has no readable images in data/raw/asl_alphabet_train/{label}/: add images, "
                "or list only the classes you want under split.classes in params.yaml")
        rng = np.random.default_rng([params.seed, class_index])
        if params.per_class and len(members) > params.per_class:
            chosen = np.sort(rng.choice(len(members), params.per_class, replace=False))
            members = [members[i] for i in chosen]
        if params.strategy == "block":
            groups = collections.defaultdict(list)
            for item in members:
                groups[_block(item, params.block_size)].append(item)
            units = [groups[key] for key in sorted(groups, key=str)]
        else:
            units = [[item] for item in members]
        units = [units[i] for i in rng.permutation(len(units))]
        n = len(members)
        splits["test"] += _take(units, round(params.test_fraction * n), keep_for_train=1)
        splits["val"] += _take(units, round(params.val_fraction * n), keep_for_train=1)
        splits["train"] += [item for unit in units for item in unit]
    order = {label: i for i, label in enumerate(params.classes)}
    return {name: sorted(rows, key=lambda i: (order[i.label], i.path)) for name, rows in splits.items()}


def csv_text(header, rows) -> str:
    """CSV with a header row and Unix line ends, the same bytes on every platform."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def manifest_csv(items) -> str:
    return csv_text(["path", "label", "origin"], ((item.path, item.label, item.origin) for item in items))


def skipped_csv(report: ScanReport) -> str:
    return csv_text(["path", "reason"], report.skipped)


def read_manifest(path: Path, classes=None, with_origins: bool = False):
    """(paths, labels), and with_origins their origins, of a manifest; labels outside `classes` are an error
    naming the file. A manifest without the origin column (path,label) holds dataset photos only."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PipelineError(f"manifest {path} not found: run `dvc repro split`") from None
    if rows and set(rows[0]) not in ({"path", "label"}, {"path", "label", "origin"}):
        raise PipelineError(f"manifest {path} must have the columns path,label,origin; re-run `dvc repro split`")
    paths = [row["path"] for row in rows]
    labels = [row["label"] for row in rows]
    if classes is not None:
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise PipelineError(f"manifest {path} has labels {unknown} outside split.classes; "
                                "re-run `dvc repro split`")
    if with_origins:
        return paths, labels, [row.get("origin", DATASET_ORIGIN) for row in rows]
    return paths, labels


def make_split(raw_dir: Path, root: Path, params: SplitParams, extra_rows=(), scored_elsewhere=None):
    """Everything the split stage computes: {manifest name: items} and the scan report.

    extra_rows: data.extra_train photos (extra.read_manifest rows), added to train alone. scored_elsewhere:
    {sha256: where} of photos that evaluate scores outside the split (evaluate.extra_sets).
    """
    report = ScanReport()
    items, kaggle_test = scan(raw_dir, params.classes, root, report)
    if not items:
        raise PipelineError(f"no readable training images under {raw_dir / 'asl_alphabet_train'} for classes "
                            f"{list(params.classes)}: check data.local_dir / data.source and re-run download")
    items = deduplicate(items, kaggle_test, params, report)
    manifests = split_items(items, params)
    if not manifests["test"]:  # evaluate scores the test split; an empty one would only fail there, later
        raise PipelineError(
            f"the test split is empty: {len(items)} photos of {len(params.classes)} classes at "
            f"split.test_fraction {params.test_fraction} (strategy {params.strategy}, block_size "
            f"{params.block_size}) leave none for test; raise split.per_class or split.test_fraction in params.yaml")
    if kaggle_test:
        manifests[KAGGLE_TEST] = sorted(kaggle_test, key=lambda i: i.path)
    scored = {item.sha256: f"{item.path} ({name} split)" for name in ("val", "test", KAGGLE_TEST)
              for item in manifests.get(name, [])}
    refuse_scored_photos(extra_rows, scored | (scored_elsewhere or {}))
    taught = [c for c in params.classes if c not in params.extra_exclude]
    report.extra_excluded = sum(row["label"] in params.classes and row["label"] not in taught for row in extra_rows)
    manifests["train"] = manifests["train"] + extra_items(extra_rows, taught, root, report)
    return manifests, report


def extra_items(rows, classes, root: Path, report: ScanReport) -> list:
    """The readable data.extra_train photos of `classes`, as Items with their origin; unreadable ones are
    reported and skipped, like the dataset's."""
    rows = [row for row in rows if row["label"] in classes]
    results = _inspect_all([root / row["path"] for row in rows])
    items = []
    for row, (digest, thumbnail, reason) in zip(rows, results):
        if reason:
            report.skipped.append((row["path"], f"{reason}; from data.extra_train {row['origin']}: "
                                                f"{row['source_file']}"))
        else:
            items.append(Item(row["path"], row["label"], digest, thumbnail, row["origin"]))
    return items


def refuse_scored_photos(extra_rows, scored: dict) -> None:
    """A data.extra_train photo with the bytes of a photo that is scored (val, test, kaggle_test, an
    evaluate.extra_sets folder) is an error naming both: trained on, it would inflate that score."""
    for row in extra_rows:
        if row["sha256"] in scored:
            raise PipelineError(f"data.extra_train: {row['source_file']} of entry {row['origin']!r} has the same bytes "
                                f"as {scored[row['sha256']]}, a photo that is scored; remove it from that entry's "
                                "folder: a scored photo must never be trained on")


def folder_hashes(folders) -> dict:
    """{sha256: 'file (in folder)'} of every file under `folders` (evaluate.extra_sets), bytes only."""
    return {hashlib.sha256(path.read_bytes()).hexdigest(): f"{path.relative_to(folder)} (in {folder})"
            for folder in map(Path, folders) for path in sorted(folder.rglob("*")) if path.is_file()}


def split_metrics(manifests, report: ScanReport) -> dict:
    reasons = collections.Counter(reason.split(" (")[0] for _, reason in report.skipped)
    return {
        "counts": {name: len(rows) for name, rows in manifests.items()},
        "skipped_files": len(report.skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "duplicates_dropped": report.duplicates_dropped,
        "conflicting_labels_dropped": report.conflicting_labels_dropped,
        "kaggle_test_overlap_dropped": report.kaggle_test_overlap_dropped,
        "extra_excluded": report.extra_excluded,
        "unknown_class_folders": len(report.unknown_class_folders),
    }


def read_labelled_folder(folder: Path, classes, root: Path):
    """(paths relative to `root`, labels) of a folder of <CLASS>/<images>, such as an evaluate.extra_sets entry.

    Its classes must be a subset of the model's; unreadable files are left for the scorer to report.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"evaluate.extra_sets: {folder} is not a folder; expected <CLASS>/*.jpg inside, "
                            "or remove it from the list in params.yaml")
    class_dirs = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    unknown = [d.name for d in class_dirs if d.name not in classes]
    if unknown:
        raise PipelineError(f"evaluate.extra_sets: {folder} has class folders {unknown} the model does not "
                            f"predict (it knows {list(classes)}); rename or remove them")
    rows = [(_relative(path, root), d.name) for d in class_dirs for path in sorted(d.rglob("*"))
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in images.IMAGE_SUFFIXES]
    if not rows:
        raise PipelineError(f"evaluate.extra_sets: {folder} holds no images in <CLASS>/ folders")
    return [path for path, _ in rows], [label for _, label in rows]
