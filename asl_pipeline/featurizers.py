"""What the classifier's head reads of a photo: one contract for every featurizer, one place.

- `backbone`: the CNN named by model.backbone, run inside the saved Keras model on its `images` input:
  the photo, or with featurize.crop_to_hand the square crop around the hand.
- `hand_landmarks`: MediaPipe's 21 hand keypoints (run by LiteRT, outside Keras) as a fixed-length
  vector, the saved model's `hand` input.

`Featurizer.prepare` turns one photo into those inputs; `Featurizer.dataset` streams a manifest's photos
through the very same function for featurize and fine-tuning, and `Classifier` (inference.py) calls it for
evaluate, explain and predict, so training and serving cannot disagree about what a photo means.
"""
import contextlib
import dataclasses
import functools
import itertools
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from asl_pipeline import hands, images
from asl_pipeline.config import FEATURIZERS, HandsParams, Params
# The joints whose bend angle is a feature: (a, b, c) is the angle at b between b->a and b->c.
FINGER_CHAINS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (0, 13, 14, 15, 16), (0, 17, 18, 19, 20))
JOINT_ANGLES = tuple((chain[i - 1], chain[i], chain[i + 1]) for chain in FINGER_CHAINS for i in range(1, 4))
KEYPOINT_PAIRS = tuple(itertools.combinations(range(21), 2))
# confidence: P(right hand), the landmark model's presence score and the palm detector's score.
GROUP_SIZES = {"keypoints": 63, "distances": len(KEYPOINT_PAIRS), "angles": len(JOINT_ANGLES), "confidence": 3}
# LiteRT threads of the hand models when prepare is called directly, one photo at a time.
DIRECT_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How photos become the saved model's inputs; saved beside the model as featurizers.json."""

    featurizers: tuple
    backbone: str
    image_size: int
    crop_to_hand: bool
    hands: HandsParams

    @property
    def uses_backbone(self) -> bool:
        return "backbone" in self.featurizers

    @property
    def uses_hands(self) -> bool:
        """Hands are detected when their landmarks are features, or to crop the backbone's input."""
        return "hand_landmarks" in self.featurizers or self.crop_to_hand

    @property
    def hand_dim(self) -> int:
        return sum(GROUP_SIZES[group] for group in self.hands.features) + 1  # the found flag closes the vector

    @classmethod
    def from_params(cls, params: Params) -> "FeatureSpec":
        return cls(params.model.featurizers, params.model.backbone, params.model.image_size,
                   params.featurize.crop_to_hand, params.hands)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "hands": dataclasses.asdict(self.hands)}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSpec":
        hands_params = HandsParams(**{**data["hands"], "features": tuple(data["hands"]["features"])})
        return cls(tuple(data["featurizers"]), data["backbone"], data["image_size"], data["crop_to_hand"],
                   hands_params)


def normalized_keypoints(hand: hands.Hand) -> np.ndarray:
    """(21, 3) keypoints, wrist at the origin, mean wrist distance 1.

    Translation and scale of the hand in the photo drop out; its orientation stays, since some letters
    differ mainly by it (G and Q, H and U, K and P).
    """
    points = hand.landmarks.astype(np.float64) - hand.landmarks[0].astype(np.float64)
    scale = np.linalg.norm(points[1:], axis=1).mean()
    return points / scale if scale > 0 else points


def read_as_right_hand(find_hand, rgb: np.ndarray, hand: hands.Hand | None):
    """The hand to read the letter from: `hand` itself, or for a left hand the hand `find_hand` finds in the
    mirrored photo (HandLandmarker.detect for a photo; a Track's mirrored-frame finder for a video frame).

    The model learns right hands (the training signer's); a left hand, a left-handed signer or a selfie
    preview shows the same letter mirrored. Of the photo's hand and its mirror image's hand, the one more
    likely a right hand is read: the choice is the same for a photo and its mirror, so both read alike.
    Mirroring the photo, not the landmarks, matters: the landmark model is not exactly mirror-symmetric, and
    negated landmarks of a left hand differ from a right hand's by 0.02-0.06 of the hand's size (median).
    """
    if hand is None or hand.handedness >= 0.5:
        return hand
    mirrored = find_hand(np.ascontiguousarray(rgb[:, ::-1]))
    return mirrored if mirrored is not None and mirrored.handedness > hand.handedness else hand


def joint_angles(points: np.ndarray) -> np.ndarray:
    """Bend angle at each finger joint, radians in [0, pi]: the handshape without its size or position."""
    a, b, c = (points[list(index)] for index in zip(*JOINT_ANGLES))
    u, v = a - b, c - b
    cosine = (u * v).sum(axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-9)
    return np.arccos(np.clip(cosine, -1.0, 1.0))


def hand_vector(hand: hands.Hand | None, spec: FeatureSpec) -> np.ndarray:
    """The `hand` input of one photo; all zeros, found flag included, when no hand was found."""
    if hand is None:
        return np.zeros(spec.hand_dim, np.float32)
    return vector_from_points(normalized_keypoints(hand), spec,
                              (hand.handedness, hand.presence, hand.detector_score))


def vector_from_points(points: np.ndarray, spec: FeatureSpec, confidence=None) -> np.ndarray:
    """A found hand's vector from normalized (21, 3) keypoints and, for the `confidence` group, (P(right
    hand), presence, detector score)."""
    groups = {
        "keypoints": lambda: points.ravel(),
        "distances": lambda: np.linalg.norm(points[[i for i, _ in KEYPOINT_PAIRS]]
                                            - points[[j for _, j in KEYPOINT_PAIRS]], axis=1),
        "angles": lambda: joint_angles(points),
        "confidence": lambda: np.asarray(confidence, np.float64),
    }
    blocks = [groups[group]() for group in spec.hands.features]
    blocks.append([1.0])
    return np.concatenate(blocks).astype(np.float32)


def feature_keypoints(features: tuple) -> np.ndarray:
    """(hand_dim, 21): how much of each hand-vector feature belongs to each keypoint, for attributions.

    Row f spreads feature f over the keypoints vector_from_points computes it from, summing to 1, in the
    same group order: a keypoint coordinate belongs to its keypoint; a distance (i, j) half to i, half to
    j; a joint angle (a, b, c) wholly to its vertex b, the joint whose bend it measures (a third to each
    point would credit the wrist with every knuckle's bend at the base of a finger). The confidence
    scalars and the found flag describe no keypoint: their rows are zero.
    """
    rows = {
        "keypoints": lambda: np.repeat(np.eye(21), 3, axis=0),
        "distances": lambda: 0.5 * (np.eye(21)[[i for i, _ in KEYPOINT_PAIRS]]
                                    + np.eye(21)[[j for _, j in KEYPOINT_PAIRS]]),
        "angles": lambda: np.eye(21)[[b for _, b, _ in JOINT_ANGLES]],
        "confidence": lambda: np.zeros((GROUP_SIZES["confidence"], 21)),
    }
    blocks = [rows[group]() for group in features]
    blocks.append(np.zeros((1, 21)))  # the found flag
    return np.concatenate(blocks).astype(np.float32)


def hand_found(hand_vectors: np.ndarray) -> np.ndarray:
    return hand_vectors[:, -1] > 0.5


def upright_box(box) -> tuple:
    """The hand's box as a square of its longest side, not rotated with the hand: its orientation is part of
    the sign."""
    side = max(box[2], box[3], 1.0)
    return (box[0], box[1], side, side, 0.0)


def crop_matrix(box, size: int) -> np.ndarray:
    """The 2x3 affine map from photo pixels to the upright size x size crop of the hand's box."""
    return hands.photo_to_crop_matrix(upright_box(box), size)


def hand_crop(rgb: np.ndarray, hand: hands.Hand, size: int) -> np.ndarray:
    return hands.crop_to_box(rgb, upright_box(hand.box), size, cv2.BORDER_CONSTANT)


def augment_photo(rgb: np.ndarray, rng: np.random.Generator, horizontal_flip: bool) -> np.ndarray:
    """A randomly rotated (up to 18 degrees), zoomed (10%), shifted (10%) and brightened (20%) view."""
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-18, 18), rng.uniform(0.9, 1.1))
    matrix[:, 2] += rng.uniform(-0.1, 0.1, 2) * (width, height)
    view = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if horizontal_flip and rng.random() < 0.5:
        view = view[:, ::-1]
    return np.clip(view.astype(np.float32) + rng.uniform(-0.2, 0.2) * 255, 0, 255).astype(np.uint8)


class Track:
    """The hand of one video followed from frame to frame (hands.HandTrack): in the frames themselves and, for a
    left hand read as the right hand it mirrors, in the mirrored frames. Pass the same Track with every frame of
    a video, in order; photos are read without one."""

    def __init__(self):
        self.frames = hands.HandTrack()
        self.mirrored = hands.HandTrack()

    @property
    def detections(self) -> int:
        """Palm detector runs so far (in the frames and their mirror images)."""
        return self.frames.detections + self.mirrored.detections


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One photo as the model sees it."""

    image: np.ndarray | None  # RGB uint8 for the backbone: the photo, or its hand crop at image_size
    hand_vector: np.ndarray | None
    hand: hands.Hand | None  # as found in the photo (None also when hands are not used)


class Featurizer:
    """Turns photos into model inputs by `spec`; hand detection runs on pooled LiteRT interpreters, one per
    thread at a time."""

    def __init__(self, spec: FeatureSpec, hand_bundle: bytes | None):
        if spec.uses_hands and hand_bundle is None:
            raise ValueError("this feature spec detects hands: pass the hand model bundle")
        self.spec = spec
        self._bundle = hand_bundle
        self._idle = {}  # num_threads -> hand landmarkers no thread is using
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _landmarker(self, num_threads: int):
        """A hand landmarker for this thread alone while in the block, built once and then reused.

        LiteRT interpreters are not thread-safe, and tf.data calls prepare from several threads at once. A
        pool, not threading.local: tf.data's threads are not Python's, and Python forgets their thread-local
        data after every call, so a per-thread landmarker would be rebuilt (zip read, tensors allocated,
        weights packed: as long as a detection) for every photo. XNNPACK splits work by output tiles, so the
        landmarks do not depend on num_threads.
        """
        with self._lock:
            idle = self._idle.setdefault(num_threads, [])
            landmarker = idle.pop() if idle else None
        if landmarker is None:
            h = self.spec.hands
            landmarker = hands.HandLandmarker(
                self._bundle, min_detection_confidence=h.min_detection_confidence,
                min_presence_confidence=h.min_presence_confidence, border=h.border,
                fallback_min_presence=h.fallback_min_presence, num_threads=num_threads,
                second_look_gamma=h.second_look_gamma, second_look_border=h.second_look_border)
        try:
            yield landmarker
        finally:
            with self._lock:
                self._idle[num_threads].append(landmarker)

    def prepare(self, rgb: np.ndarray, track: Track | None = None) -> Prepared:
        """One photo, or with `track` the next frame of that track's video, as the model's inputs."""
        # Called one photo at a time (predict, evaluate, spell): the hand models may use several cores.
        return self._prepare(rgb, DIRECT_THREADS, track)

    def _prepare(self, rgb: np.ndarray, num_threads: int, track: Track | None = None) -> Prepared:
        spec = self.spec
        hand = read = None
        if spec.uses_hands:
            with self._landmarker(num_threads) as landmarker:
                # The one difference between a photo and a video frame: how its hand is found.
                if track is None:
                    find_hand = find_mirrored_hand = landmarker.detect
                else:
                    find_hand = functools.partial(track.frames.find, landmarker)
                    find_mirrored_hand = functools.partial(track.mirrored.find, landmarker)
                hand = read = find_hand(rgb)
                if spec.hands.mirror_left:
                    read = read_as_right_hand(find_mirrored_hand, rgb, hand)
        image = None
        if spec.uses_backbone:
            image = hand_crop(rgb, hand, spec.image_size) if spec.crop_to_hand and hand is not None else rgb
        vector = hand_vector(read, spec) if spec.uses_hands else None
        return Prepared(image, vector, hand)

    def dataset(self, paths, root: Path, batch_size: int, labels=None, view: int = 0, seed: int = 0,
                horizontal_flip: bool = False, shuffle_seed: int | None = None):
        """Batches of {"images": float32 at image_size, "hand": hand vectors} (the keys the spec uses),
        in manifest order, paired with `labels` when given.

        view > 0 is an augmented view, seeded per (seed, view, image) so that parallel decoding stays
        reproducible. Decoding and hand detection run in parallel; memory holds a few batches.
        """
        import tensorflow as tf

        from asl_pipeline import backbones

        spec = self.spec
        resize = backbones.resize_layer(spec.image_size)
        no_image, no_hand = np.zeros((1, 1, 3), np.uint8), np.zeros(0, np.float32)

        def load(path, index):
            rgb = images.load_rgb(path.decode("utf-8"))
            if view:
                rgb = augment_photo(rgb, np.random.default_rng([seed, view, int(index)]), horizontal_flip)
            # tf.data runs this on every core at once: one thread per interpreter.
            prepared = self._prepare(rgb, 1)
            return (no_image if prepared.image is None else prepared.image,
                    no_hand if prepared.hand_vector is None else prepared.hand_vector)

        def element(path, index):
            image, hand = tf.numpy_function(load, [path, index], [tf.uint8, tf.float32], stateful=False)
            inputs = {}
            if spec.uses_backbone:
                image.set_shape([None, None, 3])
                inputs["images"] = resize(tf.cast(image, tf.float32))
            if spec.uses_hands:
                hand.set_shape([spec.hand_dim])
                inputs["hand"] = hand
            return inputs

        files = tf.constant([str(Path(root) / p) for p in paths], dtype=tf.string)
        slices = (files, np.arange(len(files)))
        if labels is not None:
            slices += (np.asarray(labels),)
        data = tf.data.Dataset.from_tensor_slices(slices)
        if shuffle_seed is not None:
            data = data.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
        # One photo per core at a time, two batches ready ahead: what AUTOTUNE settles on here, without its
        # tuning thread, which made every iterator's end wait ~1.7 s for the thread's next wake-up.
        parallel = os.cpu_count() or 1
        if labels is None:
            data = data.map(element, num_parallel_calls=parallel, deterministic=True)
        else:
            data = data.map(lambda path, index, label: (element(path, index), label),
                            num_parallel_calls=parallel, deterministic=True)
        options = tf.data.Options()
        options.autotune.enabled = False
        return data.batch(batch_size).prefetch(2).with_options(options)


def ordered_blocks(blocks: dict) -> list:
    """The feature blocks present in `blocks` in FEATURIZERS order, the head's input order."""
    return [blocks[name] for name in FEATURIZERS if name in blocks]
