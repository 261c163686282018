"""Keypoint attribution for landmarks-only models: the feature -> keypoint map, the weights on tiny heads, the
thumb on real A/S photos, and the pictures explain, predict and the demo make of them."""
import numpy as np
import pytest
from PIL import Image

from asl_pipeline import cli, drawing, explain, explainers, images, serve, training
from asl_pipeline.config import HAND_FEATURE_GROUPS
from asl_pipeline.featurizers import (GROUP_SIZES, JOINT_ANGLES, KEYPOINT_PAIRS, Featurizer, feature_keypoints,
                                      vector_from_points)
from asl_pipeline.inference import load_classifier
from asl_pipeline.keypoint_attribution import KeypointAttribution
from asl_pipeline.model import assemble, build_head
from helpers import (HAND_BUNDLE, SAMPLE, copy_bundle_beside, make_hand, make_spec, needs_bundle, needs_sample,
                     synthetic_landmarks, train_params)
from test_gradcam import EXPECTED, PARAMS, VARIANT, model, project, save_tiny  # noqa: F401 (model, project: fixtures)

THUMB = [1, 2, 3, 4]
FINGERS = {"thumb": THUMB, "index": [5, 6, 7, 8], "middle": [9, 10, 11, 12], "ring": [13, 14, 15, 16],
           "little": [17, 18, 19, 20]}
LANDMARKS_ONLY = ("hand_landmarks",)


def test_feature_keypoints_shares_every_feature_over_its_keypoints():
    mapping = feature_keypoints(HAND_FEATURE_GROUPS)
    spec = make_spec(LANDMARKS_ONLY, features=HAND_FEATURE_GROUPS)
    assert mapping.shape == (spec.hand_dim, 21)
    sizes = [GROUP_SIZES[group] for group in HAND_FEATURE_GROUPS] + [1]
    keypoints, distances, angles, confidence, found = np.split(mapping, np.cumsum(sizes)[:-1])
    np.testing.assert_allclose(np.concatenate([keypoints, distances, angles]).sum(axis=1), 1)
    assert not confidence.any() and not found.any()  # they describe no keypoint
    assert (mapping.sum(axis=0) > 0).all()  # every keypoint gets some feature
    assert keypoints[3 * 4 + 2, 4] == 1  # z of the thumb tip
    assert distances[KEYPOINT_PAIRS.index((0, 4))][[0, 4]].tolist() == [0.5, 0.5]
    assert angles[JOINT_ANGLES.index((2, 3, 4))].tolist() == np.eye(21)[3].tolist()  # all to the vertex
    for features in (("angles",), ("keypoints", "confidence"), ("distances", "angles")):
        assert feature_keypoints(features).shape[0] == make_spec(LANDMARKS_ONLY, features=features).hand_dim


def test_feature_keypoints_follows_vector_from_points():
    """Moving one keypoint changes every feature the map gives (partly) to it, and of the others only the
    angles it is an arm of (given to their vertex)."""
    spec = make_spec(LANDMARKS_ONLY, features=HAND_FEATURE_GROUPS)
    points = synthetic_landmarks(3).astype(np.float64) / 100
    base = vector_from_points(points, spec, (0.9, 0.9, 0.9))
    mapping = feature_keypoints(HAND_FEATURE_GROUPS)
    angle_block = np.zeros(spec.hand_dim, bool)
    angle_block[63 + len(KEYPOINT_PAIRS):63 + len(KEYPOINT_PAIRS) + len(JOINT_ANGLES)] = True
    for k in (0, 3, 8, 20):
        moved = points.copy()
        moved[k] += (0.03, -0.02, 0.01)
        changed = np.abs(vector_from_points(moved, spec, (0.9, 0.9, 0.9)) - base) > 1e-6
        assert changed[mapping[:, k] > 0].all(), k
        assert not (changed & (mapping[:, k] == 0) & ~angle_block).any(), k


def linear_landmarks_model(spec, weight_rows):
    """A landmarks-only model whose class 0 logit is the sum of the given hand-vector entries."""
    head = build_head(spec.hand_dim, 3, hidden_units=0, dropout=0.0)
    weights = np.zeros((spec.hand_dim, 3), np.float32)
    weights[weight_rows, 0] = 1.0
    weights[:, 1] = -weights[:, 0]
    head.get_layer("logits").set_weights([weights, np.zeros(3, np.float32)])
    return assemble(spec, None, head)


def test_mlp_attribution_lands_on_the_keypoints_the_class_reads():
    spec = make_spec(LANDMARKS_ONLY, features=("keypoints", "angles"))
    thumb_coordinates = [3 * k + d for k in THUMB for d in range(3)]
    network = linear_landmarks_model(spec, thumb_coordinates)
    hands = np.random.default_rng(0).normal(0, 1, (4, spec.hand_dim)).astype(np.float32)
    hands[:, -1] = [1, 1, 1, 0]  # the last row: no hand found
    weights, probabilities = KeypointAttribution(network, spec.hands.features).weights(hands, [0, 0, 2, 0])
    assert weights.shape == (4, 21) and (weights >= 0).all()
    np.testing.assert_allclose(weights[:2, THUMB].sum(axis=1), 1, rtol=1e-5)  # only the thumb counts for 0
    np.testing.assert_allclose(weights[:2].sum(axis=1), 1, rtol=1e-5)
    assert not weights[2].any()  # class 2 reads nothing: no gradient, no weight (and no NaN)
    assert not weights[3].any()  # no hand: nothing to attribute
    np.testing.assert_allclose(probabilities, network.predict({"hand": hands}, verbose=0), atol=1e-5)


def fit_svm_model(spec, x, y, classes):
    head, _ = training.train_head(x, y, x[:0], y[:0], classes, train_params(head="svm", svm_c=100.0))
    return assemble(spec, None, head)


def test_svm_attribution_has_gradients_both_ways():
    """Both the runner-up decision (the default) and the tie-breaking confidence give non-zero gradients."""
    spec = make_spec(LANDMARKS_ONLY, features=("angles",))
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.7, (20, spec.hand_dim)) for c in range(3)]).astype(np.float32)
    x[:, -1] = 1
    network = fit_svm_model(spec, x, np.repeat(np.arange(3), 20), 3)
    pairwise, probabilities = KeypointAttribution(network, spec.hands.features).weights(x[::7])
    confidence, _ = KeypointAttribution(network, spec.hands.features, versus_runner_up=False).weights(x[::7])
    for weights in (pairwise, confidence):
        np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-5)
        assert set(np.flatnonzero(weights.sum(axis=0))) <= {b for _, b, _ in JOINT_ANGLES}  # angle vertices only
    assert not np.allclose(pairwise, confidence)
    np.testing.assert_allclose(probabilities, network.predict({"hand": x[::7]}, verbose=0), atol=1e-5)


# The behaviour the issue asks for, on real landmarks of the Kaggle sample. One SVM like the pipeline's
# (its hand features, svm head, C 100, mirrored left hands) on 40 photos each of the closed-fist letters A, S,
# E, M, N, T (which differ mostly by where the thumb is) and of U and V (which differ by the index and middle
# fingers), explained on the next 15 photos of A, S, U and V. Measured at commit time (15 held-out photos):
#   thumb share (keypoints 1-4, 4/21 = 0.19 if spread evenly): A 0.33, S 0.26; U 0.20, V 0.18
#   index + middle on U/V: 0.50 / 0.52 by the runner-up decision, 0.41 / 0.43 by the confidence term
# The thresholds below leave ~0.05 of margin to those numbers.
TRAIN, HELD_OUT = 40, 15
LETTERS = "ASEMNTUV"


@pytest.fixture(scope="module")
def sample_hands():
    spec = make_spec(LANDMARKS_ONLY, features=("keypoints", "distances", "angles"), mirror_left=True)
    featurizer = Featurizer(spec, HAND_BUNDLE.read_bytes())
    vectors = {}
    for letter in LETTERS:
        files = sorted((SAMPLE / "asl_alphabet_train" / letter).glob("*.jpg"))
        count = TRAIN + (HELD_OUT if letter in "ASUV" else 0)
        rows = np.stack([featurizer.prepare(images.load_rgb(path)).hand_vector for path in files[:count + 10]])
        vectors[letter] = rows[rows[:, -1] > 0.5][:count]  # photos where a hand was found
    x = np.concatenate([vectors[letter][:TRAIN] for letter in LETTERS])
    y = np.concatenate([np.full(len(vectors[letter][:TRAIN]), i) for i, letter in enumerate(LETTERS)])
    return spec, fit_svm_model(spec, x, y, len(LETTERS)), {k: v[TRAIN:] for k, v in vectors.items() if len(v) > TRAIN}


def finger_shares(weights):
    return {finger: weights[:, keypoints].sum(axis=1).mean() for finger, keypoints in FINGERS.items()}


@needs_sample
def test_the_thumb_decides_a_from_s(sample_hands):
    spec, network, held_out = sample_hands
    attribution = KeypointAttribution(network, spec.hands.features)
    shares = {}
    for letter in "ASUV":
        weights, probabilities = attribution.weights(held_out[letter])
        assert (probabilities.argmax(axis=1) == LETTERS.index(letter)).mean() >= 0.8, letter
        shares[letter] = finger_shares(weights)
    thumb_as = np.mean([shares[letter]["thumb"] for letter in "AS"])
    thumb_uv = np.mean([shares[letter]["thumb"] for letter in "UV"])
    assert thumb_as > 0.24, shares  # 4/21 = 0.19 spread evenly; measured 0.29
    assert thumb_as > thumb_uv + 0.05, shares  # measured 0.29 against 0.19
    for letter in "UV":  # U and V are told apart by the index and middle fingers, not the thumb
        assert shares[letter]["index"] + shares[letter]["middle"] > 2 * shares[letter]["thumb"], shares


@needs_sample
def test_runner_up_decision_tells_u_from_v_better_than_the_confidence_term(sample_hands):
    """Why the svm head is explained by its decision against the runner-up: the confidence term sums the
    class's decisions against every other letter, which blurs the two fingers that tell U from V."""
    spec, network, held_out = sample_hands
    by_pair = KeypointAttribution(network, spec.hands.features)
    by_confidence = KeypointAttribution(network, spec.hands.features, versus_runner_up=False)
    for letter in "UV":
        pair = finger_shares(by_pair.weights(held_out[letter])[0])
        confidence = finger_shares(by_confidence.weights(held_out[letter])[0])
        assert pair["index"] + pair["middle"] > confidence["index"] + confidence["middle"] + 0.04, (pair, confidence)


def test_draw_hand_weights_colours_the_joints_and_says_when_no_hand():
    photo = np.full((400, 400, 3), 90, np.uint8)
    hand = make_hand()
    weights = np.full(21, 0.02)
    weights[4] = 0.6
    drawn = drawing.draw_hand_weights(photo, hand, weights / weights.sum())
    assert drawn.shape == photo.shape and drawn.dtype == np.uint8
    x, y = np.round(hand.landmarks[4, :2]).astype(int)
    assert drawn[y, x].tolist() == drawing._weight_colours(np.array([1.0]))[0].tolist()  # the heaviest: yellow
    x, y = np.round(hand.landmarks[20, :2]).astype(int)  # the little finger's tip, far from the thumb's
    assert drawn[y, x].tolist() == drawing._weight_colours(np.array([0.02 / 0.6]))[0].tolist()
    assert not np.array_equal(drawn, drawing.draw_hand(photo, hand))
    for no_hand in ((None, weights), (hand, np.zeros(21))):
        np.testing.assert_array_equal(drawing.draw_hand_weights(photo, *no_hand), drawing.draw_hand(photo, no_hand[0]))


def landmarks_model_file(folder):
    spec = make_spec(LANDMARKS_ONLY)
    network = linear_landmarks_model(spec, [3 * k + d for k in THUMB for d in range(3)])
    model_file = save_tiny(network, folder, LANDMARKS_ONLY)
    copy_bundle_beside(model_file)
    return model_file


@needs_bundle
def test_explain_stage_colours_the_joints_of_a_landmarks_model(project, monkeypatch):  # noqa: F811
    variant = project.variant(VARIANT)
    landmarks_model_file(variant.model_dir)
    drawn = {}
    monkeypatch.setattr(explain, "save_titled_overlay", lambda path, rgb, title: drawn.update({path.name: rgb}))
    calls = []
    real = drawing.draw_hand_weights
    monkeypatch.setattr(drawing, "draw_hand_weights", lambda *args: calls.append(args) or real(*args))
    summary = explain.explain_test_set(project, variant, PARAMS)
    assert set(drawn) == EXPECTED - {"grid.png"} and summary.written == 3
    assert summary.out_dir == variant.plots / "explain"
    assert all(rgb.shape == (40, 48, 3) for rgb in drawn.values())  # one panel: the (weighted) skeleton
    assert len(calls) == 3 and all(weights.shape == (21,) for _, _, weights in calls)


@needs_sample
def test_predict_and_demo_show_the_weighted_joints_of_a_landmarks_model(tmp_path, capsys):
    model_file = landmarks_model_file(tmp_path / "models")
    photo = SAMPLE / "asl_alphabet_test" / "A_test.jpg"
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(wall)
    out = tmp_path / "out"
    assert cli.main(["predict", str(photo), str(wall), "--model", str(model_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}_{kind}" for stem in ("A_test", "wall") for kind in ("hand.png", "keypoints.png", "prediction.txt")]
    with Image.open(out / "A_test_keypoints.png") as weighted, Image.open(out / "A_test_hand.png") as plain:
        assert weighted.size == plain.size and np.abs(np.asarray(weighted, int) - np.asarray(plain, int)).max() > 100
    with Image.open(out / "wall_keypoints.png") as weighted, Image.open(out / "wall_hand.png") as plain:
        np.testing.assert_array_equal(np.asarray(weighted), np.asarray(plain))  # "no hand found"
    out = tmp_path / "quick"
    assert cli.main(["predict", str(photo), "--model", str(model_file), "--out", str(out), "--no-heatmap"]) == 0
    assert [p.name for p in out.iterdir()] == ["A_test_prediction.txt"]

    classifier = load_classifier(model_file)
    assert classifier._explainer is not None
    answer = serve.Demo(classifier).classify(photo.read_bytes())
    assert answer.heatmap is None and answer.keypoints.shape == answer.skeleton.shape == (200, 200, 3)
    shown = []

    class Page:  # the few Streamlit calls show_prediction makes
        def columns(self, spec):
            return [self] * (spec if isinstance(spec, int) else len(spec))

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

        def image(self, picture, caption, **kwargs):
            shown.append(caption)

        metric = progress = warning = lambda self, *args, **kwargs: None

    serve.show_prediction(Page(), answer)
    assert shown == ["Hand landmarks the model saw", f"Which joints decided {answer.label}"]


def test_explainer_for_picks_grad_cam_for_a_backbone_model():
    from test_gradcam import tiny_classifier

    network = tiny_classifier()
    explained = explainers.explainer_for(network, make_spec(("backbone",)))(
        {"images": np.zeros((1, 32, 32, 3), np.float32)})
    assert explained.heatmaps.shape[0] == 1 and explained.keypoint_weights is None
    assert explained.probabilities.shape == (1, 3)
