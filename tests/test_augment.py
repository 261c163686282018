"""augment: reshaped copies of training hands (viewpoint, bone lengths, palm, joint noise) in landmark space."""
import numpy as np
import pytest

from asl_pipeline import augment, training
from asl_pipeline.config import DATASET_ORIGIN
from asl_pipeline.featurizers import hand_vector, normalized_keypoints
from helpers import make_hand, make_spec, synthetic_landmarks, train_params

SPEC = make_spec(("hand_landmarks",))


def vectors(count: int = 4) -> np.ndarray:
    rows = [hand_vector(make_hand(synthetic_landmarks(seed)), SPEC) for seed in range(count)]
    return np.stack(rows + [hand_vector(None, SPEC)])  # the last photo shows no hand


def test_copies_are_deterministic_per_seed_and_follow_the_rows():
    rows = vectors()
    first = augment.augmented_copies(rows, SPEC, 3, seed=7)
    assert first.shape == (3 * len(rows), SPEC.hand_dim) and first.dtype == np.float32
    np.testing.assert_array_equal(first, augment.augmented_copies(rows, SPEC, 3, seed=7))
    assert not np.array_equal(first, augment.augmented_copies(rows, SPEC, 3, seed=8))
    # Each copy changes every found hand, and leaves a no-hand row all zeros.
    for copy in np.split(first, 3):
        assert (np.abs(copy[:-1] - rows[:-1]).max(axis=1) > 1e-3).all()
        assert not copy[-1].any()
        assert (copy[:-1, -1] == 1).all()  # still found


def test_a_reshaped_hand_is_normalized_and_close_to_the_original():
    points = normalized_keypoints(make_hand())
    rng = np.random.default_rng(0)
    for _ in range(50):
        new = augment.reshape_hand(points, rng, augment.LandmarkAugmentation())
        np.testing.assert_allclose(new[0], 0, atol=1e-9)
        assert np.linalg.norm(new[1:], axis=1).mean() == pytest.approx(1.0)
        # Small changes only: the middle finger's direction turns by well under 45 degrees, so G stays G (not Q).
        before, after = points[12] - points[0], new[12] - new[0]
        angle = np.degrees(np.arccos(before @ after / np.linalg.norm(before) / np.linalg.norm(after)))
        assert angle < 40


def test_no_change_at_all_gives_the_hand_back():
    points = normalized_keypoints(make_hand())
    still = augment.LandmarkAugmentation(rotation_degrees=0, bone_length=0, palm=0, joint_noise=0)
    np.testing.assert_allclose(augment.reshape_hand(points, np.random.default_rng(0), still), points, atol=1e-9)


def test_copies_rebuild_the_distances_and_angles_from_the_new_keypoints():
    copy = augment.augmented_copies(vectors(1)[:1], SPEC, 1, seed=3)[0]
    points = copy[:63].reshape(21, 3).astype(np.float64)
    rebuilt = hand_vector(make_hand(points), SPEC)
    np.testing.assert_allclose(copy[:-4], rebuilt[:-4], atol=1e-5)  # all groups but the confidence scores


def test_the_confidence_scores_of_a_hand_travel_with_its_copies():
    spec = make_spec(("hand_landmarks",), features=("keypoints", "confidence"))
    row = hand_vector(make_hand(handedness=0.7, presence=0.6, detector_score=0.5), spec)[None]
    np.testing.assert_allclose(augment.augmented_copies(row, spec, 2, seed=0)[:, -4:], [[0.7, 0.6, 0.5, 1.0]] * 2,
                               atol=1e-6)


def test_reshaping_needs_the_keypoints():
    spec = make_spec(("hand_landmarks",), features=("distances",))
    with pytest.raises(ValueError, match="keypoints"):
        augment.augmented_copies(np.zeros((1, spec.hand_dim), np.float32), spec, 1, seed=0)


def test_training_rows_add_copies_and_count_extra_photos_more():
    rows = vectors(3)
    arrays = {"hand": rows, "origins": np.array([DATASET_ORIGIN, "data/my-hand", DATASET_ORIGIN, DATASET_ORIGIN])}
    y = np.array([0, 1, 2, 0])
    x, y_out = training.training_rows(arrays, y, SPEC, train_params(landmark_copies=2, extra_weight=3))
    counted = np.array([0, 1, 1, 1, 2, 3])  # the extra photo three times
    assert len(x) == len(y_out) == 3 * len(counted)
    np.testing.assert_array_equal(x[:6], rows[counted])
    np.testing.assert_array_equal(y_out, np.tile(y[counted], 3))
    # Each count of the extra photo gets reshaped copies of its own, not the same ones again.
    copies_of_extra = x[6:][np.tile(counted, 2) == 1]
    assert len(np.unique(copies_of_extra.round(5), axis=0)) == len(copies_of_extra) == 6
    plain_x, plain_y = training.training_rows(arrays, y, SPEC, train_params())
    np.testing.assert_array_equal(plain_x, rows) and np.testing.assert_array_equal(plain_y, y)
