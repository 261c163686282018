"""Folders outside the repository: in a clone without ../shared, `drop-absent` fits params.yaml to it, and the
pipeline then runs end to end on the dataset given as a local zip in Kaggle's layout; with ../shared,
`link-outside` lets DVC's experiment copies find it (tests/test_pipeline_e2e.py runs queued experiments so)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import copy_working_tree

from asl_pipeline import outside_inputs
from asl_pipeline.cli import main
from asl_pipeline.config import load_params
from asl_pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "asl-sample"
HAND_BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"


def project_with(tmp_path: Path, extra_train: str, extra_sets: str) -> Path:
    """tmp_path/clone/project: the repository's params.yaml (comments and all) with these two lines replaced."""
    root = tmp_path / "clone" / "project"
    root.mkdir(parents=True)
    lines = []
    for line in (REPO / "params.yaml").read_text().splitlines():
        if line.startswith(("    signers: ", "    webcams: ")):
            continue
        if line.startswith("    my-hand: "):
            line = extra_train
        if line.startswith("  extra_sets: "):
            line = extra_sets
        lines.append(line)
    (root / "params.yaml").write_text("\n".join(lines) + "\n")
    return root


def test_link_outside_lets_an_experiment_copy_reach_each_relative_folder_outside(tmp_path, capsys, monkeypatch):
    team = tmp_path / "clone" / "shared" / "data" / "team"
    team.mkdir(parents=True)
    root = project_with(tmp_path, "    my-hand: data/my-hand\n    team: ../shared/data/team\n"
                                  f"    absolute: {team}\n    gone: ../elsewhere/signers", "  extra_sets: []")
    monkeypatch.chdir(root)
    assert main(["link-outside"]) == 0
    assert capsys.readouterr().out.count("experiment copies find") == 1  # not inside, absolute or absent
    copy = root / ".dvc" / "tmp" / "exps" / "tmp1a2b3c"  # where DVC runs a queued experiment
    copy.mkdir(parents=True)
    assert (copy / "../shared/data/team").resolve() == team.resolve()
    assert not (copy / "../elsewhere").exists() and not (root / ".dvc" / "tmp" / "exps" / "data").exists()
    assert main(["link-outside"]) == 0  # again: the link is there already, and kept
    assert (copy / "../shared/data/team").resolve() == team.resolve()


def test_link_outside_refuses_a_folder_too_far_above_the_project(tmp_path, monkeypatch):
    root = project_with(tmp_path, "    far: ../../../../far", "  extra_sets: []")
    monkeypatch.chdir(root)
    with pytest.raises(PipelineError, match="absolute path"):
        outside_inputs.link_outside(root)


def test_drop_absent_removes_only_folders_outside_the_repository_that_are_not_there(tmp_path, capsys, monkeypatch):
    present = tmp_path / "present"
    present.mkdir()
    root = project_with(
        tmp_path,
        f"    my-hand: data/my-hand       # inside: absent, a typo DVC reports\n"
        f"    team: ../shared/data/asl-signers\n    mine: {present}\n    gone: /nowhere/signers",
        f"  extra_sets: [{present}, ../shared/data/asl-other-dev, data/typo]  # scored, never trained on")
    before = (root / "params.yaml").read_text()
    assert outside_inputs.absent_outside(root) == [("data.extra_train.team", "../shared/data/asl-signers"),
                                                  ("data.extra_train.gone", "/nowhere/signers"),
                                                  ("evaluate.extra_sets", "../shared/data/asl-other-dev")]
    monkeypatch.chdir(root)
    assert main(["drop-absent"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("is not on this machine") == 3 and "../shared/data/asl-other-dev" in printed
    params = load_params(root / "params.yaml")
    assert params.data.extra_train == {"my-hand": "data/my-hand", "mine": str(present)}
    assert params.evaluate.extra_sets == (str(present), "data/typo")
    # Only those entries changed: every comment and every other line is as it was.
    after = (root / "params.yaml").read_text()
    assert [line for line in before.splitlines() if line not in after.splitlines()] == [
        "    team: ../shared/data/asl-signers", "    gone: /nowhere/signers",
        f"  extra_sets: [{present}, ../shared/data/asl-other-dev, data/typo]  # scored, never trained on"]
    assert "# inside: absent, a typo DVC reports" in after and "# four more signers" not in after
    assert after.count("#") == before.count("#")
    # Nothing left to drop: a second run changes nothing.
    assert main(["drop-absent"]) == 0 and capsys.readouterr().out == ""
    assert (root / "params.yaml").read_text() == after


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no {SHARED} beside the repository")
def test_drop_absent_keeps_every_folder_with_shared_beside_the_repository():
    assert outside_inputs.absent_outside(REPO) == []


def test_make_pipeline_drops_absent_folders_before_dvc_repro():
    recipe = (REPO / "Makefile").read_text().split("\npipeline:", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("asl_pipeline drop-absent") < recipe.index("dvc repro"), recipe


def kaggle_zip(path: Path, classes, per_class: int) -> Path:
    """A zip in the Kaggle download's own layout (train folder nested once, test photos beside it)."""
    with zipfile.ZipFile(path, "w") as archive:
        for label in classes:
            for photo in sorted((SAMPLE / "asl_alphabet_train" / label).glob("*.jpg"))[:per_class]:
                archive.write(photo, f"asl_alphabet_train/asl_alphabet_train/{label}/{photo.name}")
            test_photo = SAMPLE / "asl_alphabet_test" / f"{label}_test.jpg"
            archive.write(test_photo, f"asl_alphabet_test/asl_alphabet_test/{test_photo.name}")
    return path


def run(args, cwd, expect_success=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == expect_success, f"{' '.join(map(str, args))}:\n{output}"
    return output


@pytest.mark.slow
@pytest.mark.skipif(not (SAMPLE.is_dir() and HAND_BUNDLE.is_file()), reason=f"sample or hand bundle not in {SHARED}")
def test_a_clone_without_shared_runs_dvc_repro_on_a_local_kaggle_zip(tmp_path):
    root = tmp_path / "clone" / "project"  # no tmp_path/clone/shared: ../shared is absent
    root.mkdir(parents=True)
    copy_working_tree(root, skip=("metrics/", "plots/", "dvc.lock", "tests/", "models/MODEL_CARD"))
    downloads = tmp_path / "downloads"  # what a user outside the team has: the Kaggle zip and MediaPipe's bundle
    downloads.mkdir()
    dataset = kaggle_zip(downloads / "asl-alphabet.zip", ["A", "B", "C"], 12)
    shutil.copy2(HAND_BUNDLE, downloads / "hand_landmarker.task")
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["data"]["extra_train"]["signers"].startswith("../shared/")  # the defaults, as committed
    params["data"]["local_dir"] = str(dataset)
    params["hands"]["local_file"] = str(downloads / "hand_landmarker.task")
    params["split"].update(classes=["A", "B", "C"])
    params["model"].update(weights="none", image_size=32)
    params["train"].update(epochs=2, patience=2, landmark_copies=0)
    params["explain"].update(per_class=1, max_misclassified=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)  # a clone: a git repository with the project committed
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"], root)

    # As committed, DVC stops at the first folder this clone lacks, naming it.
    assert "asl-signers" in run(["dvc", "repro", "extra_train@signers"], root, expect_success=False)
    dropped = run([sys.executable, "-m", "asl_pipeline", "drop-absent"], root)
    assert dropped.count("is not on this machine") == 4, dropped  # two training folders, two dev sets
    run(["dvc", "repro"], root)
    accuracy = json.loads((root / "metrics" / "accuracy.json").read_text())
    for variant in ("reader", "resnet50"):
        assert list(accuracy[variant]) == ["test", "signers_left_out", "signers_left_out_se", "worst_signer",
                                           "kaggle_test"], accuracy
        assert accuracy[variant]["signers_left_out"] is None  # the Kaggle signer alone: no one to leave out
        assert (root / "models" / variant / "model.keras").is_file()
    assert json.loads((root / "metrics" / "download.json").read_text())["train_images"] == 36
    assert "up to date" in run(["dvc", "status"], root)
