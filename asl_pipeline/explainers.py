"""Why the model chose a class: the one explainer each kind of model gets, behind one contract.

- A model with a backbone (ResNet50 alone or fused with hand landmarks): Grad-CAM (gradcam.py), a heatmap
  over the backbone's input.
- A landmarks-only model: keypoint attribution (keypoint_attribution.py), a weight per hand keypoint, drawn
  as the skeleton with each joint coloured by its weight.

`explainer_for` picks it; the explainer is called on one batch of the model's inputs and the classes to
explain (None: the predicted ones) and returns Explanations, so that inference, explain, predict and serve
need no branch on the kind of model.
"""
import dataclasses

import keras
import numpy as np

from asl_pipeline.featurizers import FeatureSpec
from asl_pipeline.model import input_names


@dataclasses.dataclass(frozen=True)
class Explanations:
    """One batch's class probabilities and, by the model's explainer, one kind of explanation per photo."""

    probabilities: np.ndarray  # [N, C]
    heatmaps: np.ndarray | None = None  # [N, h, w] Grad-CAM in [0, 1] over the backbone's input
    keypoint_weights: np.ndarray | None = None  # [N, 21] summing to 1 per photo (all zero without a hand)


def explainer_for(network: keras.Model, spec: FeatureSpec):
    """A callable (inputs, class_indices or None) -> Explanations for `network`, built (and compiled) once."""
    if "images" in input_names(network):
        from asl_pipeline.gradcam import GradCam

        gradcam = GradCam(network)

        def explain_by_heatmap(inputs, class_indices=None):
            maps, probabilities = gradcam.heatmaps(inputs, class_indices)
            return Explanations(probabilities, heatmaps=maps)
        return explain_by_heatmap

    from asl_pipeline.keypoint_attribution import KeypointAttribution

    attribution = KeypointAttribution(network, spec.hands.features)

    def explain_by_keypoints(inputs, class_indices=None):
        weights, probabilities = attribution.weights(inputs["hand"], class_indices)
        return Explanations(probabilities, keypoint_weights=weights)
    return explain_by_keypoints
