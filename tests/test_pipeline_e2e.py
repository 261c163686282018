"""End to end: `dvc repro` on a small subset of the real sample, in a throwaway copy of the project."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "asl-sample"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"sample dataset not found at {SAMPLE}"),
    pytest.mark.skipif(shutil.which("dvc", path=str(Path(sys.executable).parent)) is None
                       and shutil.which("dvc") is None, reason="dvc is not installed"),
]


def _run(args, cwd, expect_success=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if expect_success:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    result.output = result.stdout + result.stderr  # DVC prints progress to both
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The working tree as git sees it (tracked and untracked, not ignored), as a fresh git repo."""
    root = tmp_path_factory.mktemp("project")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file() and not name.startswith(("metrics/", "plots/", "dvc.lock")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["local_dir"] = str(SAMPLE)
    params["split"].update(classes=["A", "B", "C"], per_class=24)
    params["model"].update(weights="none", image_size=32)
    params["train"].update(epochs=3, patience=2)
    params["explain"].update(per_class=1, max_misclassified=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        _run(args, root)
    return root


def test_repro_runs_every_stage_then_is_up_to_date(project):
    output = _run(["dvc", "repro"], project).output
    for stage in ("download", "split", "featurize", "train", "evaluate", "explain"):
        assert f"Running stage '{stage}'" in output
    for produced in ("models/model.keras", "models/labels.json", "metrics/evaluate.json",
                     "plots/confusion.csv", "plots/learning_curves.png", "plots/gradcam/grid.png",
                     "data/split/kaggle_test.csv", "data/features/train.npz"):
        assert (project / produced).is_file(), produced
    evaluate = yaml.safe_load((project / "metrics/evaluate.json").read_text())
    assert evaluate["pretrained"] is False
    assert set(evaluate["test"]["per_class"]) == {"A", "B", "C"}
    assert "Data and pipelines are up to date" in _run(["dvc", "repro"], project).output
    assert "Data and pipelines are up to date" in _run(["dvc", "repro", "split"], project).output


def test_a_failed_stage_keeps_its_previous_outputs_and_repro_resumes(project):
    outputs = ["metrics/evaluate.json", "metrics/classification_report.txt", "plots/confusion.csv",
               "data/eval/misclassified.csv"]
    before = {name: (project / name).read_bytes() for name in outputs}
    params = project / "params.yaml"
    good = params.read_text()
    params.write_text(good.replace("top_k: 3", "top_k: 0"))
    failed = _run(["dvc", "repro"], project, expect_success=False)
    assert failed.returncode != 0
    assert "'evaluate.top_k' is 0" in failed.output
    assert {name: (project / name).read_bytes() for name in outputs} == before
    params.write_text(good)
    assert "Running stage" not in _run(["dvc", "repro"], project).output  # all up to date again


def test_exp_run_with_new_epochs_reuses_features(project):
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)
    output = _run(["dvc", "exp", "run", "-S", "train.epochs=2"], project).output
    assert "Stage 'featurize' didn't change, skipping" in output
    assert "Running stage 'train'" in output
    assert "Running stage 'evaluate'" in output
    header = _run(["dvc", "exp", "show", "--no-pager", "--csv"], project).output.splitlines()[0].split(",")
    assert {"train.epochs", "test.accuracy", "test.macro_f1", "kaggle_test.accuracy"} <= set(header)


def test_exp_run_with_fine_tuning_trains_end_to_end_on_images(project):
    output = _run(["dvc", "exp", "run", "-S", "train.fine_tune_epochs=1", "-S", "train.epochs=1",
                   "-S", "train.fine_tune_from=conv5_block3_1_conv"], project).output
    assert "Stage 'featurize' didn't change, skipping" in output
    train = json.loads((project / "metrics/train.json").read_text())
    assert train["fine_tuned"] is True
    assert train["epochs_run"] == 2  # one head epoch, then one fine-tuning epoch
