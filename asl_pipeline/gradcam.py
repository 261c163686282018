"""Grad-CAM on the backbone branch of the assembled classifier.

The recipe is keras.io's "Grad-CAM class activation visualization", adapted to a model whose backbone is
nested: the outer model's resize and preprocess layers run first, then a view of the backbone that also
returns its last convolutional feature map, then (beside the hand-landmark block, if the model has one,
held fixed) the head.
"""
import keras
import numpy as np
import tensorflow as tf

from asl_pipeline.backbones import BACKBONES
from asl_pipeline.errors import PipelineError
from asl_pipeline.featurizers import ordered_blocks
from asl_pipeline.model import find_backbone, input_names


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

    Grad-CAM differentiates the logit: a confident softmax saturates and its gradient vanishes. Every
    head (model.build_head, model.svm_head) ends in a softmax layer with the logits just before it.
    """
    *scoring_layers, output = head.layers
    if not (isinstance(output, keras.layers.Activation) and output.name == "probabilities"):
        raise PipelineError(f"the head's last layer {output.name!r} is not its softmax; Grad-CAM needs the "
                            "logits before it")
    x = features
    for layer in scoring_layers:
        x = layer(x, training=False)
    logits = keras.ops.cast(x, "float32")
    return logits, output(logits)


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
        self._with_hand = "hand" in input_names(model)
        self._maps = tf.function(self._maps_graph, reduce_retracing=True)

    def _maps_graph(self, inputs, class_indices):
        model = self._model
        x = model.get_layer("preprocess")(model.get_layer("resize")(inputs["images"]))
        with tf.GradientTape() as tape:
            # A frozen backbone has no watched variables, so without this the tape would record nothing
            # between the conv output and the score.
            tape.watch(x)
            conv, features = self._grad_backbone(x, training=False)
            if self._with_hand:  # joined in the one block order model.assemble uses
                blocks = ordered_blocks({"backbone": features, "hand_landmarks": inputs["hand"]})
                features = tf.concat([tf.cast(block, tf.float32) for block in blocks], axis=1)
            logits, probabilities = _head_logits(model.get_layer("head"), features)
            predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
            targets = tf.where(class_indices < 0, predicted, class_indices)  # -1: the predicted class
            score = tf.gather(logits, targets, axis=1, batch_dims=1)
        grads = tf.cast(tape.gradient(score, conv), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per image and channel
        maps = tf.nn.relu(tf.einsum("nhwc,nc->nhw", tf.cast(conv, tf.float32), weights))
        peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(maps, peak), tf.cast(probabilities, tf.float32)  # all-zero stays zero

    def heatmaps(self, inputs: dict, class_indices=None):
        """(maps [N, h, w] float32 in [0, 1] at the conv layer's resolution, probabilities [N, C]).

        inputs: the model's inputs for one batch; "images" equally sized RGB, float32 [N, H, W, 3], values
        0-255. class_indices: the class to explain per image; None explains each image's predicted class.
        """
        count = len(inputs["images"])
        targets = np.full(count, -1) if class_indices is None else np.asarray(class_indices)
        tensors = {name: tf.convert_to_tensor(value, tf.float32) for name, value in inputs.items()}
        maps, probabilities = self._maps(tensors, tf.convert_to_tensor(targets, tf.int32))
        return maps.numpy(), probabilities.numpy()


def heatmaps(model: keras.Model, inputs, class_indices=None, last_conv_layer: str | None = None):
    """Grad-CAM of one batch: see GradCam.heatmaps. Build a GradCam to run many batches.

    inputs: the model's dict of inputs, or just the images for a model without a hand input.
    """
    inputs = inputs if isinstance(inputs, dict) else {"images": inputs}
    return GradCam(model, last_conv_layer).heatmaps(inputs, class_indices)


