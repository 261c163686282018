"""The classifier: a dense head on the feature blocks, and the saved inference model.

The saved Keras model takes the inputs featurizers.py defines: `images`, raw RGB (any size, values 0-255)
that it resizes and preprocesses itself with registered layers rather than Lambda, so that Keras safe mode
can load it; and `hand`, the hand-landmark vector. Beside it: labels.json (class names), featurizers.json
(how photos become inputs) and, when hands are used, the hand model bundle.
"""
import json
import re
import zipfile
from pathlib import Path

import keras
import numpy as np

from asl_pipeline import backbones
from asl_pipeline.atomic import atomic_file, write_json
from asl_pipeline.errors import PipelineError
from asl_pipeline.featurizers import FeatureSpec, ordered_blocks


@keras.saving.register_keras_serializable(package="asl_pipeline")
class BackbonePreprocess(keras.layers.Layer):
    """The backbone's own `preprocess_input`, as a layer that is saved with the model."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess = backbones.preprocess_input(backbone)

    def call(self, images):
        return self._preprocess(images)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def _standardize(feature_dim: int, feature_mean, feature_variance) -> keras.layers.Layer:
    """Standardize the features with the training set's mean and variance.

    Standardizing matters: pooled ResNet features range over orders of magnitude between channels, and
    the hand block mixes coordinates, distances, angles and scores. With several blocks each column is
    standardized on its own, so every block enters on the same scale.
    """
    mean = np.zeros(feature_dim) if feature_mean is None else feature_mean
    variance = np.ones(feature_dim) if feature_variance is None else feature_variance
    return keras.layers.Normalization(mean=mean, variance=variance, name="standardize")


def _probabilities() -> keras.layers.Layer:
    # Every head ends in this layer, so Grad-CAM finds the logits just before it.
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")


def build_head(feature_dim: int, num_classes: int, hidden_units: int, dropout: float,
               feature_mean=None, feature_variance=None) -> keras.Model:
    """The `mlp` head: standardize, then dense layers with dropout, trained by gradient descent."""
    layers = [keras.Input((feature_dim,)), _standardize(feature_dim, feature_mean, feature_variance),
              keras.layers.Dropout(dropout)]
    if hidden_units:
        layers += [keras.layers.Dense(hidden_units, activation="relu"), keras.layers.Dropout(dropout)]
    layers += [keras.layers.Dense(num_classes, dtype="float32", name="logits"), _probabilities()]
    return keras.Sequential(layers, name="head")


@keras.saving.register_keras_serializable(package="asl_pipeline")
class RBFKernel(keras.layers.Layer):
    """exp(-gamma * |x - v|^2) against each support vector v: the kernel of an RBF SVM."""

    def __init__(self, num_vectors: int, gamma: float, **kwargs):
        super().__init__(**kwargs)
        self.num_vectors, self.gamma = num_vectors, gamma

    def build(self, input_shape):
        self.vectors = self.add_weight(shape=(self.num_vectors, input_shape[-1]), initializer="zeros",
                                       trainable=False, name="support_vectors")

    def call(self, x):
        x = keras.ops.cast(x, "float32")
        squared = (keras.ops.sum(x * x, axis=-1, keepdims=True) - 2 * keras.ops.matmul(x, keras.ops.transpose(
            self.vectors)) + keras.ops.sum(self.vectors * self.vectors, axis=-1)[None, :])
        return keras.ops.exp(-self.gamma * keras.ops.maximum(squared, 0.0))

    def get_config(self):
        return {**super().get_config(), "num_vectors": self.num_vectors, "gamma": self.gamma}


def class_pairs(num_classes: int) -> np.ndarray:
    """(i, j), i < j, in the order of libsvm's one-vs-one classifiers."""
    return np.array([(i, j) for i in range(num_classes) for j in range(i + 1, num_classes)])


@keras.saving.register_keras_serializable(package="asl_pipeline")
class OneVsOneScores(keras.layers.Layer):
    """Class scores from one-vs-one decisions (d > 0: class i beats j), as scikit-learn's SVC ranks them:
    votes won plus a summed confidence squashed into (-1/3, 1/3) that only breaks ties. Only the
    confidence term has a gradient, which is what Grad-CAM follows."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        pairs = class_pairs(num_classes)
        winner_i = np.zeros((len(pairs), num_classes), np.float32)
        winner_j = np.zeros((len(pairs), num_classes), np.float32)
        winner_i[np.arange(len(pairs)), pairs[:, 0]] = 1
        winner_j[np.arange(len(pairs)), pairs[:, 1]] = 1
        self._winner_i, self._winner_j = winner_i, winner_j

    def call(self, decisions):
        decisions = keras.ops.cast(decisions, "float32")
        won = keras.ops.cast(decisions > 0, "float32")
        votes = keras.ops.matmul(won, self._winner_i) + keras.ops.matmul(1 - won, self._winner_j)
        confidence = keras.ops.matmul(decisions, self._winner_i - self._winner_j)
        return votes + confidence / (3 * (keras.ops.abs(confidence) + 1))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def svm_head(svc, num_classes: int, feature_mean, feature_variance) -> keras.Model:
    """The `svm` head: a fitted scikit-learn RBF SVC (trained on standardized features) as Keras layers.

    Its class scores go through a softmax so that every head gives probabilities; they rank the classes
    as the SVM does but are not calibrated.
    """
    if list(svc.classes_) != list(range(num_classes)):
        raise PipelineError(f"the SVM saw classes {list(svc.classes_)}; every one of the {num_classes} classes "
                            "needs training images")
    vectors = svc.support_vectors_.astype(np.float32)
    # libsvm's one-vs-one decision for (i, j): the dual coefficients of i's support vectors from row j-1,
    # those of j's from row i, plus the intercept.
    # With two classes scikit-learn flips the signs of dual_coef_ and intercept_ (so that a positive
    # decision_function means classes_[1]); libsvm's own, positive when class 0 wins, are their negatives.
    sign = -1.0 if num_classes == 2 else 1.0
    dual_coef, intercept = sign * svc.dual_coef_, sign * svc.intercept_
    owner = np.repeat(np.arange(num_classes), svc.n_support_)
    pairs = class_pairs(num_classes)
    weights = np.zeros((len(vectors), len(pairs)), np.float32)
    for k, (i, j) in enumerate(pairs):
        weights[owner == i, k] = dual_coef[j - 1, owner == i]
        weights[owner == j, k] = dual_coef[i, owner == j]
    kernel = RBFKernel(len(vectors), float(svc._gamma), name="rbf_kernel")
    decisions = keras.layers.Dense(len(pairs), trainable=False, dtype="float32", name="one_vs_one")
    head = keras.Sequential([keras.Input((vectors.shape[1],)), _standardize(vectors.shape[1], feature_mean,
                                                                             feature_variance),
                             kernel, decisions, OneVsOneScores(num_classes, name="logits"), _probabilities()],
                            name="head")
    kernel.vectors.assign(vectors)
    decisions.set_weights([weights, intercept.astype(np.float32)])
    return head


def kernel_head(landmarks, gamma: float, weights, bias, feature_mean, feature_variance) -> keras.Model:
    """The `kernel` head: an RBF kernel approximated on a fixed set of landmark rows (Nystroem) and a linear
    model on it, as Keras layers: standardize, the kernel against each landmark, one dense layer. weights:
    (landmarks, classes), already multiplied by the Nystroem normalization; bias: (classes,).

    The Nystroem map K(x, landmarks) @ N (N: the inverse square root of the landmarks' own kernel) and the
    linear model's weights W fold into one dense layer, N @ W: the head costs the same per photo however many
    rows it was trained on, unlike an SVM, whose support vectors grow with them.
    """
    landmarks = np.asarray(landmarks, np.float32)
    kernel = RBFKernel(len(landmarks), float(gamma), name="rbf_kernel")
    logits = keras.layers.Dense(len(bias), trainable=False, dtype="float32", name="logits")
    head = keras.Sequential([keras.Input((landmarks.shape[1],)),
                             _standardize(landmarks.shape[1], feature_mean, feature_variance),
                             kernel, logits, _probabilities()], name="head")
    kernel.vectors.assign(landmarks)
    logits.set_weights([np.asarray(weights, np.float32), np.asarray(bias, np.float32)])
    return head


def preprocessing_layers(backbone: str, image_size: int):
    return [backbones.resize_layer(image_size), BackbonePreprocess(backbone, name="preprocess")]


def assemble(spec: FeatureSpec, backbone_model: keras.Model | None, head: keras.Model) -> keras.Model:
    """The spec's inputs in, class probabilities out; the backbone runs in inference mode."""
    inputs, blocks = {}, {}
    if spec.uses_backbone:
        inputs["images"] = keras.Input((None, None, 3), name="images")
        x = inputs["images"]
        for layer in preprocessing_layers(spec.backbone, spec.image_size):
            x = layer(x)
        # training=False keeps BatchNorm in inference mode even when the backbone is unfrozen.
        blocks["backbone"] = backbone_model(x, training=False)
    if "hand_landmarks" in spec.featurizers:
        inputs["hand"] = blocks["hand_landmarks"] = keras.Input((spec.hand_dim,), name="hand")
    parts = ordered_blocks(blocks)
    features = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    return keras.Model(inputs, head(features), name="asl_classifier")


def find_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone inside an assembled model: the sub-model that is not the head."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "head"]
    if len(nested) != 1:
        raise PipelineError(f"expected one nested backbone in model {model.name!r}, found {len(nested)}")
    return nested[0]


def _same_bytes_for_the_same_model(keras_file: Path) -> None:
    """Rewrite a .keras file so that the same model always gives the same bytes: Keras stamps the save time into
    metadata.json and the weights' zip entry, and Python object ids into config.json (shared_object_id), so
    every save of an unchanged model would change its hash in dvc.lock."""
    with zipfile.ZipFile(keras_file) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    ids = {}
    with zipfile.ZipFile(keras_file, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":  # the ids only pair up shared objects: number them in order
                data = re.sub(rb'"shared_object_id": (\d+)',
                              lambda m: b'"shared_object_id": %d' % ids.setdefault(m[1], len(ids) + 1), data)
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            archive.writestr(fixed, data)


def save_model(model: keras.Model, classes, spec: FeatureSpec, model_file: Path, labels_file: Path,
               spec_file: Path) -> None:
    with atomic_file(model_file) as tmp:
        model.save(tmp)
        _same_bytes_for_the_same_model(tmp)
    write_json(labels_file, list(classes))
    write_json(spec_file, spec.to_dict())


def load_spec(spec_file: Path) -> FeatureSpec:
    spec_file = Path(spec_file)
    try:
        return FeatureSpec.from_dict(json.loads(spec_file.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise PipelineError(f"feature spec {spec_file} not found: it is written next to the model by the "
                            "train stage; run `dvc repro train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise PipelineError(f"feature spec {spec_file} is damaged ({type(error).__name__}: {error}); "
                            "re-run `dvc repro train`") from None


def load_model(model_file: Path, labels_file: Path):
    """Load with Keras safe mode and check the class names against the model's output size."""
    model_file, labels_file = Path(model_file), Path(labels_file)
    if not model_file.is_file():
        raise PipelineError(f"model file {model_file} not found: run `dvc repro train` first, or pass --model")
    if not labels_file.is_file():
        raise PipelineError(f"class-names file {labels_file} not found: it is written next to the model "
                            "by the train stage; run `dvc repro train`")
    try:
        classes = json.loads(labels_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PipelineError(f"class-names file {labels_file} is not valid JSON ({error}); "
                            "re-run `dvc repro train`") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise PipelineError(f"class-names file {labels_file} must hold a JSON list of class names")
    try:
        model = keras.saving.load_model(model_file, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a damaged file
        raise PipelineError(f"cannot load model {model_file} ({type(error).__name__}: {error}); "
                            "the file is damaged or not a Keras model: re-run `dvc repro train`") from None
    outputs = model.output_shape[-1]
    if outputs != len(classes):
        raise PipelineError(f"model {model_file} predicts {outputs} classes but {labels_file} names "
                            f"{len(classes)}: the two files come from different runs; re-run `dvc repro train`")
    return model, classes


def input_names(model: keras.Model) -> tuple:
    """The keys of the model's dict of inputs: some of 'images', 'hand'."""
    return tuple(model.input)

