"""Small shared builders for the tests: feature specs, train params, synthetic hands, tiny saved models.

Not a test module (pytest collects test_*.py only); the test files import it as `helpers`.
"""
import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from asl_pipeline.config import HAND_FEATURE_GROUPS, HandsParams, ModelFiles, TrainParams
from asl_pipeline.featurizers import FeatureSpec
from asl_pipeline.hands import Hand

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HAND_BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
SAMPLE = SHARED / "data" / "asl-sample"
OTHER_DEV = SHARED / "data" / "asl-other-dev"

needs_bundle = pytest.mark.skipif(not HAND_BUNDLE.is_file(), reason=f"needs the MediaPipe hand bundle at {HAND_BUNDLE}")
needs_sample = pytest.mark.skipif(not (HAND_BUNDLE.is_file() and SAMPLE.is_dir()),
                                  reason=f"needs the hand bundle and the sample photos under {SHARED}")


def hands_params(**changes) -> HandsParams:
    base = HandsParams(source="local", local_file=str(HAND_BUNDLE), min_detection_confidence=0.1,
                       min_presence_confidence=0.1, border=0.25, fallback_min_presence=0.5, mirror_left=False,
                       features=HAND_FEATURE_GROUPS)
    return dataclasses.replace(base, **changes)


def make_spec(featurizers=("backbone",), image_size: int = 32, crop_to_hand: bool = False,
              backbone: str = "resnet50", **hand_changes) -> FeatureSpec:
    return FeatureSpec(tuple(featurizers), backbone, image_size, crop_to_hand, hands_params(**hand_changes))


def train_params(**changes) -> TrainParams:
    base = TrainParams(head="mlp", svm_c=10.0, kernel_components=200, kernel_alpha=1.0, epochs=40, batch_size=16, learning_rate=0.01, hidden_units=16,
                       dropout=0.1, patience=5, fine_tune_epochs=0, fine_tune_from="conv5_block3_1_conv",
                       fine_tune_learning_rate=1e-3, seed=0)
    return dataclasses.replace(base, **changes)


def synthetic_landmarks(seed: int = 0) -> np.ndarray:
    """21 hand-like keypoints in pixels: a wrist, five fingers of four joints fanning upwards, some depth."""
    rng = np.random.default_rng(seed)
    points = [[200.0, 300.0, 0.0]]
    for finger in range(5):
        angle = np.radians(-150 + 30 * finger) + rng.normal(0, 0.05)
        base = np.array([200.0, 300.0]) + 50 * np.array([np.cos(angle), np.sin(angle)])
        for joint in range(4):
            bend = angle + rng.normal(0, 0.25) * (joint + 1)  # no joint exactly straight
            base = base + (25 - 3 * joint) * np.array([np.cos(bend), np.sin(bend)])
            points.append([base[0], base[1], rng.normal(-5, 3)])
    return np.array(points, dtype=np.float32)


def make_hand(landmarks=None, handedness: float = 0.9, presence: float = 0.95, detector_score: float = 0.8,
              box=(200.0, 230.0, 220.0, 220.0, 0.3)) -> Hand:
    landmarks = synthetic_landmarks() if landmarks is None else np.asarray(landmarks, np.float32)
    return Hand(landmarks, handedness, presence, detector_score, "detector", tuple(box))


def copy_bundle_beside(model_file: Path) -> Path:
    """The real hand bundle next to a saved model, where inference.load_classifier looks for it."""
    target = ModelFiles(Path(model_file)).hand_model
    shutil.copyfile(HAND_BUNDLE, target)
    return target


def copy_working_tree(root: Path, skip: tuple = ()) -> Path:
    """The project's files as git lists them (tracked and untracked, not ignored) copied into `root`,
    except paths starting with one of `skip`: the throwaway projects of the DVC tests and benchmarks."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file() and not name.startswith(skip):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    return root
