"""Grad-CAM on the assembled classifier, overlays and the explain stage's plots.

The recipe is keras.io's "Grad-CAM class activation visualization", adapted to a model whose backbone is
nested: the outer model's resize and preprocess layers run first, then a view of the backbone that also
returns its last convolutional feature map, then the head.
"""
import csv
import dataclasses
import re
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from asl_pipeline import dataset, images
from asl_pipeline.plots import save_grid, save_titled_overlay
from asl_pipeline.atomic import atomic_dir, atomic_file
from asl_pipeline.backbones import BACKBONES
from asl_pipeline.config import ExplainParams, Paths
from asl_pipeline.errors import PipelineError
from asl_pipeline.model import find_backbone, load_model

BATCH_SIZE = 16
GRID_COLUMNS = 6
MISCLASSIFIED_COLUMNS = ("path", "label", "predicted", "probability")


def default_last_conv_layer(model: keras.Model) -> str:
    """The registry's last conv layer for the model's backbone, else the backbone's last 4-D output."""
    backbone = find_backbone(model)
    # The preprocess layer stores the registry key; the backbone's own name differs for some
    # architectures (keras names MobileNetV2 'mobilenetv2_1.00_224').
    spec = BACKBONES.get(model.get_layer("preprocess").backbone)
    names = {layer.name for layer in backbone.layers}
    if spec is not None and spec.last_conv_layer in names:
        return spec.last_conv_layer
    four_d = [layer.name for layer in backbone.layers if len(layer.output.shape) == 4]
    if not four_d:
        raise PipelineError(f"backbone {backbone.name!r} has no layer with a 4-D output for Grad-CAM")
    return four_d[-1]


def _head_logits(head: keras.Model, features):
    """The head's pre-softmax class scores and its probabilities.

    Grad-CAM differentiates the logit: a confident softmax saturates and its gradient vanishes.
    The head is build_head's Sequential, whose last layer is a Dense with a softmax activation.
    """
    *hidden_layers, output = head.layers
    if not isinstance(output, keras.layers.Dense):
        raise PipelineError(f"the head's last layer {output.name!r} is not Dense; Grad-CAM needs its logits")
    x = features
    for layer in hidden_layers:
        x = layer(x, training=False)
    logits = keras.ops.matmul(keras.ops.cast(x, output.kernel.dtype), output.kernel)
    if output.use_bias:
        logits = logits + output.bias
    return logits, output.activation(logits)


class GradCam:
    """Grad-CAM maps and class probabilities for one assembled model, compiled once, run per batch.

    Eager execution runs the backbone at half the speed of a compiled graph on a CPU, so both the
    gradient pass and the plain prediction are tf.functions.
    """

    def __init__(self, model: keras.Model, last_conv_layer: str | None = None):
        backbone = find_backbone(model)
        layer = last_conv_layer or default_last_conv_layer(model)
        self._grad_backbone = keras.Model(backbone.inputs, [backbone.get_layer(layer).output, backbone.output])
        self._model = model
        self._maps = tf.function(self._maps_graph, reduce_retracing=True)
        self._probabilities = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def _maps_graph(self, images, class_indices):
        model = self._model
        x = model.get_layer("preprocess")(model.get_layer("resize")(images))
        with tf.GradientTape() as tape:
            # A frozen backbone has no watched variables, so without this the tape would record nothing
            # between the conv output and the score.
            tape.watch(x)
            conv, features = self._grad_backbone(x, training=False)
            logits, probabilities = _head_logits(model.get_layer("head"), features)
            predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
            targets = tf.where(class_indices < 0, predicted, class_indices)  # -1: the predicted class
            score = tf.gather(logits, targets, axis=1, batch_dims=1)
        grads = tf.cast(tape.gradient(score, conv), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per image and channel
        maps = tf.nn.relu(tf.einsum("nhwc,nc->nhw", tf.cast(conv, tf.float32), weights))
        peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(maps, peak), tf.cast(probabilities, tf.float32)  # all-zero stays zero

    def heatmaps(self, images: np.ndarray, class_indices=None):
        """(maps [N, h, w] float32 in [0, 1] at the conv layer's resolution, probabilities [N, C]).

        images: equally sized RGB, float32 [N, H, W, 3], values 0-255. class_indices: the class to explain
        per image; None explains each image's predicted class.
        """
        targets = np.full(len(images), -1) if class_indices is None else np.asarray(class_indices)
        maps, probabilities = self._maps(tf.convert_to_tensor(images, tf.float32),
                                         tf.convert_to_tensor(targets, tf.int32))
        return maps.numpy(), probabilities.numpy()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(self._probabilities(tf.convert_to_tensor(images, tf.float32)))


def heatmaps(model: keras.Model, images: np.ndarray, class_indices=None, last_conv_layer: str | None = None):
    """Grad-CAM of one batch: see GradCam.heatmaps. Build a GradCam to run many batches."""
    return GradCam(model, last_conv_layer).heatmaps(images, class_indices)


def to_model_size(model: keras.Model, rgb_images) -> np.ndarray:
    """One float32 batch from photos of any sizes, resized by the model's own layer so it sees the same."""
    resize = model.get_layer("resize")
    return np.stack([keras.ops.convert_to_numpy(resize(image[None].astype(np.float32)))[0]
                     for image in rgb_images])


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What the model makes of one input file; `error` is set, and the rest None, when it is unreadable."""

    path: Path
    image: np.ndarray | None  # the original photo, RGB uint8
    probabilities: np.ndarray | None
    heatmap: np.ndarray | None  # None also when heatmaps were not asked for
    error: images.UnreadableImage | None = None


def analyse_images(model: keras.Model, paths, class_indices=None, batch_size: int = BATCH_SIZE,
                   with_heatmaps: bool = True):
    """Yield one Analysis per path, in order, loading and running `batch_size` files at a time.

    class_indices: per path, the class whose heatmap to compute; None: the predicted class.
    """
    explainer = GradCam(model)
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        loaded, results = [], {}
        for offset, path in enumerate(batch):
            try:
                loaded.append((offset, images.load_rgb(path)))
            except images.UnreadableImage as error:
                results[offset] = Analysis(Path(path), None, None, None, error)
        if loaded:
            x = to_model_size(model, [image for _, image in loaded])
            if with_heatmaps:
                targets = (None if class_indices is None
                           else np.asarray([class_indices[start + offset] for offset, _ in loaded]))
                maps, probabilities = explainer.heatmaps(x, targets)
            else:
                maps = [None] * len(loaded)
                probabilities = explainer.probabilities(x)
            for (offset, image), heatmap, row in zip(loaded, maps, probabilities):
                results[offset] = Analysis(Path(batch[offset]), image, row, heatmap)
        yield from (results[offset] for offset in range(len(batch)))


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """The heatmap, stretched to the image's own size and jet-coloured, blended over it with `alpha`."""
    height, width = image.shape[:2]
    stretched = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.round(255 * np.clip(stretched, 0, 1)).astype(np.uint8)
    # OpenCV colour maps are BGR; everything else here is RGB.
    colored = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = alpha * colored.astype(np.float32) + (1 - alpha) * image.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_png(path: Path, rgb: np.ndarray) -> None:
    """The pixels alone, at their own size."""
    with atomic_file(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def safe_name(text: str) -> str:
    """A file-name part from a class name or stem: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def unique_names(names) -> list[str]:
    """The names in order, with repeats suffixed _2, _3, ... (skipping suffixes already taken)."""
    originals, used, result = set(names), set(), []
    for name in names:
        candidate, counter = name, 1
        # A suffixed name must not take an original name either, wherever that appears in the list.
        while candidate in used or (counter > 1 and candidate in originals):
            counter += 1
            candidate = f"{name}_{counter}"
        used.add(candidate)
        result.append(candidate)
    return result


@dataclasses.dataclass(frozen=True)
class Choice:
    path: str  # relative to the project root, as in the manifests
    label: str
    misclassified_as: str | None = None  # the evaluate stage's prediction, for a misclassified image

    @property
    def name(self) -> str:
        """Output file name without the .png suffix, before de-duplication."""
        stem = safe_name(Path(self.path).stem)
        if self.misclassified_as is None:
            return f"{safe_name(self.label)}_{stem}"
        return f"misclassified_{safe_name(self.label)}_as_{safe_name(self.misclassified_as)}_{stem}"


def read_misclassified(path: Path, classes) -> list[tuple[str, str, str]]:
    """(path, label, predicted) rows of the evaluate stage's misclassified.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run `dvc repro evaluate`") from None
    missing = [column for column in MISCLASSIFIED_COLUMNS if column not in columns]
    if missing:
        raise PipelineError(f"{path} lacks the columns {missing} ({','.join(MISCLASSIFIED_COLUMNS)} "
                            "expected): re-run `dvc repro evaluate`")
    unknown = sorted({row[key] for row in rows for key in ("label", "predicted")} - set(classes))
    if unknown:
        raise PipelineError(f"{path} names classes {unknown} the model does not know: it comes from another "
                            "run; re-run `dvc repro evaluate`")
    return [(row["path"], row["label"], row["predicted"]) for row in rows]


def choose_images(test_paths, test_labels, misclassified, per_class: int, max_misclassified: int):
    """The first `per_class` test images of each class, then up to `max_misclassified` misclassified ones.

    An image in both lists is shown once, as misclassified, which says more about it.
    """
    wrong = [Choice(path, label, predicted) for path, label, predicted in misclassified[:max_misclassified]]
    wrong_paths = {choice.path for choice in wrong}
    taken, typical = {}, []
    for path, label in zip(test_paths, test_labels):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            if path not in wrong_paths:
                typical.append(Choice(path, label))
    return typical + wrong


@dataclasses.dataclass(frozen=True)
class ExplainSummary:
    out_dir: Path
    written: int  # overlays, not counting grid.png
    misclassified: int
    skipped: int  # unreadable images


def explain_test_set(paths: Paths, params: ExplainParams, batch_size: int = BATCH_SIZE) -> ExplainSummary:
    """Write plots/gradcam/: one titled overlay per chosen test image and grid.png, all or nothing."""
    model, classes = load_model(paths.model_file, paths.labels_file)
    test_paths, test_labels = dataset.read_manifest(paths.manifest("test"), classes)
    misclassified = read_misclassified(paths.eval / "misclassified.csv", classes)
    choices = choose_images(test_paths, test_labels, misclassified, params.per_class, params.max_misclassified)
    targets = [classes.index(c.label) for c in choices] if params.target == "true" else None
    names = unique_names([choice.name for choice in choices])
    out_dir = paths.plots / "gradcam"
    grid, skipped, wrong = [], 0, 0
    with atomic_dir(out_dir) as tmp:
        results = analyse_images(model, [paths.root / c.path for c in choices], targets, batch_size)
        for choice, name, result in zip(choices, names, results):
            if result.error is not None:
                print(f"skipped {result.error}", file=sys.stderr)
                skipped += 1
                continue
            predicted = int(np.argmax(result.probabilities))
            title = (f"true {choice.label} / pred {classes[predicted]} "
                     f"(p={result.probabilities[predicted]:.2f})")
            image = overlay(result.image, result.heatmap, params.alpha)
            save_titled_overlay(tmp / f"{name}.png", image, title)
            grid.append((image, title))
            wrong += choice.misclassified_as is not None
        save_grid(tmp / "grid.png", grid, GRID_COLUMNS)
    return ExplainSummary(out_dir, len(grid), wrong, skipped)
