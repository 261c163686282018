"""featurizers: the hand vector (normalized keypoints, distances, joint angles), the hand crop, and what a
photo without a hand becomes. The geometry tests use synthetic Hands; the detection tests the real bundle.
"""
import dataclasses
import itertools
import math

import numpy as np
import pytest

from asl_pipeline import featurizers, images, inference
from asl_pipeline.config import HAND_FEATURE_GROUPS
from asl_pipeline.featurizers import (GROUP_SIZES, JOINT_ANGLES, Featurizer, Prepared, crop_matrix, hand_crop,
                                      hand_found, hand_vector, joint_angles, normalized_keypoints,
                                      read_as_right_hand)
from asl_pipeline.hands import Hand
from helpers import HAND_BUNDLE, SAMPLE, make_hand, make_spec, needs_bundle, needs_sample, synthetic_landmarks

SPEC = make_spec(("hand_landmarks",))
KEYPOINTS = slice(0, GROUP_SIZES["keypoints"])


def moved(hand: Hand, scale: float = 1.0, shift=(0.0, 0.0, 0.0)) -> Hand:
    """The same hand, scaled about the photo origin and shifted: as if photographed closer and elsewhere."""
    return dataclasses.replace(hand, landmarks=(hand.landmarks * scale + np.float32(shift)).astype(np.float32))


def mirrored(hand: Hand, width: float = 640.0) -> Hand:
    """The hand flipped left-right in a photo `width` pixels wide: a left hand becomes a right one."""
    landmarks = hand.landmarks.copy()
    landmarks[:, 0] = width - landmarks[:, 0]
    return dataclasses.replace(hand, landmarks=landmarks, handedness=1 - hand.handedness)


# ---------------------------------------------------------------- the hand vector

@pytest.mark.parametrize("scale, shift", [(1.0, (-150.0, 90.0, 4.0)), (2.5, (0.0, 0.0, 0.0)), (0.3, (40.0, -7.0, 0.0))])
def test_hand_vector_ignores_where_and_how_big_the_hand_is(scale, shift):
    hand = make_hand()
    np.testing.assert_allclose(hand_vector(moved(hand, scale, shift), SPEC), hand_vector(hand, SPEC), atol=1e-4)


def test_normalized_keypoints_put_the_wrist_at_the_origin_at_unit_mean_distance():
    points = normalized_keypoints(moved(make_hand(), 3.0, (11.0, -5.0, 2.0)))
    assert points.shape == (21, 3)
    np.testing.assert_allclose(points[0], 0, atol=1e-9)
    assert np.linalg.norm(points[1:], axis=1).mean() == pytest.approx(1.0)
    # Orientation stays: the fingers of synthetic_landmarks point up (negative y in the photo).
    assert points[[8, 12, 16], 1].max() < 0


def test_hand_vector_keeps_orientation():
    """Turning the hand changes the vector: G and Q, H and U differ mainly by it."""
    hand = make_hand()
    centre = hand.landmarks[0]
    quarter_turn = (hand.landmarks - centre) @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], np.float32) + centre
    turned = dataclasses.replace(hand, landmarks=quarter_turn.astype(np.float32))
    assert np.abs(hand_vector(turned, SPEC)[KEYPOINTS] - hand_vector(hand, SPEC)[KEYPOINTS]).max() > 0.5


class FakeLandmarker:
    """Finds `mirror_hand` in any photo it is given: the hand of the mirrored photo, for read_as_right_hand."""

    def __init__(self, mirror_hand):
        self.mirror_hand, self.photos = mirror_hand, []

    def detect(self, rgb):
        self.photos.append(rgb)
        return self.mirror_hand


def test_a_left_hand_is_read_from_the_mirrored_photo():
    left = make_hand(handedness=0.1)
    right_twin = mirrored(left)
    photo = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    landmarker = FakeLandmarker(right_twin)
    assert read_as_right_hand(landmarker.detect, photo, left) is right_twin
    np.testing.assert_array_equal(landmarker.photos[0], photo[:, ::-1])  # it looked at the mirrored photo


def test_a_right_hand_or_no_hand_is_read_as_found():
    right, landmarker = make_hand(handedness=0.8), FakeLandmarker(None)
    photo = np.zeros((4, 4, 3), np.uint8)
    assert read_as_right_hand(landmarker.detect, photo, right) is right
    assert read_as_right_hand(landmarker.detect, photo, None) is None
    assert landmarker.photos == []  # no second detection for a right hand


@pytest.mark.parametrize("mirror_handedness, expected", [(0.05, "original"), (0.3, "mirrored"), (None, "original")])
def test_of_a_hand_and_its_mirror_the_more_right_handed_is_read(mirror_handedness, expected):
    """The same choice for a photo and for its mirror image: so both read alike."""
    left = make_hand(handedness=0.2)
    other = None if mirror_handedness is None else make_hand(synthetic_landmarks(1), handedness=mirror_handedness)
    chosen = read_as_right_hand(FakeLandmarker(other).detect, np.zeros((4, 4, 3), np.uint8), left)
    assert chosen is (left if expected == "original" else other)


def test_distances_and_angles_do_not_see_a_mirror():
    left = make_hand(handedness=0.1)
    shape_only = make_spec(("hand_landmarks",), features=("distances", "angles"))
    np.testing.assert_allclose(hand_vector(left, shape_only), hand_vector(mirrored(left), shape_only), atol=1e-5)
    assert np.abs(hand_vector(left, SPEC)[KEYPOINTS] - hand_vector(mirrored(left), SPEC)[KEYPOINTS]).max() > 0.1


@needs_sample
def test_a_photo_and_its_mirror_image_give_the_same_hand_vector_with_mirror_left():
    """Detection on a mirrored photo is not the exact mirror of the original's (the landmark model is not
    mirror-symmetric); reading the left hand from the mirrored photo makes the two vectors identical."""
    photos = [images.load_rgb(SAMPLE / "asl_alphabet_test" / f"{letter}_test.jpg") for letter in "ABLVY"]
    for mirror_left in (True, False):
        featurizer = Featurizer(make_spec(("hand_landmarks",), mirror_left=mirror_left), HAND_BUNDLE.read_bytes())
        gaps = [np.abs(featurizer.prepare(p).hand_vector - featurizer.prepare(p[:, ::-1].copy()).hand_vector).max()
                for p in photos]
        if mirror_left:
            assert max(gaps) == 0
        else:
            assert min(gaps) > 0.01


def finger_points(bend_at_pip: bool) -> np.ndarray:
    """All 21 points on a line, except (if asked) the index finger bent 90 degrees at its PIP joint (6)."""
    points = np.zeros((21, 3))
    points[:, 1] = -np.arange(21)  # a straight line upwards from the wrist
    index = (0, 5, 6, 7, 8)
    points[list(index)] = [[0, 0, 0], [0, -4, 0], [0, -8, 0], [0, -8, 0], [0, -8, 0]]
    points[7] = [3, -8, 0] if bend_at_pip else [0, -12, 0]
    points[8] = [6, -8, 0] if bend_at_pip else [0, -16, 0]
    return points


def test_joint_angles_of_a_straight_finger_are_pi_and_of_a_right_angle_bend_half_pi():
    index_joints = [JOINT_ANGLES.index(triple) for triple in ((0, 5, 6), (5, 6, 7), (6, 7, 8))]
    straight = joint_angles(finger_points(bend_at_pip=False))
    assert straight.shape == (15,)
    np.testing.assert_allclose(straight[index_joints], math.pi, atol=1e-4)
    bent = joint_angles(finger_points(bend_at_pip=True))
    np.testing.assert_allclose(bent[index_joints], [math.pi, math.pi / 2, math.pi], atol=1e-4)
    # A tight fold: the segment doubling back on itself closes the angle to 0.
    folded = finger_points(bend_at_pip=False)
    folded[7] = [0, -4, 0]
    assert joint_angles(folded)[index_joints[1]] == pytest.approx(0, abs=1e-4)
    assert np.all((straight >= 0) & (straight <= math.pi))


def test_joint_angles_ignore_scale_and_rotation():
    points = synthetic_landmarks(3).astype(np.float64)
    turn = np.array([[math.cos(0.7), -math.sin(0.7), 0], [math.sin(0.7), math.cos(0.7), 0], [0, 0, 1]])
    np.testing.assert_allclose(joint_angles(points), joint_angles(2.5 * points @ turn.T + 9), atol=1e-6)


def test_no_hand_gives_zeros_found_flag_included():
    vector = hand_vector(None, SPEC)
    assert vector.shape == (SPEC.hand_dim,) and vector.dtype == np.float32
    assert not vector.any()
    assert hand_found(np.stack([vector, hand_vector(make_hand(), SPEC)])).tolist() == [False, True]


@pytest.mark.parametrize("groups", [g for n in (1, 2, 3) for g in itertools.combinations(HAND_FEATURE_GROUPS, n)],
                         ids=lambda g: "+".join(g))
def test_hand_dim_is_the_vector_length_for_every_feature_subset(groups):
    spec = make_spec(("hand_landmarks",), features=groups)
    hand = make_hand(handedness=0.7, presence=0.6, detector_score=0.5)
    vector = hand_vector(hand, spec)
    assert spec.hand_dim == len(vector) == len(hand_vector(None, spec))
    assert spec.hand_dim == sum(GROUP_SIZES[g] for g in groups) + 1
    assert GROUP_SIZES == {"keypoints": 63, "distances": 210, "angles": 15, "confidence": 3}
    assert vector[-1] == 1.0  # the found flag closes the vector
    if groups[-1] == "confidence":  # handedness, presence, detector score, just before it
        np.testing.assert_allclose(vector[-4:-1], [0.7, 0.6, 0.5], atol=1e-6)
    assert np.isfinite(vector).all()


def test_distances_are_between_normalized_keypoints():
    hand = make_hand()
    spec = make_spec(("hand_landmarks",), features=("distances",))
    distances = hand_vector(hand, spec)[:GROUP_SIZES["distances"]]
    points = normalized_keypoints(hand)
    pairs = list(itertools.combinations(range(21), 2))
    for k in (0, 19, 100, 209):
        i, j = pairs[k]
        assert distances[k] == pytest.approx(np.linalg.norm(points[i] - points[j]), rel=1e-5)


def test_feature_spec_round_trips_through_its_dict():
    spec = make_spec(("backbone", "hand_landmarks"), image_size=48, crop_to_hand=True, features=("angles",),
                     fallback_min_presence=None, mirror_left=True)
    assert featurizers.FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.uses_backbone and spec.uses_hands
    cropping_only = make_spec(("backbone",), crop_to_hand=True)
    assert cropping_only.uses_hands  # hands are detected to crop, though their landmarks are no features


# ---------------------------------------------------------------- the hand crop

def marked_photo(box_centre=(230, 80), side: int = 40, shape=(200, 320)) -> np.ndarray:
    """A black photo with a white square of `side` pixels centred on `box_centre` (x, y)."""
    photo = np.zeros(shape + (3,), np.uint8)
    x, y = box_centre
    photo[y - side // 2:y + side // 2, x - side // 2:x + side // 2] = 255
    return photo


def centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def test_hand_crop_puts_the_hands_box_in_the_middle_upright():
    photo = marked_photo()
    # The box is the landmark model's (rotated) crop; the backbone's crop stays upright, at the longest side.
    hand = make_hand(box=(230.0, 80.0, 80.0, 60.0, 0.8))
    crop = hand_crop(photo, hand, 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    white = crop[..., 0] > 127
    np.testing.assert_allclose(centroid(white), [15.5, 15.5], atol=0.6)
    # 40 of 80 photo pixels: half the crop, upright (a square, not a turned diamond).
    assert 15 <= white[16].sum() <= 17 and 15 <= white[:, 16].sum() <= 17
    assert white[9:23, 9:23].all()
    assert not white[:7].any() and not white[-7:].any() and not white[:, :7].any() and not white[:, -7:].any()


def test_crop_matrix_maps_the_box_centre_to_the_crop_centre_and_its_side_to_the_crop():
    matrix = crop_matrix((100.0, 50.0, 30.0, 60.0, 1.2), 64)
    centre = matrix @ [100.0, 50.0, 1.0]
    np.testing.assert_allclose(centre, [32, 32])
    np.testing.assert_allclose(matrix @ [70.0, 20.0, 1.0], [0, 0], atol=1e-9)  # the corner of the 60-pixel square
    np.testing.assert_allclose(matrix[:, :2], np.eye(2) * 64 / 60)


def test_hand_crop_near_the_edge_pads_with_black():
    photo = np.full((100, 100, 3), 200, np.uint8)
    crop = hand_crop(photo, make_hand(box=(0.0, 0.0, 50.0, 50.0, 0.0)), 20)
    assert not crop[:8, :8].any() and (crop[12:, 12:] == 200).all()


def test_photo_heatmap_puts_a_crop_heatmap_back_on_the_hand():
    photo = np.zeros((200, 320, 3), np.uint8)
    box = (230.0, 80.0, 64.0, 64.0, 0.4)
    spec = make_spec(("backbone",), image_size=32, crop_to_hand=True)
    prepared = Prepared(None, None, make_hand(box=box))
    crop_map = np.zeros((4, 4), np.float32)
    crop_map[0, 1] = 1.0  # top row, second column: up and left of the crop centre
    on_photo = inference._photo_heatmap(crop_map, prepared, photo, spec)
    assert on_photo.shape == (200, 320)
    hot = on_photo > 0.5
    # The crop spans 198..262 x 48..112; cell (0, 1) of 4 covers its top quarter, second quarter across.
    x, y = centroid(hot)
    assert 198 + 16 <= x <= 198 + 32 and 48 <= y <= 48 + 16, (x, y)
    assert not on_photo[:, :190].any() and not on_photo[120:].any() and not on_photo[:, 270:].any()
    assert on_photo.max() <= 1 and on_photo.min() >= 0


def test_photo_heatmap_is_unchanged_without_a_crop():
    heatmap = np.random.default_rng(0).uniform(0, 1, (4, 4)).astype(np.float32)
    photo = np.zeros((50, 60, 3), np.uint8)
    cropping = make_spec(("backbone",), crop_to_hand=True)
    assert inference._photo_heatmap(heatmap, Prepared(None, None, None), photo, cropping) is heatmap
    whole = make_spec(("backbone", "hand_landmarks"))
    assert inference._photo_heatmap(heatmap, Prepared(None, None, make_hand()), photo, whole) is heatmap


# ---------------------------------------------------------------- real detection

@pytest.fixture(scope="module")
def bundle():
    return HAND_BUNDLE.read_bytes()


def test_a_spec_that_detects_hands_needs_the_bundle():
    with pytest.raises(ValueError, match="bundle"):
        Featurizer(make_spec(("backbone",), crop_to_hand=True), None)
    Featurizer(make_spec(("backbone",)), None)  # the backbone alone needs none


@needs_bundle
@pytest.mark.parametrize("featurizers, crop", [(("hand_landmarks",), False), (("backbone", "hand_landmarks"), True)])
def test_a_photo_without_a_hand_prepares_to_zeros(bundle, featurizers, crop):
    spec = make_spec(featurizers, image_size=32, crop_to_hand=crop)
    gray = np.full((120, 160, 3), 128, np.uint8)
    prepared = Featurizer(spec, bundle).prepare(gray)
    assert prepared.hand is None
    assert prepared.hand_vector.shape == (spec.hand_dim,) and not prepared.hand_vector.any()
    assert prepared.hand_vector[-1] == 0  # the found flag
    if spec.uses_backbone:  # nothing to crop: the backbone gets the whole photo
        np.testing.assert_array_equal(prepared.image, gray)
    else:
        assert prepared.image is None


@needs_sample
def test_a_photo_with_a_hand_prepares_to_its_crop_and_vector(bundle):
    from asl_pipeline import images

    spec = make_spec(("backbone", "hand_landmarks"), image_size=48, crop_to_hand=True)
    photo = images.load_rgb(SAMPLE / "asl_alphabet_train" / "A" / "A1.jpg")
    prepared = Featurizer(spec, bundle).prepare(photo)
    assert prepared.hand is not None and prepared.image.shape == (48, 48, 3)
    assert prepared.hand_vector[-1] == 1 and prepared.hand_vector.shape == (spec.hand_dim,)
    np.testing.assert_array_equal(prepared.image, hand_crop(photo, prepared.hand, 48))
    np.testing.assert_allclose(prepared.hand_vector, hand_vector(prepared.hand, spec))


@needs_bundle
def test_classifier_on_a_photo_without_a_hand_still_gives_probabilities(tmp_path, bundle):
    from asl_pipeline.model import assemble, build_head
    from helpers import copy_bundle_beside
    from test_gradcam import save_tiny

    featurizers = ("hand_landmarks",)
    spec = make_spec(featurizers)
    network = assemble(spec, None, build_head(spec.hand_dim, 3, hidden_units=0, dropout=0.0))
    model_file = save_tiny(network, tmp_path, featurizers)
    copy_bundle_beside(model_file)
    classifier = inference.load_classifier(model_file)
    assert classifier.spec == spec and classifier.classes == ["A", "B", "C"]
    gray = np.full((120, 160, 3), 128, np.uint8)
    [analysis] = classifier.analyse([gray])
    assert analysis.hand_found is False and analysis.hand is None
    assert analysis.heatmap is None  # no backbone, no Grad-CAM
    assert analysis.probabilities.shape == (3,) and analysis.probabilities.sum() == pytest.approx(1, abs=1e-5)
    # All-zero input: the untrained head's bias alone, the same for every such photo.
    [again] = classifier.analyse([np.full((90, 90, 3), 30, np.uint8)])
    np.testing.assert_allclose(again.probabilities, analysis.probabilities, atol=1e-6)


@needs_bundle
@needs_sample
def test_features_computed_twice_are_bit_identical(bundle):
    """Re-runs on one machine give the same bytes: parallel decoding and detection keep no state that leaks
    between photos, and the order is the manifest's."""
    import keras

    from asl_pipeline import backbones, features

    root = SAMPLE / "asl_alphabet_train"
    paths = [str(p.relative_to(root)) for p in sorted(root.glob("[ABLY]/*.jpg"))[::12]]
    spec = make_spec(("backbone", "hand_landmarks"))
    keras.utils.set_random_seed(0)
    embedding = features.embedder(backbones.build_backbone("resnet50", spec.image_size, None), "resnet50",
                                  spec.image_size)

    def run():
        featurizer = Featurizer(spec, bundle)  # a fresh one: no state carried over from the first run
        arrays, _ = features.featurize_split(featurizer, features.block_function(spec, embedding), paths,
                                             ["A"] * len(paths), root, batch_size=4)
        return arrays

    first, second = run(), run()
    assert featurizers.hand_found(first["hand"]).sum() >= len(paths) // 2  # the photos do show hands
    for key in ("backbone", "hand"):
        assert first[key].tobytes() == second[key].tobytes(), key
