"""personalisation: k photos per letter of a new signer in training, that signer's other photos scored."""
import numpy as np
import pytest

from asl_pipeline import personalisation
from asl_pipeline.config import DATASET_ORIGIN
from helpers import make_spec, train_params

SPEC = make_spec(("hand_landmarks",), features=("angles",))  # 15 angles and the found flag


def clusters(centres: np.ndarray, per_class: int, seed: int, spread: float = 0.1):
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(0, spread, (per_class, len(c))) for c in centres]).astype(np.float32)
    x = np.concatenate([x, np.ones((len(x), 1), np.float32)], axis=1)  # found
    return x, np.repeat(np.arange(len(centres)), per_class)


@pytest.mark.parametrize("name, signer", [("hand3_a_dif_seg_1_cropped.jpg", "hand3"), ("A/user4_A7.jpg", "user4"),
                                          ("C:\\photos\\B\\hand10_b.jpg", "hand10")])
def test_the_signer_comes_from_the_file_name(name, signer):
    assert personalisation.signer_of(name) == signer


def test_a_file_name_without_a_signer_is_an_error_naming_it():
    with pytest.raises(ValueError, match="A1.jpg"):
        personalisation.signer_of("data/A/A1.jpg")


def test_a_draw_takes_k_per_letter_and_leaves_each_letter_one_to_score():
    labels = np.array([0, 0, 0, 1, 1, 2])
    drawn = personalisation.teach_draw(labels, 2, np.random.default_rng(0))
    assert sorted(labels[drawn].tolist()) == [0, 0, 1]  # letter 1 keeps one photo, letter 2 its only one
    np.testing.assert_array_equal(drawn, personalisation.teach_draw(labels, 2, np.random.default_rng(0)))


def test_one_photo_per_letter_of_a_new_signer_lifts_that_signer():
    """A new signer whose every letter sits off the training signer's: the head misreads them until one photo
    per letter of theirs joins training."""
    centres = np.random.default_rng(1).normal(0, 1, (3, 15))
    train_x, train_y = clusters(centres, 30, seed=2)
    shifted = np.roll(centres, 1, axis=0) * 0.5 + centres * 0.5 + 0.6  # halfway to the next letter, and off
    signer_x, signer_y = clusters(shifted, 4, seed=3, spread=0.05)
    arrays = {"hand": train_x, "origins": np.full(len(train_x), DATASET_ORIGIN)}
    scores = personalisation.personalisation(arrays, train_y, {"signer": (signer_x, signer_y)}, SPEC,
                                             train_params(head="svm", svm_c=10.0, extra_weight=3), 3,
                                             ks=(0, 1), draws=2)
    by_k = {score.k: score for score in scores}
    assert by_k[0].accuracy < 0.5 < 0.9 < by_k[1].accuracy
    assert by_k[1].scored == 9  # 12 photos, 3 taught
