"""End to end: `dvc repro` on a small subset of the real sample, in a throwaway copy of the project.

3 classes, 24 photos each, a 9-photo extra set of other people's hands, and the two model variants the
project ships, made small: `reader`, hand landmarks (the real MediaPipe bundle from ../shared) with the kernel
head, and `resnet50`, ResNet50 with random init at 32 px with the mlp head trained for a few epochs. A later
experiment changes the epochs (resnet50's features are reused); three more, queued in DVC's copies of the
project on two workers, fine-tune resnet50 on photos fused with hand landmarks, re-run from download, and change
one variant's own params (the other variant is left alone).
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
SIGNERS = SHARED / "data" / "asl-signers"
HAND_BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
CLASSES = ["A", "B", "C"]
EXTRA = "other-people"  # the extra set's folder name: its name in evaluate.json and plots/.../per_class/
SETS = ["test", EXTRA, "kaggle_test"]  # evaluate.json's order: what exp show compares
READER, RESNET = "reader", "resnet50"
VARIANTS = {
    READER: {"model": {"featurizers": ["hand_landmarks"]}, "featurize": {},
             "train": {"head": "kernel", "kernel_components": 40, "landmark_copies": 1}},
    RESNET: {"model": {"featurizers": ["backbone"]}, "featurize": {}, "train": {"head": "mlp"}},
}
EPOCHS = 3
PER_VARIANT_STAGES = ("featurize", "train", "signers", "evaluate", "explain")
SIGNER_NAMES = ["signer1", "signer2"]  # two of the four more signers join training: three photos of each class
EXTRA_STAGES = {"extra_train@my-hand", "extra_train@signers", "extra_kaggle"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"sample dataset not found at {SAMPLE}"),
    pytest.mark.skipif(not (HAND_BUNDLE.is_file() and OTHER_DEV.is_dir() and SIGNERS.is_dir()),
                       reason=f"hand bundle or other people's photos not found under {SHARED}"),
    pytest.mark.skipif(shutil.which("dvc", path=str(Path(sys.executable).parent)) is None
                       and shutil.which("dvc") is None, reason="dvc is not installed"),
]
SET_SCALARS = {"n", "accuracy", "macro_f1", "top_3_accuracy", "mirror_consistency"}
HAND_SCALARS = SET_SCALARS | {"hand_found"}  # a variant that reads hands also counts the photos it found one in
HAND_WIDTH = 63 + 210 + 15 + 1  # keypoints, distances, angles, handedness


def _run(args, cwd, expect_success=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if expect_success:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    result.output = result.stdout + result.stderr  # DVC prints progress to both
    return result


def _commit(project, message):
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], project)


def stages_run(output: str) -> set:
    return set(re.findall(r"Running stage '([^']+)'", output))


def of(variant, *stages) -> set:
    return {f"{stage}@{variant}" for stage in stages}


def _json(project, name):
    return json.loads((project / name).read_text())


def epoch_rows(project, variant) -> int:
    """Rows of the variant's training-loss curve (dvclive's tsv, a header line first)."""
    lines = (project / f"plots/variants/{variant}/train/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["step", "loss"], lines[0]
    return len(lines) - 1


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The working tree as git sees it (tracked and untracked, not ignored), as a fresh git repo."""
    root = tmp_path_factory.mktemp("project")
    copy_working_tree(root, skip=("metrics/", "plots/", "dvc.lock", "tests/", "models/MODEL_CARD"))
    # Other people's hands: three photos of each class, outside the project like ../shared.
    extra = tmp_path_factory.mktemp("extra") / EXTRA
    for label in CLASSES:
        (extra / label).mkdir(parents=True)
        for photo in sorted((OTHER_DEV / label).glob("*.jpg"))[:3]:
            shutil.copy2(photo, extra / label / photo.name)
    # More signers, outside the project like ../shared (relative, as the default is: `link-outside` lets DVC's
    # experiment copies find it).
    signers = tmp_path_factory.mktemp("signers") / "asl-signers"
    for label in CLASSES:
        (signers / label).mkdir(parents=True)
        for signer in SIGNER_NAMES:
            for photo in sorted((SIGNERS / label).glob(f"{signer}_*.jpg"))[:3]:
                shutil.copy2(photo, signers / label / photo.name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["extra_train"] = {"my-hand": "data/my-hand", "signers": os.path.relpath(signers, root)}
    # Relative, as the default is: queued experiments run in a copy under .dvc/tmp/exps/ and must find it.
    params["data"]["local_dir"] = os.path.relpath(SAMPLE, root)
    params["split"].update(classes=CLASSES, per_class=24)
    params["variants"] = VARIANTS
    params["serve"] = {"model": READER}
    params["model"].update(weights="none", image_size=32)
    params["hands"].update(source="auto", local_file=str(HAND_BUNDLE))
    params["featurize"].update(crop_to_hand=False, augment_copies=0)
    params["train"].update(epochs=EPOCHS, patience=EPOCHS, learning_rate=0.001, fine_tune_epochs=0,
                           landmark_copies=0)
    params["evaluate"].update(extra_sets=[str(extra)])
    params["explain"].update(per_class=1, max_misclassified=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root)
    _commit(root, "init")
    return root


def test_repro_runs_every_stage_of_every_variant_then_is_up_to_date(project):
    output = _run(["dvc", "repro"], project).output
    assert stages_run(output) == ({"download", "hand_model", "split", "compare"} | EXTRA_STAGES
                                  | of(READER, *PER_VARIANT_STAGES) | of(RESNET, *PER_VARIANT_STAGES))
    assert (project / "models/hand_landmarker.task").read_bytes() == HAND_BUNDLE.read_bytes()
    assert (project / "data/split/kaggle_test.csv").is_file()
    for variant in (READER, RESNET):
        for produced in (f"models/{variant}/model.keras", f"models/{variant}/labels.json",
                         f"models/{variant}/featurizers.json", f"models/{variant}/run.json",
                         f"models/{variant}/model_summary.txt", f"models/MODEL_CARD_{variant}.md",
                         f"data/features/{variant}/train.npz", f"data/eval/{variant}/misclassified.csv",
                         *(f"metrics/variants/{variant}/{name}.json" for name in
                           ("evaluate", "evaluate_details", "featurize", "hands", "hands_per_class", "train")),
                         f"metrics/variants/{variant}/classification_report.txt",
                         f"plots/variants/{variant}/confusion.csv", f"plots/variants/{variant}/learning_curves.png",
                         f"plots/variants/{variant}/per_class/test.csv",
                         f"plots/variants/{variant}/per_class/kaggle_test.csv",
                         f"plots/variants/{variant}/per_class/{EXTRA}.csv",
                         f"plots/variants/{variant}/explain/grid.png"):
            assert (project / produced).is_file(), produced
        assert _json(project, f"models/{variant}/labels.json") == CLASSES
        run = _json(project, f"models/{variant}/run.json")
        assert run["variant"] == variant
        assert run["params"]["train"]["head"] == VARIANTS[variant]["train"]["head"]  # the variant's over the top
        assert run["params"]["model"]["featurizers"] == VARIANTS[variant]["model"]["featurizers"]
        assert _json(project, f"models/{variant}/featurizers.json")["featurizers"] == \
            VARIANTS[variant]["model"]["featurizers"]

        evaluate = _json(project, f"metrics/variants/{variant}/evaluate.json")
        assert list(evaluate) == ["mirror_consistency", "macro_f1"]  # accuracy is compare's, in accuracy.json
        assert list(evaluate["macro_f1"]) == SETS  # what exp show compares, in its order
        details = _json(project, f"metrics/variants/{variant}/evaluate_details.json")
        for name in SETS:
            assert evaluate["macro_f1"][name] == round(details[name]["macro_f1"], 4)
            scalars = HAND_SCALARS if variant == READER else SET_SCALARS
            assert set(details[name]) == scalars, (variant, name, details[name])  # per-class in plots/
        assert details[EXTRA]["n"] == 9 and details["kaggle_test"]["n"] == 3
        card = (project / f"models/MODEL_CARD_{variant}.md").read_text()
        assert f"variant `{variant}`" in card and f"models/{variant}/" in card and f"`{EXTRA}`" in card
        per_class = (project / f"plots/variants/{variant}/per_class/test.csv").read_text().splitlines()
        assert per_class[0] == "class,images,precision,recall,f1,no_hand"
        assert [row.split(",")[0] for row in per_class[1:]] == CLASSES

    # The reader: hand landmarks alone, the hand bundle copied into its folder, so the folder alone predicts.
    assert (project / "models/reader/hand_landmarker.task").read_bytes() == HAND_BUNDLE.read_bytes()
    assert not (project / "data/features/reader/backbone.weights.h5").exists()
    with np.load(project / "data/features/reader/train.npz") as train:
        assert "backbone" not in train.files and train["hand"].shape[1] == HAND_WIDTH
    details = _json(project, "metrics/variants/reader/evaluate_details.json")
    assert details["test"]["hand_found"] > 0.5  # the sample's photos do show hands
    assert details["test"]["accuracy"] > 1 / 3  # landmarks tell these three letters apart better than chance
    assert 0.5 < _json(project, "metrics/variants/reader/hands.json")["hand_found"] <= 1
    featurize = _json(project, "metrics/variants/reader/featurize.json")
    assert set(featurize) == {"pretrained", "images", "hand_found"}  # the features, not the machine's speed
    assert set(featurize["hand_found"]) >= {"train", "val", "test", "all_outside_nothing"}
    assert set(_json(project, "metrics/variants/reader/hands_per_class.json")["train"]) == set(CLASSES)
    assert "Most confused" in (project / "models/MODEL_CARD_reader.md").read_text() or \
        all(details[name]["accuracy"] == 1 for name in SETS)

    # resnet50: the backbone alone, random init, trained by epochs; it needs no hand bundle.
    assert not (project / "models/resnet50/hand_landmarker.task").exists()
    assert (project / "data/features/resnet50/backbone.weights.h5").is_file()
    with np.load(project / "data/features/resnet50/train.npz") as train:
        assert train["backbone"].shape[1] == 2048 and "hand" not in train.files
    assert _json(project, "models/resnet50/run.json")["pretrained"] is False
    assert _json(project, "metrics/variants/resnet50/train.json")["pretrained"] is False
    assert _json(project, "metrics/variants/resnet50/hands.json") == {"hand_found": None}
    epochs_run = _json(project, "metrics/variants/resnet50/train.json")["epochs_run"]
    assert 1 <= epochs_run <= EPOCHS and epoch_rows(project, RESNET) == epochs_run

    # compare: every variant's accuracy per set, as evaluate scored it, and the signer-grouped scores.
    accuracy = {variant: {name: round(_json(project, f"metrics/variants/{variant}/evaluate_details.json")[name]
                                      ["accuracy"], 4) for name in SETS} for variant in (READER, RESNET)}
    signer_scores = {variant: _json(project, f"metrics/variants/{variant}/signers.json") for variant in (READER, RESNET)}
    assert _json(project, "metrics/accuracy.json") == {  # the signer-grouped scores before kaggle_test
        variant: {**{name: accuracy[variant][name] for name in SETS[:-1]},
                  "signers_left_out": signer_scores[variant]["mean"],
                  "signers_left_out_se": signer_scores[variant]["standard_error"],
                  "worst_signer": min(row["accuracy"] for row in signer_scores[variant]["signers"].values()),
                  SETS[-1]: accuracy[variant][SETS[-1]]} for variant in (READER, RESNET)}

    # Signer-grouped folds: the Kaggle signer and each of the two others, read by a head trained without them.
    for variant in (READER, RESNET):
        scores = signer_scores[variant]
        assert list(scores["signers"]) == ["kaggle", *SIGNER_NAMES]
        assert [row["n"] for row in scores["signers"].values()][1:] == [3 * len(CLASSES)] * len(SIGNER_NAMES)
        assert scores["mean"] == pytest.approx(np.mean([row["accuracy"] for row in scores["signers"].values()]),
                                               abs=1e-4)
        plotted = (project / f"plots/variants/{variant}/signers.csv").read_text().splitlines()
        assert plotted[0] == "signer,accuracy,n,fold" and len(plotted) == 1 + len(scores["signers"])

    # DVC hashes every data.extra_train folder itself: nothing re-runs, and `dvc status` is clean.
    assert stages_run(_run(["dvc", "repro"], project).output) == set()
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project).output


def test_a_changed_photo_in_one_extra_folder_re_runs_that_entry_alone(project):
    signers = project / yaml.safe_load((project / "params.yaml").read_text())["data"]["extra_train"]["signers"]
    photo = sorted((signers / CLASSES[0]).glob("*.jpg"))[0]
    photo.write_bytes(photo.read_bytes() + b"\0")  # new bytes, the same picture (the tail after the JPEG's end)
    status = _run(["dvc", "status"], project).output
    assert "extra_train@signers:" in status and "extra_train@my-hand:" not in status, status
    run = stages_run(_run(["dvc", "repro"], project).output)
    assert "extra_train@signers" in run and not run & {"extra_train@my-hand", "extra_kaggle", "download"}, run
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project).output


def test_a_failed_stage_keeps_its_previous_outputs_and_repro_resumes(project):
    outputs = [f"{folder}/{name}" for variant in (READER, RESNET) for folder, name in (
        (f"metrics/variants/{variant}", "evaluate.json"), (f"metrics/variants/{variant}", "classification_report.txt"),
        (f"plots/variants/{variant}", "confusion.csv"), (f"data/eval/{variant}", "misclassified.csv"),
        (f"plots/variants/{variant}", "per_class/test.csv"), ("models", f"MODEL_CARD_{variant}.md"))]
    outputs.append("metrics/accuracy.json")
    before = {name: (project / name).read_bytes() for name in outputs}
    params = project / "params.yaml"
    good = params.read_text()
    params.write_text(good.replace("top_k: 3", "top_k: 0"))
    failed = _run(["dvc", "repro"], project, expect_success=False)
    assert failed.returncode != 0
    assert "'evaluate.top_k' is 0" in failed.output
    assert "Running stage 'compare'" not in failed.output
    assert {name: (project / name).read_bytes() for name in outputs} == before
    params.write_text(good)
    assert stages_run(_run(["dvc", "repro"], project).output) == set()  # all up to date again


def test_exp_run_with_other_epochs_reuses_features_and_retrains(project):
    _commit(project, "baseline")
    before = _json(project, "metrics/variants/resnet50/train.json")
    assert before["epochs_run"] > 1
    reader_model = (project / "models/reader/model.keras").read_bytes()
    output = _run(["dvc", "exp", "run", "-S", "train.epochs=1"], project).output
    run = stages_run(output)
    assert not any(stage.startswith("featurize@") for stage in run), run  # the features do not read train
    assert "Stage 'featurize@resnet50' didn't change, skipping" in output
    assert "Stage 'hand_model' didn't change, skipping" in output
    assert of(RESNET, "train", "evaluate", "explain") | {"compare"} <= run
    # DVC re-runs train@reader and signers@reader too (every variant's declares the `train` section), but the
    # kernel head reads no epochs: they keep their outputs, and nothing after them re-runs.
    assert "train reader: nothing this variant's kernel head reads has changed" in output
    assert "signers reader: nothing the kernel head's folds read has changed" in output
    assert not run & of(READER, "evaluate", "explain"), run
    assert (project / "models/reader/model.keras").read_bytes() == reader_model
    train = _json(project, "metrics/variants/resnet50/train.json")
    assert train["epochs_run"] == 1 and train["best_epoch"] == 1
    assert epoch_rows(project, RESNET) == 1  # the learning curve is this run's
    assert _json(project, "models/resnet50/run.json")["params"]["train"]["epochs"] == 1

    # The experiment against the baseline commit: the resnet50 model changed, and its metrics with it.
    diff = json.loads(_run(["dvc", "metrics", "diff", "--json"], project).stdout)
    changed = {(path, key) for path, keys in diff.items() for key, values in keys.items()
               if values.get("old") != values.get("new")}
    assert any(path == "metrics/variants/resnet50/evaluate.json" for path, _ in changed) or \
        any(path == "metrics/accuracy.json" and key.startswith(f"{RESNET}.") for path, key in changed), diff
    assert not any(path.startswith("metrics/variants/reader/") for path, _ in changed), diff
    assert not any(path == "metrics/accuracy.json" and key.startswith(f"{READER}.") for path, key in changed), diff

    header = _run(["dvc", "exp", "show", "--no-pager", "--csv"], project).output.splitlines()[0].split(",")
    assert "train.epochs" in header
    metric_columns = header[header.index("parent") + 1:header.index("data.source")]  # before the params
    # compare's table first: every variant's accuracy per set; then the variants' own metrics.
    columns = [*SETS[:-1], "signers_left_out", "signers_left_out_se", "worst_signer", SETS[-1]]
    assert metric_columns[:2 * len(columns)] == [f"{variant}.{name}" for variant in (READER, RESNET) for name in columns]


@pytest.fixture(scope="module")
def queue(project):
    """Two experiments queued from the commit after the first experiment, run side by side by two workers,
    each in a copy of the project under .dvc/tmp/exps/: `fine-tuned` re-runs from download (a new spelling of
    data.local_dir) and fine-tunes resnet50 fused with hand landmarks, and `reader-only` changes one of the
    reader's own params. Returns the committed models, to compare each experiment's with."""
    _commit(project, "before the queue")
    # As `make pipeline` does: DVC's copies under .dvc/tmp/exps/ find the relative signers folder outside.
    assert "experiment copies find" in _run([sys.executable, "-m", "asl_pipeline", "link-outside"], project).output
    local_dir = yaml.safe_load((project / "params.yaml").read_text())["data"]["local_dir"]
    # `+`: keys the variant does not set yet (Hydra's override syntax, which -S uses, appends a key with `+`).
    for name, changes in (("fine-tuned", ["variants.resnet50.model.featurizers=[backbone,hand_landmarks]",
                                          "+variants.resnet50.train.fine_tune_epochs=1",
                                          "+variants.resnet50.train.fine_tune_from=conv5_block3_1_conv",
                                          f"data.local_dir={local_dir}/"]),
                          ("reader-only", ["+variants.reader.train.kernel_alpha=3"])):
        _run(["dvc", "exp", "run", "--queue", "-n", name, *(arg for change in changes for arg in ("-S", change))],
             project)
    _run(["dvc", "queue", "start", "-j", "2"], project)
    for _ in range(900):
        status = _run(["dvc", "queue", "status"], project).output
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    assert status.count("Success") == 2, status
    return {variant: {name: (project / "models" / variant / name).read_bytes() for name in ("model.keras", "run.json")}
            for variant in (READER, RESNET)}


def queued_stages(project, name) -> set:
    return stages_run(_run(["dvc", "queue", "logs", name], project).output)


def models_now(project, variant) -> dict:
    return {name: (project / "models" / variant / name).read_bytes() for name in ("model.keras", "run.json")}


def test_queued_experiments_run_in_dvc_copies_of_the_project(project, queue):
    """`dvc exp run --queue` (and `--temp`, the same way) runs in .dvc/tmp/exps/<name>/, where the relative
    data.local_dir and the photos outside the project must still be found."""
    assert "download" in queued_stages(project, "fine-tuned")
    shown = _run(["dvc", "exp", "show", "--no-pager", "--csv"], project).output
    for name in ("fine-tuned", "reader-only"):
        assert name in shown


def test_a_change_to_one_variants_own_params_leaves_the_other_variant_alone(project, queue):
    run = queued_stages(project, "reader-only")
    assert of(READER, "train", "evaluate", "explain") | {"compare"} <= run
    # dvc.yaml declares a variant's model, featurize and train keys stage by stage: a train key featurizes nothing.
    assert not run & (of(RESNET, *PER_VARIANT_STAGES) | of(READER, "featurize")
                      | {"download", "split", "hand_model"}), run
    _run(["dvc", "exp", "apply", "reader-only"], project)
    assert yaml.safe_load((project / "params.yaml").read_text())["variants"][READER]["train"]["kernel_alpha"] == 3
    assert _json(project, "models/reader/run.json")["params"]["train"]["kernel_alpha"] == 3
    assert _json(project, "models/resnet50/run.json")["params"]["train"]["kernel_alpha"] != 3
    assert models_now(project, RESNET) == queue[RESNET]


def test_fine_tuning_resnet50_fused_with_hand_landmarks(project, queue):
    """One variant trained end to end on photos, its backbone fused with hand landmarks; the reader left alone."""
    run = queued_stages(project, "fine-tuned")
    assert of(RESNET, *PER_VARIANT_STAGES) | {"compare"} <= run
    assert not run & (of(READER, *PER_VARIANT_STAGES) | {"split"}), run  # download's outputs are the same
    _run(["dvc", "exp", "apply", "fine-tuned"], project)
    assert _json(project, "models/resnet50/featurizers.json")["featurizers"] == ["backbone", "hand_landmarks"]
    assert (project / "models/resnet50/hand_landmarker.task").read_bytes() == HAND_BUNDLE.read_bytes()
    with np.load(project / "data/features/resnet50/train.npz") as train:
        assert train["backbone"].shape[1] == 2048 and train["hand"].shape[1] == HAND_WIDTH
    train = _json(project, "metrics/variants/resnet50/train.json")
    assert train["fine_tuned"] is True
    assert train["epochs_run"] == 2  # one head epoch (train.epochs: 1 since the first experiment), one fine-tuning
    assert epoch_rows(project, RESNET) == 2
    assert set(_json(project, "metrics/variants/resnet50/evaluate_details.json")["test"]) == HAND_SCALARS
    assert (project / "plots/variants/resnet50/explain/grid.png").is_file()  # Grad-CAM beside the skeleton
    assert models_now(project, READER) == queue[READER]
