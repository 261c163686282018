"""Which hand keypoints decided the letter: gradient x input on a landmarks-only model, per keypoint.

Grad-CAM needs a backbone's feature map; a model that reads only the `hand` vector gets this instead. The
head's first layer standardizes the vector with the training set's mean and variance; the attribution of a
feature is its standardized value times the gradient of the class score with respect to it, i.e. gradient
x (input - the mean training hand). Each feature's |attribution| is then shared out over the keypoints it is
computed from (featurizers.feature_keypoints) and the 21 sums are normalised to add up to 1.

|.| rather than the positive part: a feature that pulls hard against the explained class (say, a thumb
that is not where it would be for the runner-up) is just as much part of the decision, and with the SVM's
pairwise score the sign only says which of the two letters a feature favours.
"""
import keras
import numpy as np
import tensorflow as tf

from asl_pipeline.errors import PipelineError
from asl_pipeline.featurizers import feature_keypoints
from asl_pipeline.model import OneVsOneScores, class_pairs, input_names

NUM_KEYPOINTS = 21


def _pair_lookup(num_classes: int):
    """(index, sign) tables [C, C]: the one-vs-one column of classes (t, r) and the sign that makes it
    positive when t beats r (libsvm's column (i, j), i < j, is positive when i wins)."""
    index = np.zeros((num_classes, num_classes), np.int32)
    sign = np.zeros((num_classes, num_classes), np.float32)
    for k, (i, j) in enumerate(class_pairs(num_classes)):
        index[i, j] = index[j, i] = k
        sign[i, j], sign[j, i] = 1.0, -1.0
    return index, sign


class KeypointAttribution:
    """Per photo a (21,) weight per hand keypoint for one class, for a model whose only input is `hand`;
    compiled once per model, run per batch.

    The score differentiated depends on the head:
    - mlp: the class's logit (the layer before the softmax, which saturates), as Grad-CAM does.
    - svm: the one-vs-one decision value of the explained class against the runner-up (the best other class
      by the head's scores). The head's `logits` are votes, which have no gradient, plus a tie-breaking
      confidence that sums the class's decisions against all 23 others (28 with del/nothing/space): its
      gradient is dominated by letters far from this hand (A vs W, A vs Y) and says little about why it is
      A and not S. The pairwise decision is exactly the SVM's verdict between the two letters it hesitated
      over. tests/test_keypoint_attribution.py measures both on real A/S photos.
    versus_runner_up overrides the choice: True explains the class against the runner-up (for an mlp, the
    difference of the two logits), False the class's own logit (for an svm, the confidence term).
    A row without a hand (found flag 0) gets all-zero weights: there is nothing to attribute.
    """

    def __init__(self, model: keras.Model, features: tuple, versus_runner_up: bool | None = None):
        if tuple(input_names(model)) != ("hand",):
            raise PipelineError(f"keypoint attribution needs a model reading only the hand vector; model "
                                f"{model.name!r} takes {list(input_names(model))}")
        head = model.get_layer("head")
        *layers, output = head.layers
        if layers[0].name != "standardize" or output.name != "probabilities" or layers[-1].name != "logits":
            raise PipelineError(f"the head of {model.name!r} does not run standardize ... logits, "
                                "probabilities; cannot attribute its scores")
        self._standardize, self._scoring, self._softmax = layers[0], layers[1:], output
        self._pairwise = isinstance(layers[-1], OneVsOneScores)
        self._versus_runner_up = self._pairwise if versus_runner_up is None else versus_runner_up
        mapping = feature_keypoints(features)
        if mapping.shape[0] != head.input_shape[-1]:
            raise PipelineError(f"the hand features {list(features)} make {mapping.shape[0]} values but the "
                                f"head reads {head.input_shape[-1]}: the feature spec is from another run")
        self._mapping = tf.constant(mapping)
        num_classes = head.output_shape[-1]
        index, sign = _pair_lookup(num_classes)
        self._pair_index, self._pair_sign = tf.constant(index), tf.constant(sign)
        self._weights = tf.function(self._weights_graph, reduce_retracing=True)

    def _weights_graph(self, hand, class_indices):
        x = tf.cast(self._standardize(hand), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = x
            for layer in self._scoring[:-1]:
                h = layer(h, training=False)
            decisions = tf.cast(h, tf.float32)  # the one-vs-one decisions, for an svm head
            logits = tf.cast(self._scoring[-1](h, training=False), tf.float32)
            probabilities = tf.cast(self._softmax(logits), tf.float32)
            predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
            targets = tf.where(class_indices < 0, predicted, class_indices)  # -1: the predicted class
            score = tf.gather(logits, targets, axis=1, batch_dims=1)
            if self._versus_runner_up:
                others = tf.where(tf.one_hot(targets, tf.shape(logits)[1]) > 0, -np.inf, logits)
                runner_up = tf.argmax(others, axis=1, output_type=tf.int32)
                if self._pairwise:
                    pair = tf.stack([targets, runner_up], axis=1)
                    column = tf.gather_nd(self._pair_index, pair)
                    score = tf.gather_nd(self._pair_sign, pair) * tf.gather(decisions, column, axis=1,
                                                                            batch_dims=1)
                else:
                    score -= tf.gather(logits, runner_up, axis=1, batch_dims=1)
        contributions = tf.abs(tape.gradient(score, x) * x)
        per_keypoint = tf.matmul(contributions, self._mapping)
        total = tf.reduce_sum(per_keypoint, axis=1, keepdims=True)
        found = tf.cast(hand[:, -1:] > 0.5, tf.float32)
        return tf.math.divide_no_nan(per_keypoint, total) * found, probabilities

    def weights(self, hand: np.ndarray, class_indices=None):
        """(weights [N, 21] float32, non-negative, each row summing to 1 (0 without a hand), probabilities [N, C]).

        hand: the model's hand vectors [N, hand_dim]; class_indices: the class to explain per row, None for
        each row's predicted class.
        """
        hand = np.asarray(hand, np.float32)
        targets = np.full(len(hand), -1) if class_indices is None else np.asarray(class_indices)
        weights, probabilities = self._weights(tf.convert_to_tensor(hand), tf.convert_to_tensor(targets, tf.int32))
        return weights.numpy(), probabilities.numpy()
