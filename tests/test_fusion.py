"""Fusion of the backbone and hand-landmark blocks, the SVM head and the kernel head.

The assembled model takes a dict of inputs; its head reads the blocks side by side in the order backbone,
hand, the same order features.head_input builds the training rows in. The svm head is a fitted scikit-learn
SVC rebuilt from Keras layers, so it saves, loads in safe mode and runs Grad-CAM like the mlp head.
"""
import keras
import numpy as np
import pytest
from sklearn.svm import SVC

from asl_pipeline import features, gradcam, model, training
from asl_pipeline.config import ModelFiles
from asl_pipeline.errors import PipelineError
from helpers import make_spec, train_params
from test_model_stages import FakeLive, class_images, conv_backbone

SIZE = 32
FUSED = make_spec(("backbone", "hand_landmarks"), image_size=SIZE)
HANDS_ONLY = make_spec(("hand_landmarks",), image_size=SIZE, features=("angles",))  # hand_dim 16


def clusters(num_classes: int, per_class: int, dim: int = 10, spread: float = 1.0, seed: int = 0):
    """Gaussian clusters, one per class, on columns whose scales span four orders of magnitude."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, (num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    scales = 10.0 ** rng.uniform(-2, 2, dim)
    x = (centres[labels] + rng.normal(0, spread, (len(labels), dim))) * scales
    order = rng.permutation(len(labels))
    return x[order].astype("float32"), labels[order]


def hand_vectors(count: int, spec=FUSED, seed: int = 0) -> np.ndarray:
    """Plausible hand vectors: features around 1, the scalars in [0, 1], the found flag set."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(1, 0.3, (count, spec.hand_dim)).astype("float32")
    vectors[:, -4:-1] = rng.uniform(0, 1, (count, 3))
    vectors[:, -1] = 1
    return vectors


def scores_of(head: keras.Model, x: np.ndarray) -> np.ndarray:
    """The head's class scores just before its softmax (the layer named logits)."""
    return keras.Model(head.inputs, head.get_layer("logits").output).predict(x, verbose=0)


def fit_svc(x, y, c: float = 10.0):
    """The SVC as training._train_svm_head fits it: on features standardized with the training statistics."""
    mean, variance = x.mean(axis=0), x.var(axis=0)
    standardized = (x - mean) / np.maximum(np.sqrt(variance), keras.config.epsilon())
    return SVC(C=c, kernel="rbf", gamma="scale").fit(standardized, y), mean, variance, standardized


# ---------------------------------------------------------------- fusion

@pytest.fixture(scope="module")
def backbone():
    return conv_backbone(SIZE)  # 16 pooled features


def test_fused_model_takes_images_and_hand_and_its_head_reads_both_blocks(backbone):
    width = backbone.output_shape[-1] + FUSED.hand_dim
    head = model.build_head(width, 3, hidden_units=0, dropout=0.0)
    fused = model.assemble(FUSED, backbone, head)
    assert set(model.input_names(fused)) == {"images", "hand"}
    assert fused.get_layer("head").input_shape[-1] == width == 16 + 63 + 210 + 15 + 4
    out = fused.predict({"images": class_images([0, 1], seed=1), "hand": hand_vectors(2)}, verbose=0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)

    alone = model.assemble(make_spec(("backbone",)), backbone, model.build_head(16, 3, 0, 0.0))
    assert model.input_names(alone) == ("images",)
    landmarks = model.assemble(HANDS_ONLY, None, model.build_head(HANDS_ONLY.hand_dim, 3, 0, 0.0))
    assert model.input_names(landmarks) == ("hand",)
    assert landmarks.get_layer("head").input_shape[-1] == 16


def test_head_input_concatenates_backbone_then_hand():
    backbone_block = np.arange(6, dtype=np.float32).reshape(2, 3)
    hand_block = -np.arange(8, dtype=np.float32).reshape(2, 4)
    arrays = {"hand": hand_block, "backbone": backbone_block, "labels": np.array(["A", "B"])}
    expected = np.hstack([backbone_block, hand_block])
    np.testing.assert_array_equal(features.head_input(arrays, FUSED), expected)
    # Whatever order a spec lists them in: the fixed FEATURIZERS order decides.
    listed_backwards = make_spec(("hand_landmarks", "backbone"))
    np.testing.assert_array_equal(features.head_input(arrays, listed_backwards), expected)
    np.testing.assert_array_equal(features.head_input(arrays, make_spec(("backbone",))), backbone_block)
    np.testing.assert_array_equal(features.head_input(arrays, HANDS_ONLY), hand_block)


def test_fused_model_joins_the_blocks_as_head_input_does(backbone):
    """A head trained on head_input rows gives the same answer inside the assembled model: the two join the
    blocks in the same order (swapped, the head would read hand columns as backbone features)."""
    images, hand = class_images([0, 1, 2, 0], seed=2), hand_vectors(4, seed=2)
    embedding = features.embedder(backbone, FUSED.backbone, SIZE)
    blocks = features.block_function(FUSED, embedding)({"images": images, "hand": hand})
    arrays = {name: np.asarray(value) for name, value in blocks.items()}
    assert set(arrays) == {"backbone", "hand"}
    np.testing.assert_array_equal(arrays["hand"], hand)
    rows = features.head_input(arrays, FUSED)
    keras.utils.set_random_seed(0)
    head = model.build_head(rows.shape[1], 3, hidden_units=8, dropout=0.0, feature_mean=rows.mean(axis=0),
                            feature_variance=rows.var(axis=0) + 1)
    fused = model.assemble(FUSED, backbone, head)
    expected = head.predict(rows, verbose=0)
    np.testing.assert_allclose(fused.predict({"images": images, "hand": hand}, verbose=0), expected, atol=1e-5)
    swapped = np.hstack([arrays["hand"], arrays["backbone"]])  # same width, the other order
    assert np.abs(head.predict(swapped, verbose=0) - expected).max() > 1e-3


@pytest.mark.parametrize("head_kind", ["mlp", "svm", "kernel"])
def test_the_heads_standardize_layer_holds_the_training_statistics(head_kind):
    x, y = clusters(3, 30, dim=12)
    x[:, -1] = 1.0  # a constant column, like the found flag when every training photo shows a hand
    training.seed_everything(0)
    head, _ = training.train_head(x, y, x[:0], y[:0], 3, train_params(head=head_kind, epochs=2))
    layer = head.get_layer("standardize")
    np.testing.assert_allclose(np.ravel(layer.mean), x.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.ravel(layer.variance), x.var(axis=0), rtol=1e-3, atol=1e-6)
    standardized = keras.ops.convert_to_numpy(layer(x))
    # Each column on its own: columns 1e-2 to 1e2 apart come out alike; the constant one comes out zero.
    np.testing.assert_allclose(standardized[:, :-1].mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(standardized[:, :-1].std(axis=0), 1, atol=1e-2)
    np.testing.assert_allclose(standardized[:, -1], 0, atol=1e-6)


# ---------------------------------------------------------------- the SVM head

def test_svm_head_learns_separable_features():
    x, y = clusters(3, 60, seed=1)
    live = FakeLive()
    logger = training.LiveLogger(live)
    head, summary = training.train_head(x[:120], y[:120], x[120:], y[120:], 3, train_params(head="svm"), [logger])
    assert (head.predict(x[120:], verbose=0).argmax(axis=1) == y[120:]).mean() > 0.9
    assert summary["val_accuracy"] > 0.9 and summary["accuracy"] > 0.9
    assert summary["epochs_run"] == summary["best_epoch"] == 1  # one step, logged as one epoch
    assert len(logger.history) == live.steps == 1
    assert set(logger.history[0]) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}
    assert [layer.name for layer in head.layers][-2:] == ["logits", "probabilities"]
    probabilities = head.predict(x[:5], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_svm_head_scores_rank_classes_as_scikit_learns_svc():
    """Four overlapping classes: the one-vs-one pairs, their dual coefficients and the vote all matter."""
    x, y = clusters(4, 50, spread=2.0, seed=2)
    svc, mean, variance, standardized = fit_svc(x[:140], y[:140], c=3.0)
    assert len(set(svc.n_support_)) > 1  # classes with different numbers of support vectors
    head = model.svm_head(svc, 4, mean, variance)
    theirs = svc.decision_function((x - mean) / np.sqrt(variance))
    ours = scores_of(head, x)
    assert ours.shape == theirs.shape == (200, 4)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.99
    assert (head.predict(x, verbose=0).argmax(axis=1) == svc.predict((x - mean) / np.sqrt(variance))).mean() >= 0.99
    close = np.abs(ours - theirs).max(axis=1) < 1e-3
    assert close.mean() >= 0.99, np.abs(ours - theirs).max(axis=1)
    assert not (theirs.argmax(axis=1) == y).all()  # overlapping: a non-trivial ranking was reproduced


def test_two_class_svm_head_predicts_as_scikit_learns_svc():
    """With two classes scikit-learn flips the signs of dual_coef_ and intercept_; the head must not."""
    x, y = clusters(2, 50, spread=2.0, seed=4)
    svc, mean, variance, standardized = fit_svc(x[:80], y[:80])
    head = model.svm_head(svc, 2, mean, variance)
    theirs = svc.predict((x - mean) / np.sqrt(variance))
    assert (head.predict(x, verbose=0).argmax(axis=1) == theirs).mean() >= 0.99
    assert (theirs == y).mean() > 0.8


def test_svm_head_needs_every_class():
    x, y = clusters(3, 20)
    svc, mean, variance, _ = fit_svc(x[y < 2], y[y < 2])
    with pytest.raises(PipelineError, match="3 classes"):
        model.svm_head(svc, 3, mean, variance)


@pytest.fixture(scope="module")
def fused_svm(backbone):
    """The backbone and hand blocks of colour-coded class images, an SVC on them, assembled."""
    labels = np.tile(np.arange(3), 20)
    images, hand = class_images(labels, seed=5), hand_vectors(len(labels), seed=5)
    blocks = features.block_function(FUSED, features.embedder(backbone, FUSED.backbone, SIZE))(
        {"images": images, "hand": hand})
    rows = features.head_input({name: np.asarray(value) for name, value in blocks.items()}, FUSED)
    training.seed_everything(0)
    head, summary = training.train_head(rows, labels, rows[:0], labels[:0], 3, train_params(head="svm", svm_c=10.0))
    assert summary["accuracy"] > 0.9
    return model.assemble(FUSED, backbone, head)


def test_svm_models_save_and_load_in_safe_mode_and_predict_the_same(fused_svm, tmp_path):
    x, y = clusters(3, 20, dim=HANDS_ONLY.hand_dim, seed=4)
    svc, mean, variance, _ = fit_svc(x, y)
    landmarks_only = model.assemble(HANDS_ONLY, None, model.svm_head(svc, 3, mean, variance))
    images, hand = class_images([0, 1, 2, 1], seed=9), hand_vectors(4, seed=9)
    for network, spec, inputs in ((landmarks_only, HANDS_ONLY, {"hand": x}),
                                  (fused_svm, FUSED, {"images": images, "hand": hand})):
        folder = tmp_path / "-".join(spec.featurizers)
        folder.mkdir()
        files = ModelFiles(folder / "model.keras")
        model_file = files.model
        model.save_model(network, ["A", "B", "C"], spec, model_file, files.labels, files.spec)
        loaded, classes = model.load_model(model_file, folder / "labels.json")  # safe mode
        assert classes == ["A", "B", "C"] and model.load_spec(folder / "featurizers.json") == spec
        assert isinstance(loaded.get_layer("head").get_layer("rbf_kernel"), model.RBFKernel)
        assert isinstance(loaded.get_layer("head").get_layer("logits"), model.OneVsOneScores)
        np.testing.assert_allclose(loaded.predict(inputs, verbose=0), network.predict(inputs, verbose=0),
                                   rtol=1e-5, atol=1e-6)


def test_grad_cam_works_through_a_fused_model_with_an_svm_head(fused_svm):
    images, hand = class_images([0, 1, 2, 0, 1, 2], seed=11), hand_vectors(6, seed=11)
    maps, probabilities = gradcam.GradCam(fused_svm).heatmaps({"images": images, "hand": hand})
    assert gradcam.default_last_conv_layer(fused_svm) == "conv_b"
    assert maps.shape == (6, 7, 7) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    # Non-zero: the gradient runs through the one-vs-one confidence term back to the conv map.
    assert (maps.max(axis=(1, 2)) == 1).sum() >= 4
    np.testing.assert_allclose(probabilities, fused_svm.predict({"images": images, "hand": hand}, verbose=0),
                               atol=1e-5)
    # Explaining another class than the predicted one gives another map.
    other = (probabilities.argmax(axis=1) + 1) % 3
    other_maps, _ = gradcam.GradCam(fused_svm).heatmaps({"images": images, "hand": hand}, other)
    assert np.abs(other_maps - maps).max() > 0.1


# ---------------------------------------------------------------- the kernel head (Nystroem + logistic regression)

@pytest.mark.parametrize("num_classes", [4, 2])
def test_kernel_head_scores_as_scikit_learns_nystroem_and_ridge(num_classes):
    """The Keras head rebuilt from a fitted Nystroem map and ridge classifier gives their decisions."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import RidgeClassifier

    x, y = clusters(num_classes, 50, spread=2.0, seed=2)
    mean, variance = x.mean(axis=0), x.var(axis=0)
    standardized = (x - mean) / np.sqrt(variance)
    nystroem = Nystroem(gamma=0.1, n_components=60, random_state=0).fit(standardized)
    ridge = RidgeClassifier(alpha=1.0).fit(nystroem.transform(standardized), y)
    weights, bias = np.atleast_2d(ridge.coef_), np.ravel(ridge.intercept_)
    if num_classes == 2:  # one decision, positive for class 1: two scores whose difference it is
        weights, bias = np.vstack([-weights, weights]) / 2, np.concatenate([-bias, bias]) / 2
    head = model.kernel_head(nystroem.components_, 0.1, nystroem.normalization_.T @ weights.T, bias, mean, variance)
    theirs = ridge.decision_function(nystroem.transform(standardized))
    ours = scores_of(head, x)
    if num_classes == 2:
        np.testing.assert_allclose(ours[:, 1] - ours[:, 0], theirs, atol=2e-3)
    else:
        np.testing.assert_allclose(ours, theirs, atol=2e-3)
    assert (head.predict(x, verbose=0).argmax(axis=1) == ridge.predict(nystroem.transform(standardized))).all()
    assert not (ridge.predict(nystroem.transform(standardized)) == y).all()  # overlapping: a real ranking


def test_kernel_head_learns_separable_features_and_costs_the_same_for_more_rows():
    small, large = clusters(3, 60, seed=1), clusters(3, 600, seed=1)
    params = train_params(head="kernel", kernel_components=50)
    heads = {}
    for name, (x, y) in (("small", small), ("large", large)):
        heads[name], summary = training.train_head(x[:-30], y[:-30], x[-30:], y[-30:], 3, params)
        assert summary["val_accuracy"] > 0.9 and summary["epochs_run"] == 1
        assert [layer.name for layer in heads[name].layers][-2:] == ["logits", "probabilities"]
    # Ten times the rows, the same weights to read a photo with: an SVM's support vectors would grow instead.
    assert heads["small"].count_params() == heads["large"].count_params()
    assert heads["large"].get_layer("rbf_kernel").vectors.shape == (50, small[0].shape[1])


def test_kernel_head_probabilities_are_sure_where_the_classes_are_clear_and_not_where_they_overlap():
    """Temperature-scaled on val: a clear case reads near 1, as spell's min_probability expects, and a
    muddle does not (raw ridge decisions near [-1, 1] would give every photo about 1/3 with 3 classes)."""
    params = train_params(head="kernel", kernel_components=50)
    clear, muddle = clusters(3, 80, spread=0.3, seed=3), clusters(3, 80, spread=6.0, seed=3)
    sure = {}
    for name, (x, y) in (("clear", clear), ("muddle", muddle)):
        head, _ = training.train_head(x[:180], y[:180], x[180:210], y[180:210], 3, params)
        sure[name] = head.predict(x[210:], verbose=0).max(axis=1).mean()
    assert sure["clear"] > 0.9 and sure["muddle"] < 0.8, sure


def test_kernel_head_needs_every_class():
    x, y = clusters(3, 20)
    with pytest.raises(PipelineError, match=r"classes \[2\]"):
        training.train_head(x[y < 2], y[y < 2], x[:0], y[:0], 3, train_params(head="kernel"))


def test_kernel_models_save_and_load_in_safe_mode_and_predict_the_same(tmp_path):
    x, y = clusters(3, 20, dim=HANDS_ONLY.hand_dim, seed=4)
    head, _ = training.train_head(x, y, x[:0], y[:0], 3, train_params(head="kernel", kernel_components=30))
    network = model.assemble(HANDS_ONLY, None, head)
    files = ModelFiles(tmp_path / "model.keras")
    model.save_model(network, ["A", "B", "C"], HANDS_ONLY, files.model, files.labels, files.spec)
    loaded, classes = model.load_model(files.model, files.labels)  # safe mode
    assert classes == ["A", "B", "C"]
    np.testing.assert_allclose(loaded.predict({"hand": x}, verbose=0), network.predict({"hand": x}, verbose=0),
                               atol=1e-6)
