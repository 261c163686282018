"""The split stage: determinism, stratification, frame blocks, subsets, duplicates, leakage and bad files.

Every dataset here is synthetic, in the Kaggle layout, under tmp_path:
data/raw/asl_alphabet_train/<CLASS>/<CLASS><frame>.jpg and data/raw/asl_alphabet_test/<CLASS>_test.jpg.
Training frames are 8x8 random-noise JPEGs, distinct per file, so their hashes and thumbnails differ.
"""
import collections
import csv
import dataclasses
import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from asl_pipeline import dataset, images
from asl_pipeline.config import KAGGLE_TEST, SPLITS, SplitParams
from asl_pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("A", "B", "C")


# ---------------------------------------------------------------- synthetic Kaggle-layout datasets

def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def noise_pixels(*seed, size: int = 8) -> np.ndarray:
    return np.random.default_rng(list(seed)).integers(0, 256, (size, size, 3), dtype=np.uint8)


def smooth_pixels(*seed, size: int = 32) -> np.ndarray:
    """A blurry image: its thumbnail survives re-encoding and a little noise (a near-duplicate)."""
    small = np.random.default_rng(list(seed)).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def train_file(raw: Path, label: str, frame: int) -> Path:
    return raw / "asl_alphabet_train" / label / f"{label}{frame}.jpg"


def kaggle_test_file(raw: Path, label: str) -> Path:
    return raw / "asl_alphabet_test" / f"{label}_test.jpg"


def make_raw(root: Path, frames, classes=CLASSES, reverse=False) -> Path:
    """data/raw under `root` with one distinct noise JPEG per (class, frame); frames: a range or {class: range}."""
    raw = root / "data" / "raw"
    jobs = [(label, frame) for label in classes
            for frame in (frames[label] if isinstance(frames, dict) else frames)]
    for label, frame in reversed(jobs) if reverse else jobs:
        write(train_file(raw, label, frame), jpeg_bytes(noise_pixels(ord(label[0]), frame)))
    return raw


def rel(path: Path, root: Path) -> str:
    """What a manifest must hold for `path`: relative to the project root, with forward slashes."""
    return path.relative_to(root).as_posix()


def params(**changes) -> SplitParams:
    base = SplitParams(classes=CLASSES, per_class=None, val_fraction=0.2, test_fraction=0.2,
                       strategy="random", block_size=5, near_duplicate_similarity=0.97, seed=0)
    return dataclasses.replace(base, **changes)


def frame_of(path: str) -> int:
    return int(Path(path).stem.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def split_of(manifests) -> dict:
    """{(label, frame): split name} over train/val/test; fails if an image sits in two splits."""
    where = {}
    for name in SPLITS:
        for item in manifests[name]:
            key = (item.label, frame_of(item.path))
            assert key not in where, f"{item.path} is in both {where[key]} and {name}"
            where[key] = name
    return where


def all_paths(manifests, names=SPLITS) -> list:
    return [item.path for name in names for item in manifests[name]]


def csvs(manifests) -> dict:
    return {name: dataset.manifest_csv(items) for name, items in manifests.items()}


# ---------------------------------------------------------------- determinism

def test_same_inputs_give_byte_identical_manifests(tmp_path):
    raw = make_raw(tmp_path, range(1, 31))
    for strategy in ("random", "block"):
        first, _ = dataset.make_split(raw, tmp_path, params(strategy=strategy, per_class=20, seed=7))
        second, _ = dataset.make_split(raw, tmp_path, params(strategy=strategy, per_class=20, seed=7))
        assert csvs(first) == csvs(second)
        assert all(first[name] for name in SPLITS)


def test_manifests_do_not_depend_on_directory_listing_order(tmp_path, monkeypatch):
    """Listing order differs between file systems and copies of the data; the manifests must not."""
    raw = make_raw(tmp_path, range(1, 26))
    for label in CLASSES:
        write(kaggle_test_file(raw, label), jpeg_bytes(noise_pixels(50, ord(label))))
    split = params(strategy="block", per_class=20)
    listed, _ = dataset.make_split(raw, tmp_path, split)
    rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: reversed(list(rglob(self, pattern))))
    monkeypatch.setattr(Path, "iterdir",
                        lambda self: sorted((Path(self, name) for name in os.listdir(self)), reverse=True))
    reversed_listing, _ = dataset.make_split(raw, tmp_path, split)
    assert csvs(listed) == csvs(reversed_listing)


def test_a_different_seed_gives_a_different_split(tmp_path):
    raw = make_raw(tmp_path, range(1, 31))
    one, _ = dataset.make_split(raw, tmp_path, params(seed=1))
    two, _ = dataset.make_split(raw, tmp_path, params(seed=2))
    assert csvs(one) != csvs(two)



def run_split_stage(project: Path) -> dict:
    result = subprocess.run([sys.executable, str(REPO / "stages" / "split.py")], cwd=project,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return {path.name: path.read_bytes() for path in sorted((project / "data" / "split").glob("*.csv"))}


def test_split_stage_twice_writes_identical_files(tmp_path):
    project = tmp_path / "project"
    raw = make_raw(project, range(1, 31))
    for label in CLASSES:
        write(kaggle_test_file(raw, label), jpeg_bytes(noise_pixels(99, ord(label))))
    settings = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    settings["split"].update(classes=list(CLASSES), per_class=24, strategy="block", block_size=4, seed=3)
    settings["data"]["extra_train"] = {}  # no more signers: the split reads no data/extra folder
    (project / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")

    first = run_split_stage(project)
    second = run_split_stage(project)
    assert sorted(first) == ["kaggle_test.csv", "skipped.csv", "test.csv", "train.csv", "val.csv"]
    assert first == second
    # The stage writes exactly what the library computes for the same params.
    manifests, _ = dataset.make_split(project / "data" / "raw", project, params(
        per_class=24, strategy="block", block_size=4, seed=3, val_fraction=settings["split"]["val_fraction"],
        test_fraction=settings["split"]["test_fraction"],
        near_duplicate_similarity=settings["split"]["near_duplicate_similarity"]))
    assert {f"{name}.csv": text.encode() for name, text in csvs(manifests).items()} == {
        name: data for name, data in first.items() if name != "skipped.csv"}
    assert (project / "metrics" / "split.json").is_file()


# ---------------------------------------------------------------- stratification and strategies

def test_random_split_is_stratified(tmp_path):
    sizes = {"A": 20, "B": 31, "C": 47}
    raw = make_raw(tmp_path, {label: range(1, n + 1) for label, n in sizes.items()})
    split = params(val_fraction=0.15, test_fraction=0.25)
    manifests, _ = dataset.make_split(raw, tmp_path, split)
    counts = collections.Counter((name, item.label) for name in SPLITS for item in manifests[name])
    for label, n in sizes.items():
        for name, fraction in (("val", split.val_fraction), ("test", split.test_fraction)):
            assert abs(counts[name, label] - round(fraction * n)) <= 1, (name, label, counts)
        assert counts["train", label] >= 1
        assert sum(counts[name, label] for name in SPLITS) == n
    assert set(split_of(manifests)) == {(label, f) for label, n in sizes.items() for f in range(1, n + 1)}


def test_block_split_is_stratified_within_a_block(tmp_path):
    sizes = {"A": 40, "B": 60, "C": 80}
    raw = make_raw(tmp_path, {label: range(1, n + 1) for label, n in sizes.items()})
    split = params(strategy="block", block_size=4, val_fraction=0.1, test_fraction=0.3)
    manifests, _ = dataset.make_split(raw, tmp_path, split)
    counts = collections.Counter((name, item.label) for name in SPLITS for item in manifests[name])
    for label, n in sizes.items():
        for name, fraction in (("val", split.val_fraction), ("test", split.test_fraction)):
            # Whole blocks only: a block goes when at least half of it fits the target.
            assert abs(counts[name, label] - round(fraction * n)) <= split.block_size / 2, (name, label, counts)
        assert counts["train", label] > 0


def interleaved_blocks(manifests, block_size: int) -> list:
    """(label, block) pairs whose frames are spread over more than one split."""
    spread = collections.defaultdict(set)
    for (label, frame), name in split_of(manifests).items():
        spread[label, (frame - 1) // block_size].add(name)
    return sorted(key for key, names in spread.items() if len(names) > 1)


def test_block_strategy_keeps_each_frame_block_in_one_split(tmp_path):
    block_size = 5
    raw = make_raw(tmp_path, range(1, 51))
    for seed in (0, 1, 2):
        manifests, _ = dataset.make_split(raw, tmp_path, params(strategy="block", block_size=block_size,
                                                                seed=seed))
        assert interleaved_blocks(manifests, block_size) == []
        where = split_of(manifests)
        for label in CLASSES:
            frames = sorted(f for lab, f in where if lab == label)
            assert frames == list(range(1, 51))
            assert {where[label, f] for f in frames} == set(SPLITS)
            for before, after in itertools.pairwise(frames):
                if where[label, before] != where[label, after]:
                    assert (before - 1) // block_size != (after - 1) // block_size, (label, before, after)


def test_random_strategy_does_interleave_frames(tmp_path):
    """The same data under `random`: neighbouring frames land in different splits (what `block` prevents)."""
    raw = make_raw(tmp_path, range(1, 51))
    manifests, _ = dataset.make_split(raw, tmp_path, params(strategy="random", block_size=5))
    assert len(interleaved_blocks(manifests, 5)) > 3


# ---------------------------------------------------------------- per_class subsets

def subset(manifests) -> set:
    return {(item.label, item.path) for name in SPLITS for item in manifests[name]}


def test_per_class_subset_is_bounded_and_seeded(tmp_path):
    raw = make_raw(tmp_path, {"A": range(1, 31), "B": range(1, 12), "C": range(1, 8)})
    chosen = {}
    for seed in (0, 0, 1):
        manifests, _ = dataset.make_split(raw, tmp_path, params(per_class=10, seed=seed))
        counts = collections.Counter(label for label, _ in subset(manifests))
        assert counts == {"A": 10, "B": 10, "C": 7}  # C has fewer than per_class: all of it
        assert all(Path(path).parent.name == label for label, path in subset(manifests))
        chosen.setdefault(seed, []).append(subset(manifests))
    assert chosen[0][0] == chosen[0][1]
    assert chosen[0][0] != chosen[1][0]
    # The draw is per class: the small class C is whole under both seeds, A and B differ.
    for label in ("A", "B"):
        assert {p for lab, p in chosen[0][0] if lab == label} != {p for lab, p in chosen[1][0] if lab == label}


# ---------------------------------------------------------------- duplicates

def sha(root: Path, path: str) -> str:
    return hashlib.sha256((root / path).read_bytes()).hexdigest()


def test_duplicates_within_a_class_keep_one_copy(tmp_path):
    raw = make_raw(tmp_path, range(1, 21))
    copies = [3, 11, 19]  # in three different frame blocks of class A, all copies of A7
    for frame in copies:
        shutil.copyfile(train_file(raw, "A", 7), train_file(raw, "A", frame))
    copy_paths = sorted(rel(train_file(raw, "A", f), tmp_path) for f in copies + [7])
    for seed in range(5):
        for strategy in ("random", "block"):
            manifests, report = dataset.make_split(raw, tmp_path, params(strategy=strategy, seed=seed))
            assert report.duplicates_dropped == 3
            kept = [p for p in all_paths(manifests) if p in copy_paths]
            assert kept == [copy_paths[0]]  # the first path of the copies
            hashes = [sha(tmp_path, p) for p in all_paths(manifests)]
            assert len(hashes) == len(set(hashes)) == 3 * 20 - 3
            assert dataset.split_metrics(manifests, report)["duplicates_dropped"] == 3


def test_same_bytes_under_two_classes_are_both_dropped(tmp_path):
    raw = make_raw(tmp_path, range(1, 21))
    shutil.copyfile(train_file(raw, "B", 5), train_file(raw, "C", 5))
    conflicting = {rel(train_file(raw, label, 5), tmp_path) for label in ("B", "C")}
    manifests, report = dataset.make_split(raw, tmp_path, params())
    assert report.conflicting_labels_dropped == 2
    assert report.duplicates_dropped == 0
    assert not conflicting & set(all_paths(manifests))
    skipped = dict(report.skipped)
    assert set(skipped) == conflicting
    assert all("different classes" in reason for reason in skipped.values())
    assert len(all_paths(manifests)) == 3 * 20 - 2
    assert dataset.split_metrics(manifests, report)["conflicting_labels_dropped"] == 2


# ---------------------------------------------------------------- Kaggle test photos

def test_frames_matching_a_kaggle_test_photo_leave_with_their_block(tmp_path):
    raw = make_raw(tmp_path, range(1, 21))
    # A: the test photo is byte-identical to frame 7 (block 6-10).
    write(kaggle_test_file(raw, "A"), train_file(raw, "A", 7).read_bytes())
    # B: frame 13 (block 11-15) and the test photo are the same scene, noised and encoded differently.
    scene = smooth_pixels(1)
    write(train_file(raw, "B", 13), jpeg_bytes(scene, quality=95))
    noised = np.clip(scene.astype(int) + np.random.default_rng(2).integers(-6, 7, scene.shape), 0, 255)
    write(kaggle_test_file(raw, "B"), jpeg_bytes(noised.astype(np.uint8), quality=70))
    # C: an unrelated test photo; no frame of C goes.
    write(kaggle_test_file(raw, "C"), jpeg_bytes(smooth_pixels(3)))
    assert train_file(raw, "B", 13).read_bytes() != kaggle_test_file(raw, "B").read_bytes()

    for strategy in ("block", "random"):
        manifests, report = dataset.make_split(raw, tmp_path, params(strategy=strategy, block_size=5))
        dropped = {("A", f) for f in range(6, 11)} | {("B", f) for f in range(11, 16)}
        expected = {(label, f) for label in CLASSES for f in range(1, 21)} - dropped
        assert set(split_of(manifests)) == expected
        assert report.kaggle_test_overlap_dropped == len(dropped)
        assert dataset.split_metrics(manifests, report)["kaggle_test_overlap_dropped"] == len(dropped)
        assert [(item.path, item.label) for item in manifests[KAGGLE_TEST]] == [
            (rel(kaggle_test_file(raw, label), tmp_path), label) for label in CLASSES]


def test_similarity_threshold_controls_near_duplicates(tmp_path):
    raw = make_raw(tmp_path, range(1, 11), classes=("A", "B"))
    scene = smooth_pixels(4)
    write(train_file(raw, "A", 2), jpeg_bytes(scene, quality=95))
    write(kaggle_test_file(raw, "A"), jpeg_bytes(scene, quality=60))
    similarity = float(images.inspect(train_file(raw, "A", 2))[1] @ images.inspect(kaggle_test_file(raw, "A"))[1])
    assert 0.9 < similarity < 1
    strict, report = dataset.make_split(raw, tmp_path, params(classes=("A", "B"), block_size=5,
                                                              near_duplicate_similarity=similarity + 1e-3))
    assert report.kaggle_test_overlap_dropped == 0 and len(all_paths(strict)) == 20
    loose, report = dataset.make_split(raw, tmp_path, params(classes=("A", "B"), block_size=5,
                                                             near_duplicate_similarity=similarity - 1e-3))
    assert report.kaggle_test_overlap_dropped == 5
    assert {frame_of(p) for p in all_paths(loose) if "/A/" in p} == set(range(6, 11))


def test_byte_identical_test_photo_leaves_even_at_similarity_one(tmp_path):
    classes = tuple("ABCDEFGHIJ")  # ten chances: each self-similarity rounds below 1 about half the time
    raw = make_raw(tmp_path, range(1, 12), classes=classes)
    for label in classes:
        write(kaggle_test_file(raw, label), train_file(raw, label, 3).read_bytes())
    manifests, report = dataset.make_split(raw, tmp_path, params(classes=classes, block_size=5,
                                                                 near_duplicate_similarity=1.0))
    assert sorted(split_of(manifests)) == [(label, frame) for label in classes for frame in range(6, 12)]
    assert report.kaggle_test_overlap_dropped == 5 * len(classes)


# ---------------------------------------------------------------- unreadable files

def test_corrupt_files_are_skipped_and_counted(tmp_path):
    raw = make_raw(tmp_path, range(1, 11))
    bad = [write(train_file(raw, "A", 11), b""),
           write(train_file(raw, "B", 11), b"this is text, not a JPEG\n"),
           write(train_file(raw, "C", 11), jpeg_bytes(noise_pixels(5, size=32))[:200]),  # truncated
           write(kaggle_test_file(raw, "C"), b"")]
    write(kaggle_test_file(raw, "A"), jpeg_bytes(smooth_pixels(9)))
    bad = {rel(path, tmp_path) for path in bad}
    manifests, report = dataset.make_split(raw, tmp_path, params())
    assert {path for path, _ in report.skipped} == bad
    assert all(reason for _, reason in report.skipped)
    listed = {item.path for items in manifests.values() for item in items}
    assert not bad & listed
    assert len(all_paths(manifests)) == 30
    assert [item.label for item in manifests[KAGGLE_TEST]] == ["A"]
    metrics = dataset.split_metrics(manifests, report)
    assert metrics["skipped_files"] == len(bad)
    assert sum(metrics["skipped_by_reason"].values()) == len(bad)
    assert metrics["counts"] == {name: len(items) for name, items in manifests.items()}
    rows = list(csv.DictReader(io.StringIO(dataset.skipped_csv(report))))
    assert {row["path"] for row in rows} == bad


# ---------------------------------------------------------------- manifest format

def test_manifest_paths_are_relative_posix_and_exist(tmp_path):
    raw = make_raw(tmp_path, range(1, 16))
    write(kaggle_test_file(raw, "B"), jpeg_bytes(smooth_pixels(6)))
    manifests, _ = dataset.make_split(raw, tmp_path, params(strategy="block"))
    assert set(manifests) == set(SPLITS) | {KAGGLE_TEST}
    for name, items in manifests.items():
        text = dataset.manifest_csv(items)
        assert text.splitlines()[0] == "path,label,origin"
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(items) > 0
        for row in rows:
            path = row["path"]
            assert not Path(path).is_absolute() and "\\" not in path and ".." not in Path(path).parts
            assert path.startswith("data/raw/")
            assert (tmp_path / path).is_file()
            assert row["label"] in CLASSES
        manifest = tmp_path / f"{name}.csv"
        manifest.write_text(text, encoding="utf-8")
        assert dataset.read_manifest(manifest, CLASSES) == ([r["path"] for r in rows], [r["label"] for r in rows])
    for item in manifests["train"]:
        assert Path(item.path).parent.name == item.label


def test_every_class_keeps_a_frame_block_for_training_however_few_it_has(tmp_path):
    """A class of two frame blocks with val and test asking for 40% each would lose both blocks to them and
    leave the head nothing to learn the class from; the split keeps one for training."""
    raw = make_raw(tmp_path, {"A": range(1, 11), "B": range(1, 3), "C": range(1, 11)})
    manifests, _ = dataset.make_split(raw, tmp_path, params(strategy="block", block_size=1, val_fraction=0.4,
                                                             test_fraction=0.4))
    for label in CLASSES:
        assert any(item.label == label for item in manifests["train"]), label
    # B's two blocks: one trains, the other goes to test (asked first); val gets none of B.
    assert [item.label for item in manifests["test"]].count("B") == 1
    assert [item.label for item in manifests["val"]].count("B") == 0


def test_a_split_that_leaves_test_empty_is_refused_naming_the_params_to_raise(tmp_path):
    """Three photos a class at test_fraction 0.15 round to no test photo: evaluate would have nothing to score."""
    raw = make_raw(tmp_path, range(1, 4))
    with pytest.raises(PipelineError, match=r"test split is empty.*raise split.per_class or split.test_fraction"):
        dataset.make_split(raw, tmp_path, params(test_fraction=0.15, val_fraction=0.15))
    manifests, _ = dataset.make_split(raw, tmp_path, params(test_fraction=0.34, val_fraction=0))
    assert manifests["test"] and not manifests["val"]  # no validation photos is allowed: train watches its loss
