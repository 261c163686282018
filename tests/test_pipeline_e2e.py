"""End to end: `dvc repro` on a small subset of the real sample, in a throwaway copy of the project.

3 classes, 24 photos each, ResNet50 with random init at 32 px fused with hand landmarks (the real MediaPipe
bundle from ../shared), an svm head, and a 9-photo extra set of other people's hands. Later experiments
switch to the mlp head, fine-tune, and drop the backbone for hand landmarks alone.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import copy_working_tree

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "asl-sample"
OTHER_DEV = SHARED / "data" / "asl-other-dev"
HAND_BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
CLASSES = ["A", "B", "C"]
EXTRA = "other-people"  # the extra set's folder name: its name in evaluate.json and plots/per_class/

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"sample dataset not found at {SAMPLE}"),
    pytest.mark.skipif(not (HAND_BUNDLE.is_file() and OTHER_DEV.is_dir()),
                       reason=f"hand bundle or other people's photos not found under {SHARED}"),
    pytest.mark.skipif(shutil.which("dvc", path=str(Path(sys.executable).parent)) is None
                       and shutil.which("dvc") is None, reason="dvc is not installed"),
]
SET_SCALARS = {"n", "accuracy", "macro_f1", "top_3_accuracy", "mirror_consistency", "hand_found"}


def _run(args, cwd, expect_success=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if expect_success:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    result.output = result.stdout + result.stderr  # DVC prints progress to both
    return result


def stages_run(output: str) -> set:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _json(project, name):
    return json.loads((project / name).read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The working tree as git sees it (tracked and untracked, not ignored), as a fresh git repo."""
    root = tmp_path_factory.mktemp("project")
    copy_working_tree(root, skip=("metrics/", "plots/", "dvc.lock", "tests/"))
    # Other people's hands: three photos of each class, outside the project like ../shared.
    extra = tmp_path_factory.mktemp("extra") / EXTRA
    for label in CLASSES:
        (extra / label).mkdir(parents=True)
        for photo in sorted((OTHER_DEV / label).glob("*.jpg"))[:3]:
            shutil.copy2(photo, extra / label / photo.name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    # Relative, as the default is: queued experiments run in a copy under .dvc/tmp/exps/ and must find it.
    params["data"]["local_dir"] = os.path.relpath(SAMPLE, root)
    params["split"].update(classes=CLASSES, per_class=24)
    params["model"].update(featurizers=["backbone", "hand_landmarks"], weights="none", image_size=32)
    params["hands"].update(source="auto", local_file=str(HAND_BUNDLE))
    params["featurize"].update(crop_to_hand=False, augment_copies=0)
    params["train"].update(head="svm", epochs=3, patience=2, fine_tune_epochs=0, landmark_copies=0)
    params["evaluate"].update(extra_sets=[str(extra)])
    params["explain"].update(per_class=1, max_misclassified=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        _run(args, root)
    return root


def test_repro_runs_every_stage_then_is_up_to_date(project):
    output = _run(["dvc", "repro"], project).output
    assert stages_run(output) == {"download", "extra_train", "hand_model", "split", "featurize", "train", "evaluate",
                                  "explain"}
    for produced in ("models/model.keras", "models/labels.json", "models/featurizers.json", "models/run.json",
                     "models/MODEL_CARD.md", "models/hand_landmarker.task", "metrics/evaluate.json",
                     "metrics/evaluate_details.json", "metrics/featurize.json", "metrics/hands.json",
                     "metrics/hands_per_class.json", "plots/confusion.csv", "plots/per_class/test.csv",
                     "plots/per_class/kaggle_test.csv", f"plots/per_class/{EXTRA}.csv", "plots/learning_curves.png",
                     "plots/gradcam/grid.png", "data/split/kaggle_test.csv", "data/features/train.npz",
                     "data/features/backbone.weights.h5"):
        assert (project / produced).is_file(), produced
    assert (project / "models/hand_landmarker.task").read_bytes() == HAND_BUNDLE.read_bytes()
    assert _json(project, "models/featurizers.json")["featurizers"] == ["backbone", "hand_landmarks"]
    assert _json(project, "models/labels.json") == CLASSES
    assert _json(project, "models/run.json")["pretrained"] is False

    evaluate = _json(project, "metrics/evaluate.json")
    assert evaluate["pretrained"] is False
    assert list(evaluate["accuracy"]) == ["test", EXTRA, "kaggle_test"]  # what exp show compares, in its order
    details = _json(project, "metrics/evaluate_details.json")
    for name in ("test", "kaggle_test", EXTRA):
        assert evaluate["macro_f1"][name] == details[name]["macro_f1"]
        assert set(details[name]) == SET_SCALARS, (name, details[name])  # scalars only, per-class in plots/
        assert 0 <= details[name]["hand_found"] <= 1
    assert details[EXTRA]["n"] == 9 and details["kaggle_test"]["n"] == 3
    assert details["test"]["hand_found"] > 0.5  # the sample's photos do show hands
    assert 0.5 < _json(project, "metrics/hands.json")["hand_found"] <= 1
    card = (project / "models/MODEL_CARD.md").read_text()
    assert f"`{EXTRA}`" in card and "Most confused" in card
    per_class = (project / "plots/per_class/test.csv").read_text().splitlines()
    assert per_class[0] == "class,images,precision,recall,f1,no_hand"
    assert [row.split(",")[0] for row in per_class[1:]] == CLASSES

    featurize = _json(project, "metrics/featurize.json")
    assert set(featurize["hand_found"]) >= {"train", "val", "test", "all_outside_nothing"}
    assert set(_json(project, "metrics/hands_per_class.json")["train"]) == set(CLASSES)
    with np.load(project / "data/features/train.npz") as train:
        assert train["backbone"].shape[1] == 2048 and train["hand"].shape[1] == 63 + 210 + 15 + 1

    # extra_train hashes data.extra_train's folders on every run (DVC cannot); unchanged, nothing else runs.
    assert stages_run(_run(["dvc", "repro"], project).output) == {"extra_train"}
    assert stages_run(_run(["dvc", "repro", "split"], project).output) == {"extra_train"}


def test_a_failed_stage_keeps_its_previous_outputs_and_repro_resumes(project):
    outputs = ["metrics/evaluate.json", "metrics/classification_report.txt", "plots/confusion.csv",
               "data/eval/misclassified.csv", "plots/per_class/test.csv"]
    before = {name: (project / name).read_bytes() for name in outputs}
    params = project / "params.yaml"
    good = params.read_text()
    params.write_text(good.replace("top_k: 3", "top_k: 0"))
    failed = _run(["dvc", "repro"], project, expect_success=False)
    assert failed.returncode != 0
    assert "'evaluate.top_k' is 0" in failed.output
    assert {name: (project / name).read_bytes() for name in outputs} == before
    params.write_text(good)
    assert stages_run(_run(["dvc", "repro"], project).output) == {"extra_train"}  # all up to date again


def test_exp_run_with_the_mlp_head_reuses_features(project):
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    output = _run(["dvc", "exp", "run", "-S", "train.head=mlp", "-S", "train.epochs=2"], project).output
    assert "Stage 'featurize' didn't change, skipping" in output
    assert "Stage 'hand_model' didn't change, skipping" in output
    assert "Running stage 'train'" in output
    assert "Running stage 'evaluate'" in output
    assert _json(project, "metrics/train.json")["epochs_run"] <= 2
    header = _run(["dvc", "exp", "show", "--no-pager", "--csv"], project).output.splitlines()[0].split(",")
    assert {"train.head", "train.epochs"} <= set(header)
    metric_columns = header[header.index("parent") + 1:header.index("data.source")]  # before the params
    assert metric_columns == ["hand_found"] + [f"{metric}.{name}" for metric in ("accuracy", "mirror_consistency",
                                                                                 "macro_f1")
                                               for name in ("test", EXTRA, "kaggle_test")] + ["pretrained"]


def test_exp_run_with_fine_tuning_trains_end_to_end_on_images(project):
    output = _run(["dvc", "exp", "run", "-S", "train.head=mlp", "-S", "train.fine_tune_epochs=1",
                   "-S", "train.epochs=1", "-S", "train.fine_tune_from=conv5_block3_1_conv"], project).output
    assert "Stage 'featurize' didn't change, skipping" in output
    train = _json(project, "metrics/train.json")
    assert train["fine_tuned"] is True
    assert train["epochs_run"] == 2  # one head epoch, then one fine-tuning epoch


def test_exp_run_with_hand_landmarks_alone(project):
    output = _run(["dvc", "exp", "run", "-S", "model.featurizers=[hand_landmarks]", "-S", "train.head=svm",
                   "-S", "train.fine_tune_epochs=0"], project).output
    for stage in ("featurize", "train", "evaluate", "explain"):
        assert f"Running stage '{stage}'" in output
    assert _json(project, "models/featurizers.json")["featurizers"] == ["hand_landmarks"]
    assert not (project / "data/features/backbone.weights.h5").exists()
    with np.load(project / "data/features/train.npz") as train:
        assert "backbone" not in train.files and train["hand"].shape[1] == 63 + 210 + 15 + 1
    evaluate = _json(project, "metrics/evaluate_details.json")
    for name in ("test", "kaggle_test", EXTRA):
        assert set(evaluate[name]) == SET_SCALARS, (name, evaluate[name])
    assert evaluate["test"]["accuracy"] > 1 / 3  # landmarks tell these three letters apart better than chance
    assert (project / "plots/gradcam/grid.png").is_file()  # hand skeletons, without Grad-CAM


def test_queued_experiments_run_in_dvc_copies_of_the_project(project):
    """`dvc exp run --queue` (and `--temp`, the same way) runs in .dvc/tmp/exps/<name>/, where the relative
    data.local_dir and the photos outside the project must still be found: one re-runs from download, one
    from train; two workers, one each."""
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before the queue"], project)
    local_dir = yaml.safe_load((project / "params.yaml").read_text())["data"]["local_dir"]
    _run(["dvc", "exp", "run", "--queue", "-n", "from-download", "-S", f"data.local_dir={local_dir}/"], project)
    _run(["dvc", "exp", "run", "--queue", "-n", "from-train", "-S", "train.svm_c=10"], project)
    _run(["dvc", "queue", "start", "-j", "2"], project)
    for _ in range(600):
        status = _run(["dvc", "queue", "status"], project).output
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    assert status.count("Success") == 2, status
    assert "Running stage 'download'" in _run(["dvc", "queue", "logs", "from-download"], project).output
    from_train = _run(["dvc", "queue", "logs", "from-train"], project).output
    assert "Running stage 'train'" in from_train and "Running stage 'download'" not in from_train
    shown = _run(["dvc", "exp", "show", "--no-pager", "--csv"], project).output
    for name in ("from-download", "from-train"):
        assert name in shown
