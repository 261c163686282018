"""Shared fixtures: a throwaway project in which the stage scripts run the way `dvc repro` runs them."""
import copy
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import HAND_BUNDLE

REPO = Path(__file__).resolve().parents[1]


# What a throwaway project changes in the repo's params.yaml so that featurize and train run on synthetic
# noise photos in seconds, without network or ../shared relative to it: one variant, `resnet50`, the backbone
# alone (noise shows no hands), random init at 32 px, and the mlp head; the hand bundle by absolute path; no extra
# training photos and no extra evaluation sets. `variants` and `serve` are replaced whole, the other sections
# updated key by key.
TINY_VARIANT = "resnet50"
STAGE_PROJECT_PARAMS = {
    "variants": {TINY_VARIANT: {"model": {"featurizers": ["backbone"]}, "featurize": {}, "train": {"head": "mlp"}}},
    "serve": {"model": TINY_VARIANT},
    "data": {"extra_train": {}, "extra_kaggle": []},
    "model": {"weights": "none", "image_size": 32},
    "hands": {"source": "local", "local_file": str(HAND_BUNDLE)},
    "featurize": {"crop_to_hand": False},
    "train": {"landmark_copies": 0},
    "evaluate": {"extra_sets": []},
}
REPLACED_SECTIONS = ("variants", "serve")

# The files that take minutes (whole `dvc repro` runs), longest first. `make test` runs files side by side
# on one worker per core in the order collected: started first, the longest one ends with the rest instead
# of running on alone at the end.
LONGEST_FILES = ("test_pipeline_e2e.py", "test_dvc_sharing.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: every other file, and the tests within a file, keep their order


class StageProject:
    """A project root under tmp_path: the repo's params.yaml with STAGE_PROJECT_PARAMS (edit with `set`)
    and data/raw.

    Stages read params.yaml and data/ relative to their working directory, so running
    `python REPO/stages/<name>.py` here touches nothing in the repository.
    """

    def __init__(self, root: Path):
        self.root = root
        self.raw = root / "data" / "raw"
        self.train = self.raw / "asl_alphabet_train"
        self.train.mkdir(parents=True)
        self.params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        self.set(**STAGE_PROJECT_PARAMS)

    def write_params(self, text: str | None = None) -> None:
        if text is None:
            text = yaml.safe_dump(self.params, sort_keys=False, allow_unicode=True)
        (self.root / "params.yaml").write_text(text, encoding="utf-8")

    def set(self, **sections) -> None:
        """set(split={"seed": 3}) updates those keys of params.yaml and rewrites it; `variants` and `serve`
        are replaced whole."""
        for section, values in sections.items():
            if section in REPLACED_SECTIONS:
                self.params[section] = copy.deepcopy(values)
            else:
                self.params[section].update(values)
        self.write_params()

    def add_noise_images(self, classes, count: int, seed: int = 0) -> list:
        """`count` distinct 8x8 noise JPEGs per class, named like Kaggle's frames (A1.jpg, A2.jpg, ...)."""
        written = []
        for label in classes:
            for frame in range(1, count + 1):
                pixels = np.random.default_rng([seed, ord(label[0]), frame]).integers(0, 256, (8, 8, 3),
                                                                                       dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
                path = self.train / label / f"{label}{frame}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(buffer.getvalue())
                written.append(path)
        return written

    def run(self, stage: str, *stage_args: str, hook: str | None = None) -> subprocess.CompletedProcess:
        """Run stages/<stage>.py here with `stage_args` (a per-variant stage: the variant's name); `hook` is
        Python code run first in the same interpreter."""
        script = str(REPO / "stages" / f"{stage}.py")
        if hook is None:
            args = [sys.executable, script, *stage_args]
        else:
            run = (f"import runpy, sys\nsys.argv = [{script!r}, *{list(stage_args)!r}]\n"
                   f"runpy.run_path({script!r}, run_name='__main__')\n")
            args = [sys.executable, "-c", f"{hook}\n{run}"]
        return subprocess.run(args, cwd=self.root, capture_output=True, text=True, timeout=300)


@pytest.fixture
def stage_project(tmp_path) -> StageProject:
    return StageProject(tmp_path / "project")


@pytest.fixture(scope="session")
def make_stage_project():
    """StageProject itself, for module-scoped fixtures: make_stage_project(root)."""
    return StageProject
