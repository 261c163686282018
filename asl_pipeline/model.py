"""The classifier: a dense head on pooled backbone features, and the self-contained inference model.

The saved model takes raw RGB images (any size, values 0-255) and resizes and preprocesses them itself,
with registered layers rather than Lambda, so that Keras safe mode can load it.
"""
import json
from pathlib import Path

import keras
import numpy as np

from asl_pipeline import backbones
from asl_pipeline.atomic import atomic_file, write_json
from asl_pipeline.errors import PipelineError


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


def build_head(feature_dim: int, num_classes: int, hidden_units: int, dropout: float,
               feature_mean=None, feature_variance=None) -> keras.Model:
    """Standardize the pooled features (mean/variance of the training set), then dense layers.

    Standardizing matters: pooled ResNet features range over orders of magnitude between channels.
    """
    mean = np.zeros(feature_dim) if feature_mean is None else feature_mean
    variance = np.ones(feature_dim) if feature_variance is None else feature_variance
    layers = [keras.Input((feature_dim,)),
              keras.layers.Normalization(mean=mean, variance=variance, name="standardize"),
              keras.layers.Dropout(dropout)]
    if hidden_units:
        layers += [keras.layers.Dense(hidden_units, activation="relu"), keras.layers.Dropout(dropout)]
    layers.append(keras.layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return keras.Sequential(layers, name="head")


def resize_layer(image_size: int) -> keras.layers.Layer:
    """The one resize used by data loading and inside the saved model, so both see the same pixels."""
    return keras.layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")


def preprocessing_layers(backbone: str, image_size: int):
    return [resize_layer(image_size), BackbonePreprocess(backbone, name="preprocess")]


def assemble(backbone_model: keras.Model, head: keras.Model, backbone: str, image_size: int) -> keras.Model:
    """Raw RGB images of any size in, class probabilities out; the backbone runs in inference mode."""
    images = keras.Input((None, None, 3), name="images")
    x = images
    for layer in preprocessing_layers(backbone, image_size):
        x = layer(x)
    # training=False keeps BatchNorm in inference mode even when the backbone is unfrozen.
    features = backbone_model(x, training=False)
    return keras.Model(images, head(features), name="asl_classifier")


def find_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone inside an assembled model: the sub-model that is not the head."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "head"]
    if len(nested) != 1:
        raise PipelineError(f"expected one nested backbone in model {model.name!r}, found {len(nested)}")
    return nested[0]


def save_model(model: keras.Model, classes, model_file: Path, labels_file: Path) -> None:
    with atomic_file(model_file) as tmp:
        model.save(tmp)
    write_json(labels_file, list(classes))


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


def image_size_of(model: keras.Model) -> int:
    return model.get_layer("resize").get_config()["height"]

