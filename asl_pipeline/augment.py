"""New training rows from hand-landmark vectors: small changes of viewpoint and hand shape.

The training photos show one signer's hand, seen by one camera. A letter does not change when it is
viewed a little from the side or made by a hand with longer fingers or a wider palm; these functions make
such views of every training hand in landmark space, where they cost microseconds instead of a photo and a
detection each. (Left hands are read as right ones by the featurizer: hands.mirror_left.)

Rotations stay small (+-15 degrees by default): some letters differ from another mainly by orientation
(G and Q, H and U, K and P), and a large rotation would turn one into the other.
"""
import dataclasses

import numpy as np

from asl_pipeline.featurizers import FINGER_CHAINS, FeatureSpec, hand_found, vector_from_points


@dataclasses.dataclass(frozen=True)
class LandmarkAugmentation:
    """How far each random change goes; each copy draws every change anew."""

    rotation_degrees: float = 15.0  # 3D rotation about each axis, uniform in +-this
    bone_length: float = 0.15  # every finger bone scaled by a factor in 1 +- this
    palm: float = 0.10  # palm width and length scaled by 1 +- this
    joint_noise: float = 0.02  # Gaussian noise per keypoint, as a share of the hand's size


def hand_points(vectors: np.ndarray) -> np.ndarray:
    """(N, 21, 3) normalized keypoints from hand vectors (the `keypoints` group comes first)."""
    return vectors[:, :63].reshape(-1, 21, 3).astype(np.float64)


def _rotation(rng: np.random.Generator, degrees: float) -> np.ndarray:
    x, y, z = np.radians(rng.uniform(-degrees, degrees, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def reshape_hand(points: np.ndarray, rng: np.random.Generator, change: LandmarkAugmentation) -> np.ndarray:
    """One hand's (21, 3) keypoints, wrist at the origin, with another palm, other bone lengths, seen from a
    slightly other angle, plus joint noise; normalized again (wrist at the origin, mean wrist distance 1)."""
    new = points.copy()
    palm_scale = 1 + rng.uniform(-change.palm, change.palm, 3)
    for chain in FINGER_CHAINS:
        base = chain[1]
        new[base] = points[base] * palm_scale
        for parent, child in zip(chain[1:], chain[2:]):
            bone = points[child] - points[parent]
            new[child] = new[parent] + bone * (1 + rng.uniform(-change.bone_length, change.bone_length))
    new = new @ _rotation(rng, change.rotation_degrees).T
    size = np.linalg.norm(new[1:], axis=1).mean()
    new += rng.normal(0, change.joint_noise * size, new.shape)
    new -= new[0]
    scale = np.linalg.norm(new[1:], axis=1).mean()
    return new / scale if scale > 0 else new


def augmented_copies(vectors: np.ndarray, spec: FeatureSpec, copies: int, seed: int,
                     change: LandmarkAugmentation = LandmarkAugmentation()) -> np.ndarray:
    """`copies` reshaped views of every found hand in `vectors`, copy after copy ((copies * N, D) rows;
    rows without a hand are copied unchanged). Deterministic for a seed."""
    if "keypoints" not in spec.hands.features:
        raise ValueError("landmark augmentation rebuilds the vector from its keypoints: hands.features "
                         "must include 'keypoints'")
    rng = np.random.default_rng(seed)
    points = hand_points(vectors)
    # The confidence group, where used, sits just before the found flag; a reshaped hand keeps its scores.
    confidence = vectors[:, -4:-1] if "confidence" in spec.hands.features else [None] * len(vectors)
    out = []
    for _ in range(copies):
        view = vectors.copy()
        for index in np.flatnonzero(hand_found(vectors)):
            view[index] = vector_from_points(reshape_hand(points[index], rng, change), spec, confidence[index])
        out.append(view)
    return np.concatenate(out) if out else np.empty((0, vectors.shape[1]), np.float32)
