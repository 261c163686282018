"""Working the way DVC teams work: set-up from requirements.txt alone, and data, features and models
shared through a DVC remote so that a second clone has nothing to reproduce."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from helpers import copy_working_tree

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "asl-sample"
BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
SIGNERS = SHARED / "data" / "asl-signers"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
# One variant, the one served: hand landmarks with the svm head (test_pipeline_e2e.py runs both the project ships).
VARIANTS = {"reader": {"model": {"featurizers": ["hand_landmarks"]}, "featurize": {}, "train": {"head": "svm"}}}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SAMPLE.is_dir() and BUNDLE.is_file() and SIGNERS.is_dir()),
                       reason=f"shared data not found at {SHARED}"),
]


def _run(args, cwd, env=None, expect_success=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    result.output = result.stdout + result.stderr  # DVC prints progress to both
    if expect_success:
        assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.output}"
    return result


def _copy_project(root: Path) -> Path:
    """The working tree as git sees it (tracked and untracked, not ignored), without outputs, with small params."""
    copy_working_tree(root, skip=("metrics/", "plots/", "dvc.lock", "models/MODEL_CARD"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["local_dir"] = str(SAMPLE)
    params["data"]["extra_train"] = {"my-hand": "data/my-hand", "signers": str(SIGNERS)}
    params["hands"]["local_file"] = str(BUNDLE)
    params["split"].update(classes=["A", "B", "L"], per_class=20)
    params["variants"] = VARIANTS
    params["serve"] = {"model": "reader"}
    params["train"].update(landmark_copies=0)
    params["evaluate"]["extra_sets"] = []
    params["explain"].update(per_class=1, max_misclassified=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_dvc_push_then_pull_in_a_fresh_clone_leaves_nothing_to_reproduce(tmp_path):
    project = _copy_project(tmp_path / "project")
    _run(["git", "init", "-q"], project)
    _run(["git", "add", "-A"], project)
    _run([*GIT, "commit", "-qm", "project"], project)
    _run(["dvc", "repro"], project)
    _run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], project)
    _run(["git", "add", "-A"], project)
    _run([*GIT, "commit", "-qm", "pipeline run"], project)
    _run(["dvc", "push"], project)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    # The variant's model folder (a directory output of train@reader) and its features, from the remote.
    pulled = [f"models/reader/{name}" for name in ("model.keras", "labels.json", "featurizers.json", "run.json",
                                                   "hand_landmarker.task")] + ["data/features/reader/train.npz"]
    assert not any((clone / name).exists() for name in pulled)
    _run(["dvc", "pull"], clone)
    for name in pulled:
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
    # Every stage is up to date, the extra_train@<entry> stages too: DVC hashed their folders.
    status = _run(["dvc", "status"], clone).output
    assert "Data and pipelines are up to date" in status, status
    # predict without --model reads the variant serve.model names, models/reader/: hands, from its own bundle.
    photo = SAMPLE / "asl_alphabet_test" / "L_test.jpg"
    predicted = _run([sys.executable, "-m", "asl_pipeline", "predict", str(photo), "--json", "--no-heatmap",
                      "--out", str(tmp_path / "out")], clone)
    record, = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert record["label"] in ("A", "B", "L") and record["hand_found"] is True, predicted.output


def test_requirements_txt_alone_installs_the_package_the_stages_import(tmp_path):
    """`pip install -r requirements.txt` then a stage from the project root, in a venv without the package.

    The new venv sees this venv's third-party packages through a .pth file (so nothing is downloaded),
    but not its editable install of asl_pipeline: .pth files are not read in directories a .pth adds.
    """
    project = _copy_project(tmp_path / "project")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ""}
    stage = [str(python), "stages/hand_model.py"]
    before = _run(stage, project, env, expect_success=False)
    assert before.returncode != 0 and "No module named 'asl_pipeline'" in before.output

    _run([str(python), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"], project, env)
    _run(stage, project, env)
    assert (project / "models" / "hand_landmarker.task").is_file()
