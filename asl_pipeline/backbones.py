"""Backbone registry: name -> keras.applications constructor, its preprocess_input, last conv layer.

Keras is imported inside functions so that reading params (and `--help`) stays fast.
"""
import dataclasses
import importlib
import os
from pathlib import Path

from asl_pipeline.errors import PipelineError

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    module: str  # keras.applications submodule that owns preprocess_input
    constructor: str
    last_conv_layer: str
    min_image_size: int
    weights_file: str  # what Keras saves under ~/.keras/models/ for include_top=False
    weights_url_dir: str

    def weights_url(self) -> str:
        return KERAS_WEIGHTS_URL + self.weights_url_dir + "/" + self.weights_file


BACKBONES = {
    b.name: b
    for b in [
        Backbone("resnet50", "resnet50", "ResNet50", "conv5_block3_out", 32,
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet"),
        Backbone("resnet101", "resnet", "ResNet101", "conv5_block3_out", 32,
                 "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet"),
        Backbone("mobilenet_v2", "mobilenet_v2", "MobileNetV2", "out_relu", 32,
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", "mobilenet_v2"),
        Backbone("efficientnet_b0", "efficientnet", "EfficientNetB0", "top_activation", 32,
                 "efficientnetb0_notop.h5", "efficientnet"),
    ]
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise PipelineError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def preprocess_input(name: str):
    """The preprocessing the backbone's ImageNet weights were trained with (RGB 0-255 in)."""
    module = importlib.import_module(f"keras.applications.{get_backbone(name).module}")
    return module.preprocess_input


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def build_backbone(name: str, image_size: int, weights: str | Path | None):
    """The backbone without its top, global-average pooled. `weights`: None, 'imagenet' or a file."""
    import keras

    spec = get_backbone(name)
    constructor = getattr(keras.applications, spec.constructor)
    return constructor(include_top=False, weights=weights, pooling="avg",
                       input_shape=(image_size, image_size, 3))


def resolve_weights(name: str, weights: str, image_size: int):
    """Build the backbone for params `model.weights` and say whether it is pretrained.

    Returns (model, description, pretrained). 'auto' falls back to random init with a loud warning;
    'imagenet' is strict and names the file Keras looks for.
    """
    spec = get_backbone(name)
    if weights == "none":
        return build_backbone(name, image_size, None), "random init (model.weights: none)", False
    if weights in ("imagenet", "auto"):
        try:
            model = build_backbone(name, image_size, "imagenet")
            return model, f"imagenet ({keras_cache_dir() / spec.weights_file})", True
        except Exception as error:  # Keras raises a bare Exception for a failed download
            message = (
                f"cannot load ImageNet weights for {name}: {error}\n"
                f"  Keras looks for {keras_cache_dir() / spec.weights_file}\n"
                f"  Without network, download {spec.weights_url()} on another machine and copy it there,\n"
                f"  or set model.weights in params.yaml to that file's path, or to 'none' for random init."
            )
            if weights == "imagenet":
                raise PipelineError(message) from error
            print("WARNING " + "=" * 70)
            print("WARNING model.weights is 'auto' and " + message)
            print("WARNING Falling back to RANDOM INIT: accuracy will be far below a pretrained backbone.")
            print("WARNING " + "=" * 70)
            return build_backbone(name, image_size, None), "random init (imagenet unavailable)", False
    path = Path(weights)
    if not path.is_file():
        raise PipelineError(
            f"model.weights is {weights!r}, which is neither auto, imagenet, none nor an existing file"
        )
    try:
        return build_backbone(name, image_size, str(path)), f"file {path}", True
    except Exception as error:
        raise PipelineError(f"cannot load backbone weights from {path}: {error}") from error


def resize_layer(image_size: int):
    """The one resize (a Keras layer) used by data loading and inside the saved model, so both see the same
    pixels."""
    import keras  # here, not at the top: params validation imports this module and need not load Keras

    return keras.layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")
