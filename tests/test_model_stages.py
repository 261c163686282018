"""featurize, train and evaluate: preprocessing, cached features, the head, fine-tuning, metrics, the saved model.

Everything runs at 32 px on a few synthetic images, with the backbone featurizer alone (hand landmarks and
fusion: test_featurizers.py and test_fusion.py). The backbones are either real ResNet50s with random
init (weights None: no network here) or tiny stand-ins shaped like them: a keras.Model from images to
pooled features, so that model.assemble, features.embedder and model.find_backbone treat them alike.
"""
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn import metrics as skm

from asl_pipeline import backbones, evaluation, features, model, training
from asl_pipeline.config import ModelFiles
from asl_pipeline.errors import PipelineError
from asl_pipeline.featurizers import Featurizer, augment_photo
from helpers import HAND_BUNDLE, make_spec, needs_bundle, train_params

SIZE = 32
CLASSES = ["A", "B", "C"]
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


# ---------------------------------------------------------------- helpers

SPEC = make_spec(("backbone",), image_size=SIZE)


def mean_backbone(image_size: int = SIZE) -> keras.Model:
    """Features = per-channel mean of the (preprocessed) image: predictable without running Keras."""
    inputs = keras.Input((image_size, image_size, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs), name="mean_backbone")


def conv_backbone(image_size: int = SIZE, seed: int = 0) -> keras.Model:
    """A small fixed random conv net with average pooling, like ResNet50 with pooling='avg'."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv_a")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv_b")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="conv_backbone")
    backbone.trainable = False
    return backbone


def smooth_images(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Blurry random RGB images, float32 0-255."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (count, 4, 4, 3)).astype("float32")
    return np.clip(tf.image.resize(small, (height, width), method="bilinear").numpy(), 0, 255)


def class_images(labels, height: int = SIZE, width: int = SIZE, seed: int = 0) -> np.ndarray:
    """Class c: a blurry image whose channel c is brightened; easy to tell apart by colour."""
    images = smooth_images(len(labels), height, width, seed) * 0.5
    for image, label in zip(images, labels):
        image[..., label] += 120
    return images


def expected_mean_features(image: np.ndarray) -> np.ndarray:
    """What features.embedder(mean_backbone) must give, computed with TF and Keras' own preprocess_input."""
    resized = tf.image.resize(image.astype("float32"), (SIZE, SIZE), method="bilinear").numpy()
    return keras.applications.resnet50.preprocess_input(resized).mean(axis=(0, 1))


def write_png(path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def separable_features(per_class: int, dim: int = 12, seed: int = 0):
    """Gaussian clusters, one per class, on channels whose scales span five orders of magnitude."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(CLASSES), dim))
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    scales = 10.0 ** rng.uniform(-2, 3, dim)
    x = (centres[labels] + rng.normal(0, 1, (len(labels), dim))) * scales
    order = rng.permutation(len(labels))
    return x[order].astype("float32"), labels[order]


class FakeLive:
    """The part of dvclive.Live that training.LiveLogger uses."""

    def __init__(self):
        self.metrics, self.steps = [], 0

    def log_metric(self, name, value):
        self.metrics.append((self.steps, name, value))

    def next_step(self):
        self.steps += 1


# ---------------------------------------------------------------- preprocessing

def test_assembled_model_preprocesses_like_resnet50_preprocess_input():
    image = smooth_images(1, 45, 61, seed=1)[0]
    head = model.build_head(3, 3, hidden_units=0, dropout=0.0)
    classifier = model.assemble(SPEC, mean_backbone(), head)
    assert model.input_names(classifier) == ("images",)

    resized = tf.image.resize(image, (SIZE, SIZE), method="bilinear").numpy()
    expected = keras.applications.resnet50.preprocess_input(resized.copy())
    got = classifier.get_layer("preprocess")(classifier.get_layer("resize")(image[None]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got)[0], expected, atol=1e-3)

    # End to end: the head's logits are its features / 100, so log-probability differences give back the
    # differences between the channel means the backbone saw.
    assert [layer.name for layer in head.layers][-2:] == ["logits", "probabilities"]
    head.get_layer("logits").set_weights([np.eye(3, dtype="float32") / 100, np.zeros(3, "float32")])
    log_p = np.log(classifier.predict({"images": image[None]}, verbose=0)[0])
    seen = expected_mean_features(image)
    np.testing.assert_allclose(100 * (log_p - log_p[0]), seen - seen[0], atol=0.05)


def test_resnet50_preprocessing_by_hand():
    """preprocess_input for ResNet50: RGB to BGR, minus the ImageNet mean, no scaling."""
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype="float32")
    got = keras.ops.convert_to_numpy(model.BackbonePreprocess("resnet50")(pixels))
    expected = pixels[..., ::-1] - IMAGENET_BGR_MEAN
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got[0, 0], [-103.939, -116.779, 131.32], atol=1e-4)


def test_backbone_preprocess_is_not_min_max_scaling():
    """The old bug: pixels scaled to [0, 1] before a backbone trained on preprocess_input's range."""
    image = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    layer = model.BackbonePreprocess("resnet50", name="preprocess")
    out = keras.ops.convert_to_numpy(layer(image))
    min_max = (image - image.min()) / (image.max() - image.min())
    assert not np.allclose(out, min_max, atol=0.1)
    assert not np.allclose(out, image / 255.0, atol=0.1)
    assert out.min() < -50 and out.max() > 50  # ImageNet-mean-centred values in the 0-255 range
    np.testing.assert_allclose(out, keras.applications.resnet50.preprocess_input(image.copy()), atol=1e-4)
    assert layer.get_config()["backbone"] == "resnet50"


# ---------------------------------------------------------------- featurize

@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Six PNGs (lossless, so their pixels are known) of several sizes and three classes, under a project root."""
    root = tmp_path_factory.mktemp("project")
    sizes = [(40, 40), (36, 52), (48, 30), (32, 32), (50, 44), (33, 47)]
    labels = ["B", "A", "C", "A", "C", "B"]
    paths, pixels = [], []
    for index, ((height, width), label) in enumerate(zip(sizes, labels)):
        image = np.round(smooth_images(1, height, width, seed=10 + index)[0])
        relative = f"data/raw/asl_alphabet_train/{label}/{label}{index + 1}.png"
        write_png(root / relative, image)
        paths.append(relative)
        pixels.append(image)
    return root, paths, labels, pixels


def backbone_blocks(backbone: keras.Model, spec=SPEC):
    """The featurize stage's two halves for a backbone-only spec: photos -> inputs, inputs -> feature blocks."""
    embedding = features.embedder(backbone, spec.backbone, spec.image_size)
    return Featurizer(spec, None), features.block_function(spec, embedding)


def test_featurize_split_keeps_manifest_order_and_labels(manifest):
    root, paths, labels, pixels = manifest
    featurizer, blocks = backbone_blocks(mean_backbone())
    arrays, seconds = features.featurize_split(featurizer, blocks, paths, labels, root, batch_size=4)
    assert set(arrays) == {"backbone", "labels", "paths", "views", "origins"}  # no hand block without hands
    feats = arrays["backbone"]
    assert feats.shape == (len(paths), 3) and feats.dtype == np.float32
    assert arrays["labels"].tolist() == labels and arrays["paths"].tolist() == paths
    assert arrays["views"].tolist() == [0] * len(paths)
    assert seconds >= 0
    expected = np.stack([expected_mean_features(image) for image in pixels])
    np.testing.assert_allclose(feats, expected, atol=0.05)
    # The images differ enough that a reordering could not pass.
    assert np.min(np.abs(expected[:, None] - expected[None]).sum(-1) + np.eye(len(paths)) * 1e9) > 1


def test_featurize_split_with_resnet50(manifest):
    root, paths, labels, _ = manifest
    featurizer, blocks = backbone_blocks(backbones.build_backbone("resnet50", SIZE, None))
    arrays, _ = features.featurize_split(featurizer, blocks, paths, labels, root, batch_size=4)
    feats = arrays["backbone"]
    assert feats.shape == (len(paths), 2048)
    assert np.isfinite(feats).all()
    assert arrays["labels"].tolist() == labels and arrays["views"].tolist() == [0] * len(paths)
    # One at a time gives the same rows: batching does not mix images up.
    single, _ = features.featurize_split(featurizer, blocks, paths[2:3], labels[2:3], root, batch_size=1)
    np.testing.assert_allclose(single["backbone"][0], feats[2], rtol=1e-4, atol=1e-4)


@needs_bundle
def test_an_empty_split_gives_every_block_with_no_rows_and_its_width(manifest):
    """A split with no photos (split.val_fraction 0) is featurized to empty blocks that train and the hand counts
    read like any other."""
    root = manifest[0]
    spec = make_spec(("backbone", "hand_landmarks"), image_size=SIZE)
    embedding = features.embedder(mean_backbone(), spec.backbone, spec.image_size)
    featurizer = Featurizer(spec, HAND_BUNDLE.read_bytes())
    arrays, _ = features.featurize_split(featurizer, features.block_function(spec, embedding), [], [], root, 4)
    assert arrays["backbone"].shape == (0, 3) and arrays["hand"].shape == (0, spec.hand_dim)
    assert arrays["labels"].shape == arrays["views"].shape == (0,)


def test_featurize_split_appends_augmented_copies(manifest):
    root, paths, labels, _ = manifest
    n = len(paths)
    featurizer, blocks = backbone_blocks(mean_backbone())
    plain = features.featurize_split(featurizer, blocks, paths, labels, root, batch_size=4)[0]["backbone"]

    def augmented(seed):
        return features.featurize_split(featurizer, blocks, paths, labels, root, batch_size=4, copies=2, seed=seed,
                                        horizontal_flip=True)[0]

    arrays = augmented(3)
    feats = arrays["backbone"]
    assert feats.shape == (3 * n, 3)
    assert arrays["views"].tolist() == [0] * n + [1] * n + [2] * n
    assert arrays["labels"].tolist() == labels * 3 and arrays["paths"].tolist() == paths * 3
    np.testing.assert_allclose(feats[:n], plain, atol=1e-5)  # view 0: the originals, unaugmented
    for view in (1, 2):
        changed = np.abs(feats[view * n:(view + 1) * n] - plain).max(axis=1)
        assert (changed > 1e-2).all(), (view, changed)
    assert np.abs(feats[n:2 * n] - feats[2 * n:]).max() > 1e-2  # two copies, two different draws
    # Each view is seeded by (seed, view, image): the same seed draws the same views, another seed others.
    np.testing.assert_array_equal(augmented(3)["backbone"], feats)
    assert np.abs(augmented(4)["backbone"][n:] - feats[n:]).max() > 1e-2


def test_augment_photo_is_seeded_and_keeps_shape_and_dtype():
    photo = np.round(smooth_images(1, 36, 52, seed=2)[0]).astype(np.uint8)
    views = [augment_photo(photo, np.random.default_rng(seed), horizontal_flip=True) for seed in (0, 0, 1)]
    assert all(view.shape == photo.shape and view.dtype == np.uint8 for view in views)
    np.testing.assert_array_equal(views[0], views[1])
    assert not np.array_equal(views[0], views[2]) and not np.array_equal(views[0], photo)


def test_features_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 7)).astype("float32")
    hand = rng.normal(size=(5, 4)).astype("float32")
    labels, paths = ["A", "B", "C", "A", "del"], [f"data/raw/x/{i}.jpg" for i in range(5)]
    views = np.array([0, 0, 0, 1, 1], np.int16)
    features.save_features(tmp_path / "train.npz", {"backbone": feats, "hand": hand, "labels": np.array(labels),
                                                    "paths": np.array(paths), "views": views,
                                                    "origins": np.array(["dataset"] * 4 + ["data/my-hand"])})
    loaded = features.load_features(tmp_path / "train.npz", make_spec(("backbone", "hand_landmarks")))
    np.testing.assert_array_equal(loaded["backbone"], feats)
    np.testing.assert_array_equal(loaded["hand"], hand)
    assert loaded["backbone"].dtype == np.float32
    assert loaded["labels"].tolist() == labels and loaded["paths"].tolist() == paths
    assert loaded["labels"].dtype.kind == loaded["paths"].dtype.kind == "U"
    assert loaded["views"].tolist() == views.tolist()
    assert loaded["origins"].tolist()[-1] == "data/my-hand"
    with np.load(tmp_path / "train.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["backbone", "hand", "labels", "origins", "paths", "views"]
    with pytest.raises(PipelineError, match="featurize"):
        features.load_features(tmp_path / "absent.npz")
    (tmp_path / "broken.npz").write_bytes(b"not an npz file")
    with pytest.raises(PipelineError, match="broken.npz"):
        features.load_features(tmp_path / "broken.npz")


def test_features_lacking_a_block_the_spec_needs_name_it_and_the_fix(tmp_path):
    path = tmp_path / "train.npz"
    features.save_features(path, {"backbone": np.zeros((2, 3), np.float32), "labels": np.array(["A", "B"]),
                                  "paths": np.array(["a.jpg", "b.jpg"]), "views": np.zeros(2, np.int16),
                                  "origins": np.array(["dataset", "dataset"])})
    assert set(features.load_features(path, make_spec(("backbone",)))) == {"backbone", "labels", "paths", "views",
                                                                           "origins"}
    with pytest.raises(PipelineError) as caught:
        features.load_features(path, make_spec(("backbone", "hand_landmarks")))
    message = str(caught.value)
    assert str(path) in message and "'hand'" in message and "dvc repro featurize" in message


# ---------------------------------------------------------------- the head

def test_head_learns_separable_features():
    x, y = separable_features(per_class=60)
    train_x, train_y, val_x, val_y = x[:120], y[:120], x[120:], y[120:]
    training.seed_everything(0)
    head, summary = training.train_head(train_x, train_y, val_x, val_y, len(CLASSES), train_params(epochs=25))
    predicted = head.predict(val_x, verbose=0).argmax(axis=1)
    assert (predicted == val_y).mean() > 0.9
    assert summary["val_accuracy"] > 0.9
    # The head standardizes with the training set's statistics: channels 1e-2 to 1e3 apart come out alike.
    standardized = keras.ops.convert_to_numpy(head.get_layer("standardize")(train_x))
    np.testing.assert_allclose(standardized.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(standardized.std(axis=0), 1, atol=1e-2)


def test_head_keeps_the_epoch_with_the_lowest_val_loss():
    """Validation labels unrelated to the features: val loss rises as the head fits, so training stops early."""
    x, y = separable_features(per_class=30, seed=3)
    val_y = np.random.default_rng(4).permutation(y[60:])
    training.seed_everything(0)
    live = FakeLive()
    logger = training.LiveLogger(live)
    head, summary = training.train_head(x[:60], y[:60], x[60:], val_y, len(CLASSES),
                                        train_params(epochs=30, patience=3, dropout=0.0), [logger])
    val_losses = [row["val/loss"] for row in logger.history]
    assert summary["epochs_run"] == len(logger.history) == live.steps
    assert summary["best_epoch"] == int(np.argmin(val_losses)) + 1 < summary["epochs_run"]
    assert summary["val_loss"] == pytest.approx(min(val_losses))
    # The head holds that epoch's weights, not the last epoch's.
    loss = keras.losses.sparse_categorical_crossentropy(val_y, head.predict(x[60:], verbose=0))
    assert float(np.mean(loss)) == pytest.approx(summary["val_loss"], rel=1e-4)
    assert set(logger.history[0]) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}
    assert {name for _, name, _ in live.metrics} == set(logger.history[0])


def test_head_training_is_deterministic():
    x, y = separable_features(per_class=30, seed=1)
    params = train_params(epochs=4, patience=10, dropout=0.3)
    runs = []
    for _ in range(2):
        training.seed_everything(params.seed)
        head, summary = training.train_head(x[:60], y[:60], x[60:], y[60:], len(CLASSES), params)
        runs.append((head.get_weights(), summary))
    (first, first_summary), (second, second_summary) = runs
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert first_summary == second_summary


def test_head_without_validation_monitors_training_loss():
    x, y = separable_features(per_class=20, seed=2)
    training.seed_everything(0)
    head, summary = training.train_head(x, y, x[:0], y[:0], len(CLASSES), train_params(epochs=3))
    assert "val_loss" not in summary and summary["epochs_run"] == 3
    assert head.output_shape == (None, len(CLASSES))


def test_distribute_none_is_the_default_strategy_and_mirrored_spans_the_local_devices():
    assert training.distribution_strategy("none") is tf.distribute.get_strategy()
    mirrored = training.distribution_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == max(1, len(tf.config.list_logical_devices("GPU")))  # CPU here
    x, y = separable_features(per_class=20, seed=5)
    training.seed_everything(0)
    with mirrored.scope():  # as stages/train.py builds the head
        head, _ = training.train_head(x[:45], y[:45], x[45:], y[45:], len(CLASSES), train_params(epochs=8))
    assert all(isinstance(v.value, tf.distribute.DistributedValues) for v in head.trainable_variables)  # mirrored
    assert (head.predict(x, verbose=0).argmax(axis=1) == y).mean() > 0.8


def test_distribute_multi_worker_reads_its_cluster_from_tf_config():
    """One worker on localhost; in a child process, since a multi-worker strategy must come before other TF work."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}}
    script = ("import tensorflow as tf\n"
              "from asl_pipeline import training\n"
              "strategy = training.distribution_strategy('multi_worker')\n"
              "print(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy.num_replicas_in_sync,\n"
              "      strategy.cluster_resolver.task_type)\n")
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["True", "1", "worker"]


def test_provenance_names_the_experiment_and_no_commit(monkeypatch):
    # A commit cannot hold its own name: a model that recorded one would change its bytes on every commit.
    monkeypatch.setenv("DVC_EXP_NAME", "svm-c10")
    assert training.provenance() == {"dvc_experiment": "svm-c10"}
    monkeypatch.delenv("DVC_EXP_NAME")
    assert training.provenance() == {"dvc_experiment": None}


# ---------------------------------------------------------------- fine-tuning

def test_unfreeze_from_freezes_before_and_spares_batchnorm():
    backbone = backbones.build_backbone("resnet50", SIZE, None)
    backbone.trainable = False
    first = "conv5_block1_1_conv"
    names = [layer.name for layer in backbone.layers]
    start = names.index(first)
    unfrozen = training.unfreeze_from(backbone, first)
    assert backbone.trainable
    for layer in backbone.layers[:start]:
        assert not layer.trainable, layer.name
    after = backbone.layers[start:]
    for layer in after:
        assert layer.trainable == (not isinstance(layer, keras.layers.BatchNormalization)), layer.name
    assert unfrozen == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in after)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in after)
    trainable_layers = {w.path.split("/")[0] for w in backbone.trainable_weights}
    assert trainable_layers == {layer.name for layer in after if layer.trainable and layer.weights}

    with pytest.raises(PipelineError) as error:
        training.unfreeze_from(backbone, "conv9_block1_1_conv")
    message = str(error.value)
    assert "conv9_block1_1_conv" in message and "fine_tune_from" in message
    assert sum(f"'{name}'" in message for name in names) >= 3


@pytest.mark.slow
def test_fine_tune_changes_unfrozen_convs_only(tmp_path):
    """End to end on photos through training.fine_tune, as the train stage calls it."""
    labels = np.array([0, 1, 0, 1])
    paths = [write_png(tmp_path / f"{i}.png", image).name
             for i, image in enumerate(class_images(labels, 40, 40, seed=4))]
    backbone = backbones.build_backbone("resnet50", SIZE, None)
    backbone.trainable = False
    head = model.build_head(2048, 2, hidden_units=0, dropout=0.0)
    classifier = model.assemble(SPEC, backbone, head)
    params = train_params(fine_tune_epochs=1, fine_tune_from="conv5_block3_1_conv", batch_size=2, patience=1)

    watched = {
        "unfrozen conv": backbone.get_layer("conv5_block3_1_conv"),
        "frozen conv": backbone.get_layer("conv5_block2_3_conv"),
        "unfrozen-side batchnorm": backbone.get_layer("conv5_block3_1_bn"),
        "frozen-side batchnorm": backbone.get_layer("conv4_block6_1_bn"),
    }
    before = {name: [w.numpy().copy() for w in layer.weights] for name, layer in watched.items()}
    # Feature files as featurize writes them: the photo of each row, and its view (augmented views are skipped).
    rows = {"paths": np.array(paths + paths[:1]), "views": np.array([0, 0, 0, 0, 1])}
    no_val = {"paths": np.array([], dtype=str), "views": np.array([], dtype=np.int16)}
    training.seed_everything(0)
    summary = training.fine_tune(classifier, Featurizer(SPEC, None), tmp_path, rows, np.append(labels, 0), no_val,
                                 labels[:0], params)
    after = {name: [w.numpy() for w in layer.weights] for name, layer in watched.items()}

    assert summary["epochs_run"] == 1 and np.isfinite(summary["loss"])
    assert all(np.isfinite(w).all() for weights in after.values() for w in weights)
    assert any(not np.array_equal(a, b) for a, b in zip(before["unfrozen conv"], after["unfrozen conv"]))
    for name in ("frozen conv", "unfrozen-side batchnorm", "frozen-side batchnorm"):
        for weight, a, b in zip(watched[name].weights, before[name], after[name]):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {weight.path} changed")
    # gamma, beta, moving mean and variance: all four of a BatchNorm layer were compared
    assert len(before["unfrozen-side batchnorm"]) == 4


# ---------------------------------------------------------------- evaluate

# Five test images, three classes; rows 1 and 3 are wrong, row 3 the more confident of the two.
Y_TRUE = np.array([0, 0, 1, 1, 2])
PROBABILITIES = np.array([
    [0.70, 0.20, 0.10],  # right
    [0.35, 0.55, 0.10],  # wrong: B at 0.55; A second, so right within the top 2
    [0.10, 0.80, 0.10],  # right
    [0.60, 0.10, 0.30],  # wrong: A at 0.60; B last, wrong within the top 2 as well
    [0.20, 0.30, 0.50],  # right
])


def test_classification_metrics_by_hand():
    result = evaluation.classification_metrics(Y_TRUE, PROBABILITIES, CLASSES, top_k=2)
    assert result["n"] == 5
    assert result["accuracy"] == pytest.approx(3 / 5)
    # A: 1 right of 2, predicted twice; B: the same; C: 1 of 1, predicted once.
    assert result["per_class"]["A"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert result["per_class"]["B"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert result["per_class"]["C"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert result["macro_f1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert result["top_2_accuracy"] == pytest.approx(4 / 5)


def test_a_class_the_set_lacks_is_not_scored_but_predicting_it_counts_against_the_true_class():
    """A set of A, B, C scored by a model that also knows D: D gets no per-class row and does not lower
    macro F1, but a photo of C predicted as D is a miss for C."""
    probabilities = np.hstack([PROBABILITIES * 0.9, np.full((5, 1), 0.1 * 0.5)])
    result = evaluation.classification_metrics(Y_TRUE, probabilities, CLASSES + ["D"], top_k=1)
    assert set(result["per_class"]) == set(CLASSES)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["macro_f1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert result["top_1_accuracy"] == pytest.approx(3 / 5)
    assert not np.isnan([v for scores in result["per_class"].values() for v in scores.values()]).any()

    probabilities[4] = [0.05, 0.05, 0.1, 0.8]  # the photo of C: now predicted D
    result = evaluation.classification_metrics(Y_TRUE, probabilities, CLASSES + ["D"], top_k=1)
    assert set(result["per_class"]) == set(CLASSES)
    assert result["per_class"]["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert result["accuracy"] == pytest.approx(2 / 5)
    assert result["macro_f1"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    rows = {line.split()[0] for line in evaluation.report_text(Y_TRUE, probabilities, CLASSES + ["D"]).splitlines()
            if line.strip()}
    assert rows & {"A", "B", "C", "D"} == {"A", "B", "C"}


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
def test_classification_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    classes = list("ABCDEFG")
    y_true = rng.integers(0, 6, 60)  # G never occurs
    logits = rng.normal(size=(60, len(classes)))
    logits[np.arange(60), y_true] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_pred = probabilities.argmax(axis=1)
    labels = np.arange(len(classes))
    present = np.unique(y_true)  # G is scored only as a wrong prediction
    for top_k in (1, 3, 99):
        result = evaluation.classification_metrics(y_true, probabilities, classes, top_k)
        k = min(top_k, len(classes))
        assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
        assert result["macro_f1"] == pytest.approx(
            skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
        assert result[f"top_{k}_accuracy"] == pytest.approx(
            skm.top_k_accuracy_score(y_true, probabilities, k=k, labels=labels))
        # top-k by counting, without scikit-learn
        top = np.argsort(-probabilities, axis=1)[:, :k]
        assert result[f"top_{k}_accuracy"] == pytest.approx(np.mean([t in row for t, row in zip(y_true, top)]))
        assert list(result["per_class"]) == classes[:6]
        assert [result["per_class"][c]["support"] for c in classes[:6]] == np.bincount(y_true).tolist()
        for index, name in enumerate(classes[:6]):
            expected = skm.precision_recall_fscore_support(y_true, y_pred, labels=[index], zero_division=0)
            assert result["per_class"][name]["f1"] == pytest.approx(expected[2][0])
    assert "top_7_accuracy" in evaluation.classification_metrics(y_true, probabilities, classes, 99)


def test_classification_metrics_with_two_classes():
    y_true = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    result = evaluation.classification_metrics(y_true, probabilities, ["A", "B"], top_k=3)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["top_2_accuracy"] == 1.0


def test_misclassified_rows_lists_the_wrong_ones_most_confident_first():
    paths = [f"img{i}.jpg" for i in range(5)]
    rows = evaluation.misclassified_rows(paths, Y_TRUE, PROBABILITIES, CLASSES)
    assert rows == [("img3.jpg", "B", "A", "0.6000"), ("img1.jpg", "A", "B", "0.5500")]
    assert evaluation.misclassified_rows(paths, PROBABILITIES.argmax(axis=1), PROBABILITIES, CLASSES) == []


# ---------------------------------------------------------------- the saved model

def train_classifier():
    """A fixed conv backbone and a head trained on its features of colour-coded class images."""
    backbone = conv_backbone()
    embedding = features.embedder(backbone, SPEC.backbone, SIZE)
    labels = np.tile(np.arange(len(CLASSES)), 30)
    feats = embedding.predict(class_images(labels, seed=5), verbose=0)
    training.seed_everything(0)
    head, _ = training.train_head(feats[:60], labels[:60], feats[60:], labels[60:], len(CLASSES),
                                  train_params(epochs=30, hidden_units=0, dropout=0.0, learning_rate=0.05))
    return model.assemble(SPEC, backbone, head)


@pytest.fixture(scope="module")
def trained_classifier():
    return train_classifier()


@pytest.fixture(scope="module")
def saved_files(trained_classifier, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    files = ModelFiles(folder / "model.keras")
    assert (files.labels, files.spec) == (folder / "labels.json", folder / "featurizers.json")
    model.save_model(trained_classifier, CLASSES, SPEC, files.model, files.labels, files.spec)
    return files.model, files.labels, files.spec


@pytest.fixture(scope="module")
def saved_model(saved_files):
    model_file, labels_file, _ = saved_files
    loaded, classes = model.load_model(model_file, labels_file)
    return loaded, classes


SAVE_A_SEEDED_MODEL = """
import sys
from pathlib import Path

import keras
from asl_pipeline import model
from asl_pipeline.config import ModelFiles
from helpers import make_spec
keras.utils.set_random_seed(0)
spec = make_spec(("hand_landmarks",))
network = model.assemble(spec, None, model.build_head(spec.hand_dim, 3, hidden_units=8, dropout=0.0))
files = ModelFiles(Path(sys.argv[1]))
model.save_model(network, ["A", "B", "C"], spec, files.model, files.labels, files.spec)
"""


def test_the_same_model_saved_by_two_runs_has_the_same_bytes(tmp_path):
    # Else every `dvc repro` would change the model's hash in dvc.lock (and every `dvc push` upload it again).
    # Two processes: other Python object ids in the config, another save time.
    saved = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        subprocess.run([sys.executable, "-c", SAVE_A_SEEDED_MODEL, str(tmp_path / run / "model.keras")], check=True,
                       cwd=Path(__file__).parent, capture_output=True)
        saved.append((tmp_path / run / "model.keras").read_bytes())
    assert saved[0] == saved[1]
    with zipfile.ZipFile(tmp_path / "one" / "model.keras") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
        ids = re.findall(rb'"shared_object_id": (\d+)', archive.read("config.json"))
    assert ids and sorted(set(int(i) for i in ids)) == list(range(1, len(set(ids)) + 1))
    loaded, classes = model.load_model(tmp_path / "one" / "model.keras", tmp_path / "one" / "labels.json")
    assert classes == ["A", "B", "C"] and loaded.output_shape == (None, 3)


def test_saved_model_reloads_and_predicts_the_same(trained_classifier, saved_model, saved_files):
    loaded, classes = saved_model
    assert classes == CLASSES
    assert model.load_spec(saved_files[2]) == SPEC
    assert model.load_spec(saved_files[2]).image_size == SIZE
    assert model.input_names(loaded) == ("images",)
    assert isinstance(loaded.get_layer("preprocess"), model.BackbonePreprocess)
    rng = np.random.default_rng(1)
    for height, width in ((40, 40), (57, 33)):
        images = rng.uniform(0, 255, (4, height, width, 3)).astype("float32")
        before = trained_classifier.predict({"images": images}, verbose=0)
        after = loaded.predict({"images": images}, verbose=0)
        assert after.shape == (4, len(CLASSES))
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(after.sum(axis=1), 1, rtol=1e-5)


def test_saved_model_recognises_its_classes(saved_model):
    """Minimum functionality: fresh images of each class get their class, so invariance below is not vacuous."""
    loaded, _ = saved_model
    labels = np.repeat(np.arange(len(CLASSES)), 8)
    predicted = loaded.predict({"images": class_images(labels, seed=6)}, verbose=0).argmax(axis=1)
    assert (predicted == labels).mean() >= 0.9


@pytest.mark.parametrize("height, width, tolerance", [
    (SIZE, SIZE, 1e-4),  # halving a 2x nearest upscale bilinearly gives back the very same pixels
    (48, 48, 0.15),
    (24, 40, 0.15),
])
def test_saved_model_is_invariant_to_image_size(saved_model, height, width, tolerance):
    """Invariance: the same picture at twice the size (nearest upscaling) gets the same prediction."""
    loaded, _ = saved_model

    def predict_both(images):
        upscaled = images.repeat(2, axis=1).repeat(2, axis=2)
        return loaded.predict({"images": images}, verbose=0), loaded.predict({"images": upscaled}, verbose=0)

    # Clear examples of each class keep their (confident) class...
    original, bigger = predict_both(class_images(np.repeat(np.arange(len(CLASSES)), 4), height, width, seed=7))
    np.testing.assert_array_equal(bigger.argmax(axis=1), original.argmax(axis=1))
    # ...and ambiguous pictures, whose probabilities are far from saturated, keep their probabilities.
    original, bigger = predict_both(smooth_images(12, height, width, seed=8))
    assert original.max(axis=1).min() < 0.9
    np.testing.assert_allclose(bigger, original, atol=tolerance)


# ---------------------------------------------------------------- the train stage

@needs_bundle
@pytest.mark.parametrize("head", ["kernel", "svm", "mlp"])
def test_train_stage_on_cached_hand_features_writes_the_model_and_its_companions(stage_project, monkeypatch,
                                                                                   capsys, head):
    """The train stage, in this process, on feature files as featurize writes them for a landmarks-only variant:
    one self-contained folder models/VARIANT/, and the variant's curves and metrics."""
    import dataclasses
    import runpy
    import shutil

    from asl_pipeline.config import Paths, load_params, params_from_record
    from asl_pipeline.featurizers import FeatureSpec
    from helpers import HAND_BUNDLE, REPO

    project, name = stage_project, "reader"
    project.set(variants={name: {"model": {"featurizers": ["hand_landmarks"]}, "train": {"head": head}}},
                serve={"model": name}, split={"classes": CLASSES}, hands={"features": ["angles"]},
                train={"epochs": 15, "patience": 5, "learning_rate": 0.05, "batch_size": 16})
    params = load_params(project.root / "params.yaml").variant(name)
    spec = FeatureSpec.from_params(params)
    assert spec.hand_dim == 16 and params.train.head == head
    x, y = separable_features(per_class=20, dim=spec.hand_dim, seed=5)
    paths = Paths(project.root)
    variant = paths.variant(name)
    folder = variant.features
    folder.mkdir(parents=True)
    for split, rows in (("train", slice(0, 45)), ("val", slice(45, 60))):
        count = len(y[rows])
        features.save_features(folder / f"{split}.npz", {
            "hand": x[rows], "labels": np.array([CLASSES[i] for i in y[rows]]),
            "paths": np.array([f"data/raw/{split}{i}.jpg" for i in range(count)]), "views": np.zeros(count, np.int16),
            "origins": np.array(["dataset"] * count)})
    (folder / "meta.json").write_text(json.dumps({"spec": spec.to_dict(), "weights": "not used", "pretrained": False}))
    paths.hand_model.parent.mkdir(parents=True)
    shutil.copyfile(HAND_BUNDLE, paths.hand_model)  # what the hand_model stage leaves in models/

    script = str(REPO / "stages" / "train.py")
    monkeypatch.chdir(project.root)
    monkeypatch.setattr(sys, "argv", [script, name])  # as dvc.yaml's train@reader runs it
    runpy.run_path(script, run_name="__main__")
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"train {name}: ")
    files = variant.model_files
    assert files.model == project.root / "models" / name / "model.keras"
    assert json.loads(files.labels.read_text()) == CLASSES
    assert model.load_spec(files.spec) == spec
    # The folder alone is enough to read photos: the hand bundle is copied in.
    assert files.hand_model.read_bytes() == HAND_BUNDLE.read_bytes()
    assert {"model.keras", "labels.json", "featurizers.json", "run.json", "model_summary.txt",
            "hand_landmarker.task"} <= {p.name for p in variant.model_dir.iterdir()}
    assert sorted(p.name for p in paths.models.iterdir()) == ["hand_landmarker.task", name]  # no temporary left
    run = json.loads(files.run.read_text())
    # Nothing in it depends on the machine or the git commit: the same inputs write the same bytes.
    assert set(run) == {"variant", "pretrained", "backbone_weights", "dvc_experiment", "params", "inputs_sha256"}
    assert run["variant"] == name and run["pretrained"] is False and run["backbone_weights"] == "not used"
    # The params it was trained with, as a record evaluate rebuilds for the model card.
    assert run["params"] == json.loads(json.dumps(dataclasses.asdict(params)))
    assert params_from_record(run["params"], files.run).train.head == head
    assert (variant.plots / "learning_curves.png").is_file()
    assert variant.plots == project.root / "plots" / "variants" / name and (variant.plots / "train").is_dir()
    metrics = json.loads((variant.metrics / "train.json").read_text())
    assert variant.metrics == project.root / "metrics" / "variants" / name
    assert metrics["fine_tuned"] is False and metrics["val_accuracy"] > 0.8
    assert metrics["epochs_run"] == 1 if head != "mlp" else 1 <= metrics["epochs_run"] <= 15
    network, _ = model.load_model(files.model, files.labels)
    assert model.input_names(network) == ("hand",)
    assert (network.predict({"hand": x[45:]}, verbose=0).argmax(axis=1) == y[45:]).mean() > 0.8


# ---------------------------------------------------------------- the signers stage

def write_signer_features(project, name: str, spec) -> None:
    """Feature files of six signers (the Kaggle one and cam01..cam05, in their file names) for the signers stage."""
    from asl_pipeline.config import Paths

    folder = Paths(project.root).variant(name).features
    folder.mkdir(parents=True)
    x, y = separable_features(per_class=30, dim=spec.hand_dim, seed=7)
    people = np.arange(len(y)) % 6
    for split, rows in (("train", slice(0, 70)), ("val", slice(70, 80)), ("test", slice(80, 90))):
        count = len(y[rows])
        paths = [f"data/raw/A/A{i}.jpg" if person == 0 else f"data/extra/webcams/A/cam{person:02d}_A_{i}.jpg"
                 for i, person in enumerate(people[rows])]
        features.save_features(folder / f"{split}.npz", {
            "hand": x[rows], "labels": np.array([CLASSES[i] for i in y[rows]]), "paths": np.array(paths),
            "views": np.zeros(count, np.int16),
            "origins": np.array(["dataset" if p == 0 else "webcams" for p in people[rows]])})
    (folder / "meta.json").write_text(json.dumps({"spec": spec.to_dict(), "weights": "not used", "pretrained": False}))


def test_signers_stage_writes_details_and_a_plot_and_refits_only_when_what_it_reads_changes(stage_project):
    from asl_pipeline.config import Paths, load_params
    from asl_pipeline.featurizers import FeatureSpec

    project, name = stage_project, "reader"
    project.set(variants={name: {"model": {"featurizers": ["hand_landmarks"]}, "train": {"head": "kernel"}}},
                serve={"model": name}, split={"classes": CLASSES}, hands={"features": ["angles"]},
                evaluate={"signer_folds": 3})
    spec = FeatureSpec.from_params(load_params(project.root / "params.yaml").variant(name))
    write_signer_features(project, name, spec)
    variant = Paths(project.root).variant(name)
    result = project.run("signers", name)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 signers in 3 folds" in result.stdout
    details = json.loads((variant.metrics / "signers.json").read_text())
    assert list(details["signers"]) == ["kaggle", *(f"cam{i:02d}" for i in range(1, 6))]
    assert {row["fold"] for row in details["signers"].values()} == {0, 1, 2} and details["folds"] == 3
    assert details["mean"] > 0.8 and details["standard_error"] >= 0 and len(details["worst"]) == 3
    plotted = (variant.plots / "signers.csv").read_text().splitlines()
    assert plotted[0] == "signer,accuracy,n,fold" and len(plotted) == 7
    before = (variant.metrics / "signers.json").read_bytes()

    project.set(train={"epochs": 3})  # the kernel head reads no epochs: nothing to refit
    result = project.run("signers", name)
    assert result.returncode == 0 and "nothing the kernel head's folds read has changed" in result.stdout
    assert (variant.metrics / "signers.json").read_bytes() == before

    project.set(evaluate={"signer_folds": 2})  # what it reads: refits
    result = project.run("signers", name)
    assert result.returncode == 0 and "6 signers in 2 folds" in result.stdout, result.stdout
    assert json.loads((variant.metrics / "signers.json").read_text())["folds"] == 2


def test_signers_stage_keeps_the_folds_of_a_dense_head_when_only_fine_tuning_changes(stage_project):
    """The folds fit heads on features: fine-tuning (the train stage's, on photos) is nothing they read."""
    from asl_pipeline.config import Paths, load_params
    from asl_pipeline.featurizers import FeatureSpec

    project, name = stage_project, "dense"
    project.set(variants={name: {"model": {"featurizers": ["hand_landmarks"]}, "train": {"head": "mlp"}}},
                serve={"model": name}, split={"classes": CLASSES}, hands={"features": ["angles"]},
                evaluate={"signer_folds": 2}, train={"epochs": 3, "patience": 1})
    spec = FeatureSpec.from_params(load_params(project.root / "params.yaml").variant(name))
    write_signer_features(project, name, spec)
    details = Paths(project.root).variant(name).metrics / "signers.json"
    assert project.run("signers", name).returncode == 0
    before = details.read_bytes()

    project.set(train={"fine_tune_from": "conv4_block1_1_conv", "fine_tune_learning_rate": 0.001})
    result = project.run("signers", name)
    assert result.returncode == 0 and "nothing the mlp head's folds read has changed" in result.stdout, result.stdout
    assert details.read_bytes() == before

    project.set(train={"hidden_units": 8})  # what the dense head reads: refits
    result = project.run("signers", name)
    assert result.returncode == 0 and "2 folds" in result.stdout, result.stdout
