"""Interrupted and failed runs: a stage's previous outputs stay intact, and nothing is left behind for long.

Outputs are written to a hidden temporary sibling and renamed into place (asl_pipeline.atomic). An
exception or Ctrl-C removes the temporary; SIGTERM and SIGKILL end the process without cleanup, so the
next write into the same folder removes what a dead writer left there.
"""
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from asl_pipeline import atomic, dataset, features
from asl_pipeline.config import Paths, load_params
from asl_pipeline.featurizers import FeatureSpec
from helpers import HAND_BUNDLE, needs_bundle


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under folder (empty folders as None)."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def others(final: Path) -> list:
    """Everything beside `final` in its folder: temporaries and backups, if any are left."""
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def previous_dir(final: Path) -> dict:
    (final / "nested").mkdir(parents=True)
    (final / "a.csv").write_bytes(b"path,label\nold,A\n")
    (final / "nested" / "b.bin").write_bytes(bytes(range(256)))
    return snapshot(final)


# ---------------------------------------------------------------- atomic_dir and atomic_file

@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_atomic_dir_failure_keeps_the_previous_dir(tmp_path, interruption):
    final = tmp_path / "split"
    before = previous_dir(final)
    with pytest.raises(interruption):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "a.csv").write_bytes(b"half")
            (tmp / "new.csv").write_bytes(b"written")
            raise interruption()
    assert snapshot(final) == before
    assert others(final) == []


def test_atomic_dir_failure_on_a_first_run_leaves_nothing(tmp_path):
    final = tmp_path / "out" / "split"
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "a.csv").write_bytes(b"half")
            raise RuntimeError
    assert not final.exists() and others(final) == []


def test_atomic_dir_success_replaces_the_whole_dir(tmp_path):
    final = tmp_path / "split"
    previous_dir(final)
    with atomic.atomic_dir(final) as tmp:
        assert list(tmp.iterdir()) == [] and tmp.parent == final.parent and tmp.name.startswith(".")
        (tmp / "c.csv").write_bytes(b"new")
    assert snapshot(final) == {"c.csv": b"new"}
    assert others(final) == []


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_atomic_file_failure_keeps_the_previous_file(tmp_path, interruption):
    final = tmp_path / "model.keras"
    final.write_bytes(b"previous model")
    with pytest.raises(interruption):
        with atomic.atomic_file(final) as tmp:
            assert tmp.suffix == ".keras" and tmp.name.startswith(".")
            tmp.write_bytes(b"half a mod")
            raise interruption()
    assert final.read_bytes() == b"previous model"
    assert others(final) == []


def test_write_json_replaces_the_file(tmp_path):
    final = tmp_path / "metrics" / "split.json"
    atomic.write_json(final, {"run": 1})
    atomic.write_json(final, {"run": 2})
    assert final.read_text(encoding="utf-8").split() == ["{", '"run":', "2", "}"]
    assert others(final) == []


# ---------------------------------------------------------------- what killed writers leave behind

def test_atomic_outputs_get_the_mode_of_ordinary_files(tmp_path):
    (tmp_path / "ordinary.txt").write_text("x")
    (tmp_path / "ordinary").mkdir()
    atomic.write_text(tmp_path / "out.txt", "y")
    with atomic.atomic_dir(tmp_path / "out") as folder:
        (folder / "inside.txt").write_text("z")

    def mode(name):
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("out.txt") == mode("ordinary.txt") and mode("out") == mode("ordinary")  # not 0600 / 0700


def test_a_killed_writers_temporaries_in_a_folder_of_unique_names_are_removed(tmp_path):
    stale = [tmp_path / ".teach_1.jpg.tmp-ab12cd34.jpg", tmp_path / ".x.tmp-1"]
    kept = [tmp_path / "teach_1.jpg", tmp_path / "notes.tmp-1", tmp_path / ".hidden"]
    for path in stale + kept:
        path.write_bytes(b"")
    assert atomic.remove_temporaries(tmp_path) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    final = tmp_path / "data" / "split"
    previous_dir(final)
    leftovers = [final.parent / ".split.tmp-k3x_9abc", final.parent / ".split.old-4242"]
    for leftover in leftovers:
        previous_dir(leftover)
    unrelated = final.parent / ".splitting.tmp-abc"  # another output's temporary: not ours to remove
    unrelated.mkdir()
    with atomic.atomic_dir(final) as tmp:
        (tmp / "c.csv").write_bytes(b"new")
    assert others(final) == [unrelated.name]
    assert snapshot(final) == {"c.csv": b"new"}


def test_a_backup_left_between_the_two_renames_is_put_back(tmp_path):
    """Killed after moving the previous dir aside and before moving the new one in: the next run restores
    the previous dir first, so that its own failure still leaves the previous outputs in place."""
    final = tmp_path / "split"
    backup = tmp_path / ".split.old-4242"
    before = previous_dir(backup)
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final):
            raise RuntimeError
    assert snapshot(final) == before
    assert others(final) == []


# ---------------------------------------------------------------- the split stage killed halfway

# Run before the stage in the same interpreter: on the second manifest the stage sends itself `signal`.
# A shell's background jobs start with SIGINT ignored, and Python keeps that: restore the handler a
# terminal's Ctrl-C meets, so the test does not depend on how the test run was started.
HOOK = """
import os, pathlib, signal
from asl_pipeline import dataset
signal.signal(signal.SIGINT, signal.default_int_handler)
_original, _calls = dataset.manifest_csv, []
def manifest_csv(items):
    _calls.append(1)
    if len(_calls) == 2:
        pathlib.Path("hook reached").touch()
        os.kill(os.getpid(), signal.{name})
    return _original(items)
dataset.manifest_csv = manifest_csv
"""


def hidden_leftovers(project) -> list:
    return sorted(p.relative_to(project.root).as_posix() for folder in ("data", "metrics")
                  for p in (project.root / folder).iterdir() if p.name.startswith("."))


def expected_csvs(project) -> dict:
    """The manifests the split stage must write for the project's current params."""
    params = load_params(project.root / "params.yaml").split
    manifests, report = dataset.make_split(project.raw, project.root, params)
    files = {f"{name}.csv": dataset.manifest_csv(items).encode() for name, items in manifests.items()}
    return files | {"skipped.csv": dataset.skipped_csv(report).encode()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_split_stage_killed_mid_write_keeps_previous_outputs(stage_project, sig):
    project = stage_project
    project.add_noise_images(("A", "B", "C"), 12)
    project.set(split={"classes": ["A", "B", "C"], "per_class": "all", "strategy": "random", "seed": 1})
    first = project.run("split")
    assert first.returncode == 0, first.stderr
    split, metrics = project.root / "data" / "split", project.root / "metrics" / "split.json"
    before, metrics_before = snapshot(split), metrics.read_bytes()

    project.set(split={"seed": 2})
    killed = project.run("split", hook=HOOK.replace("{name}", sig.name))
    assert (project.root / "hook reached").is_file(), killed.stderr
    assert killed.returncode != 0
    assert snapshot(split) == before
    assert metrics.read_bytes() == metrics_before
    assert hidden_leftovers(project) == []  # KeyboardInterrupt / SIGTERM -> SystemExit: cleanup ran

    again = project.run("split")
    assert again.returncode == 0, again.stderr
    assert snapshot(split) == expected_csvs(project) != before
    assert hidden_leftovers(project) == []


# ---------------------------------------------------------------- a variant's train stage killed halfway

# Run before train@VARIANT in the same interpreter: the stage sends itself SIGTERM once the new model is saved
# into its temporary folder, before anything is renamed into place.
TRAIN_HOOK = """
import os, pathlib, signal
from asl_pipeline import model
_save_model = model.save_model
def save_model(*args, **kwargs):
    _save_model(*args, **kwargs)
    pathlib.Path("hook reached").touch()
    os.kill(os.getpid(), signal.SIGTERM)
model.save_model = save_model
"""


def write_landmark_features(project, name: str) -> None:
    """data/features/NAME/ as featurize@NAME writes it for a landmarks-only variant: three separable classes."""
    spec = FeatureSpec.from_params(load_params(project.root / "params.yaml").variant(name))
    rng = np.random.default_rng(0)
    folder = Paths(project.root).variant(name).features
    folder.mkdir(parents=True)
    for split, count in (("train", 30), ("val", 9)):
        labels = np.arange(count) % 3
        hand = rng.normal(0, 0.3, (count, spec.hand_dim)) + labels[:, None]
        features.save_features(folder / f"{split}.npz", {
            "hand": hand.astype("float32"), "labels": np.array(["ABC"[i] for i in labels]),
            "paths": np.array([f"data/raw/{split}{i}.jpg" for i in range(count)]),
            "views": np.zeros(count, np.int16), "origins": np.array(["dataset"] * count)})
    (folder / "meta.json").write_text(json.dumps({"spec": spec.to_dict(), "weights": "not used",
                                                  "pretrained": False}))


@pytest.mark.slow  # two runs of the stage, each loading TensorFlow
@needs_bundle
def test_train_stage_killed_mid_write_keeps_the_variants_previous_model_folder_curves_and_metrics(stage_project):
    """train@VARIANT replaces models/VARIANT/ (a folder), its curves and train.json together or not at all."""
    project, name = stage_project, "reader"
    project.set(variants={name: {"model": {"featurizers": ["hand_landmarks"]}, "train": {"head": "svm"}}},
                serve={"model": name}, split={"classes": ["A", "B", "C"]}, hands={"features": ["angles"]})
    write_landmark_features(project, name)
    paths = Paths(project.root)
    paths.hand_model.parent.mkdir(parents=True)
    shutil.copyfile(HAND_BUNDLE, paths.hand_model)  # what the hand_model stage leaves in models/
    variant = paths.variant(name)
    first = project.run("train", name)
    assert first.returncode == 0, first.stderr
    folders = (variant.model_dir, variant.plots / "train")
    files = (variant.plots / "learning_curves.png", variant.metrics / "train.json")
    assert {"model.keras", "labels.json", "featurizers.json", "run.json", "hand_landmarker.task"} <= \
        set(snapshot(variant.model_dir))
    before = [snapshot(folder) for folder in folders], [file.read_bytes() for file in files]

    project.set(train={"svm_c": 0.001})  # another model: run.json records the params it was trained with
    killed = project.run("train", name, hook=TRAIN_HOOK)
    assert (project.root / "hook reached").is_file(), killed.stderr
    assert killed.returncode != 0
    assert ([snapshot(folder) for folder in folders], [file.read_bytes() for file in files]) == before
    assert json.loads(variant.model_files.run.read_text())["params"]["train"]["svm_c"] != 0.001
    for parent in (variant.model_dir.parent, variant.plots, variant.metrics):  # SIGTERM -> SystemExit: cleanup ran
        assert [p.name for p in parent.iterdir() if p.name.startswith(".") and p.name != ".gitignore"] == []


def test_atomic_files_replace_all_outputs_or_none(tmp_path):
    model, labels = tmp_path / "models" / "model.keras", tmp_path / "models" / "labels.json"
    model.parent.mkdir()
    model.write_bytes(b"old model")
    labels.write_text('["A", "B"]')
    with pytest.raises(RuntimeError):
        with atomic.atomic_files(model, labels) as (model_tmp, labels_tmp):
            model_tmp.write_bytes(b"new model")
            raise RuntimeError("killed before the class names were written")
    assert (model.read_bytes(), labels.read_text()) == (b"old model", '["A", "B"]')
    assert others(model) == ["labels.json"]
    with atomic.atomic_files(model, labels) as (model_tmp, labels_tmp):
        model_tmp.write_bytes(b"new model")
        labels_tmp.write_text('["A", "B", "C"]')
    assert (model.read_bytes(), labels.read_text()) == (b"new model", '["A", "B", "C"]')
    assert others(model) == ["labels.json"]
