"""A trained model with everything it needs to read photos: the one serving path of evaluate, explain
and predict.

`load_classifier` finds the model's companions beside it (labels.json, featurizers.json and the hand
model bundle) so that a `models/` folder pulled onto another machine is enough.
"""
import dataclasses
import functools
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from asl_pipeline import hand_model, images, model
from asl_pipeline.config import ModelFiles
from asl_pipeline.errors import PipelineError
from asl_pipeline.explainers import Explanations, explainer_for
from asl_pipeline.featurizers import Featurizer, FeatureSpec, Prepared, crop_matrix

BATCH_SIZE = 16


@dataclasses.dataclass
class Classifier:
    network: keras.Model
    classes: list
    featurizer: Featurizer
    model_file: Path
    run: dict  # run.json beside the model: pretrained, backbone weights, git commit, DVC experiment

    @property
    def spec(self) -> FeatureSpec:
        return self.featurizer.spec

    @functools.cached_property
    def _forward(self):
        return tf.function(lambda x: self.network(x, training=False), reduce_retracing=True)

    @functools.cached_property
    def _explainer(self):
        return explainer_for(self.network, self.spec)

    def analyse(self, photos, class_indices=None, with_heatmaps: bool = True, track=None) -> list:
        """One Analysis (path None) per RGB uint8 photo, any sizes: probabilities, hand and explanation.

        class_indices: per photo, the class to explain; None: the predicted class. with_heatmaps: explain
        at all, by the model's explainer (explainers.py): a heatmap for a model with a backbone, keypoint
        weights for a landmarks-only model. track: a featurizers.Track when the photos are the next frames of a
        video, in order: each frame's hand is found from the last one's.
        """
        prepared = [self.featurizer.prepare(photo, track) for photo in photos]
        inputs = self.inputs(prepared)
        if with_heatmaps:
            explained = self._explainer(inputs, None if class_indices is None else np.asarray(class_indices))
        else:
            explained = Explanations(keras.ops.convert_to_numpy(self._forward(inputs)))
        maps = [None] * len(photos) if explained.heatmaps is None else [
            _photo_heatmap(m, p, photo, self.spec) for m, p, photo in zip(explained.heatmaps, prepared, photos)]
        weights = [None] * len(photos) if explained.keypoint_weights is None else list(explained.keypoint_weights)
        found = [p.hand is not None if self.spec.uses_hands else None for p in prepared]
        return [Analysis(None, photo, np.asarray(row, np.float32), heatmap, p.hand, was_found,
                         keypoint_weights=weight)
                for photo, row, heatmap, p, was_found, weight in zip(photos, explained.probabilities, maps,
                                                                     prepared, found, weights)]

    def inputs(self, prepared: list[Prepared]) -> dict:
        """One batch of the network's inputs from prepared photos of any sizes."""
        names = model.input_names(self.network)
        batch = {}
        if "images" in names:
            resize = self.network.get_layer("resize")
            # Each photo is resized by the model's own layer, so a batch sees what the model alone would.
            batch["images"] = np.stack([keras.ops.convert_to_numpy(resize(p.image[None].astype(np.float32)))[0]
                                        for p in prepared])
        if "hand" in names:
            batch["hand"] = np.stack([p.hand_vector for p in prepared])
        return batch


def load_classifier(model_file: Path) -> Classifier:
    """The model at `model_file` with its class names, feature spec and (if it uses hands) hand model."""
    files = ModelFiles(Path(model_file))
    model_file = files.model
    network, classes = model.load_model(model_file, files.labels)
    spec = model.load_spec(files.spec)
    expected = {"images"} if spec.uses_backbone else set()
    expected |= {"hand"} if "hand_landmarks" in spec.featurizers else set()
    if set(model.input_names(network)) != expected:
        raise PipelineError(f"model {model_file} takes inputs {sorted(model.input_names(network))} but "
                            f"{files.spec} describes {sorted(expected)}: the two files come from different "
                            "runs; re-run `dvc repro train`")
    bundle = hand_model.verified_bundle(files.hand_model) if spec.uses_hands else None
    run_file = files.run
    try:
        run = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PipelineError(f"{run_file} is damaged ({error}): it is written next to the model by the train "
                            "stage; re-run `dvc repro train`, or delete it to serve without run details") from None
    return Classifier(network, classes, Featurizer(spec, bundle), model_file, run)


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What the model makes of one input file; `error` is set, and the rest None, when it is unreadable."""

    path: Path | None
    image: np.ndarray | None  # the original photo, RGB uint8
    probabilities: np.ndarray | None
    heatmap: np.ndarray | None  # Grad-CAM in [0, 1] over the photo; None without heatmaps or backbone
    hand: object = None  # hands.Hand, or None when none was found or hands are not used
    hand_found: bool | None = None  # None when the model does not look for hands
    error: images.UnreadableImage | None = None
    # (21,) weight per hand keypoint of a landmarks-only model, summing to 1 (all zero without a hand);
    # None without explanations or for a model with a backbone, which gets the heatmap instead.
    keypoint_weights: np.ndarray | None = None


def _photo_heatmap(heatmap: np.ndarray, prepared: Prepared, photo: np.ndarray, spec: FeatureSpec):
    """A heatmap of the backbone's input drawn back onto the photo (outside a hand crop: zero)."""
    if not (spec.crop_to_hand and prepared.hand is not None):
        return heatmap
    size = spec.image_size
    crop_map = cv2.resize(heatmap.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    height, width = photo.shape[:2]
    return cv2.warpAffine(crop_map, crop_matrix(prepared.hand.box, size), (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def analyse_images(classifier: Classifier, paths, class_indices=None, batch_size: int = BATCH_SIZE,
                   with_heatmaps: bool = True, mirrored: bool = False):
    """Yield one Analysis per path, in order, loading and running `batch_size` files at a time.

    An unreadable file yields an Analysis with its error set; the others are still analysed. mirrored: each
    photo is flipped left to right first (a left hand, a selfie preview).
    """
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        loaded, results = [], {}
        for offset, path in enumerate(batch):
            try:
                photo = images.load_rgb(path)
                loaded.append((offset, np.ascontiguousarray(photo[:, ::-1]) if mirrored else photo))
            except images.UnreadableImage as error:
                results[offset] = Analysis(Path(path), None, None, None, error=error)
        if loaded:
            targets = (None if class_indices is None
                       else [class_indices[start + offset] for offset, _ in loaded])
            analyses = classifier.analyse([photo for _, photo in loaded], targets, with_heatmaps)
            for (offset, _), analysis in zip(loaded, analyses):
                results[offset] = dataclasses.replace(analysis, path=Path(batch[offset]))
        yield from (results[offset] for offset in range(len(batch)))
