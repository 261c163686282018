"""One hand's 21 landmarks per photo: MediaPipe's HandLandmarker (palm detector + landmark model) rebuilt
in numpy + OpenCV around the LiteRT runtime, so the project needs neither the mediapipe package (which
replaces opencv-python-headless's cv2) nor TensorFlow here.

The steps and constants follow MediaPipe's Tasks graphs (mediapipe/tasks/cc/vision/hand_detector/
hand_detector_graph.cc, hand_landmarker/hand_landmarks_detector_graph.cc) and the calculators they
configure; tests/test_hands.py checks the result against MediaPipe's own output. One hand (the most confident
palm). Photos are read one by one (`HandLandmarker`); the frames of a video follow the hand from one frame to the
next (`HandTrack`), as MediaPipe's VIDEO and LIVE_STREAM modes do.
"""
import dataclasses
import io
import math
import zipfile

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from asl_pipeline.errors import PipelineError

BUNDLE_MEMBERS = ("hand_detector.tflite", "hand_landmarks_detector.tflite")

DETECTOR_SIZE = 192
LANDMARK_SIZE = 224
NUM_LANDMARKS = 21

# SsdAnchorsCalculator options of palm_detection_full. Each layer has one aspect ratio plus one interpolated
# scale, and fixed_anchor_size makes every anchor a unit box, so an anchor is just a centre; layers of equal
# stride share one grid.
ANCHOR_STRIDES = (8, 16, 16, 16)
ANCHORS_PER_LAYER = 2
ANCHOR_OFFSET = 0.5

# TensorsToDetectionsCalculator and NonMaxSuppressionCalculator options.
SCORE_CLIPPING = 100.0
NMS_IOU_THRESHOLD = 0.3

# DetectionsToRectsCalculator rotates the rect by target_angle - angle(wrist -> middle-finger MCP), palm
# keypoints 0 and 2. MediaPipe's Tasks hand detector sets rotation_vector_target_angle(90), a field in
# radians (the legacy graph sets rotation_vector_target_angle_degrees: 90), so its crops are turned by
# 90 - 28 pi = pi/2 + 0.46 rad; we keep that to give MediaPipe's landmarks (checked in tests/test_hands.py).
# RectTransformationCalculator then grows the palm box to cover the fingers.
WRIST, MIDDLE_MCP = 0, 2
TARGET_ANGLE = 90.0
HAND_SCALE = 2.6
HAND_SHIFT_Y = -0.5

# TensorsToLandmarksCalculator's normalize_z for the hand landmark model.
LANDMARK_Z_NORMALIZATION = 0.4


@dataclasses.dataclass(frozen=True)
class Hand:
    """One hand found in a photo.

    landmarks: (21, 3) float32, MediaPipe's 21 hand keypoints: x, y in pixels of the photo given; z the
        relative depth (wrist ~ 0, negative towards the camera) in the same pixel scale as x, i.e.
        MediaPipe's normalized z times the width of the image it ran on.
    handedness: the probability that the hand is a right one, as MediaPipe's Tasks HandLandmarker labels
        hands: it prints "Right" with this score when >= 0.5, else "Left" with 1 - this; on these unmirrored
        photos it says "Right" for right hands.
    presence: the landmark model's hand-presence score in [0, 1].
    detector_score: the palm detector's score in [0, 1]; 0.0 when the fallback found the hand; for a tracked
        hand, that of the detection its track started from.
    source: "detector", "second_look" (the detector on the brightened, wider-bordered copy), "fallback" or
        "tracked" (HandTrack: found in the crop the previous frame's hand gave).
    box: (center_x, center_y, width, height, rotation in radians, clockwise on screen) in photo pixels: the
        square crop the landmark model saw (crop_to_box(photo, box, 224) gives it back).
    """

    landmarks: np.ndarray
    handedness: float
    presence: float
    detector_score: float
    source: str
    box: tuple


class _Model:
    """One LiteRT model fed an RGB uint8 image scaled to [0, 1], the range both hand models' metadata asks for."""

    def __init__(self, content: bytes, num_threads: int):
        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        # Named Identity, Identity_1, ...: the order MediaPipe's graphs read them in.
        outputs = sorted(self.interpreter.get_output_details(), key=lambda detail: detail["name"])
        self.output_indices = [detail["index"] for detail in outputs]

    def __call__(self, rgb: np.ndarray) -> list:
        self.interpreter.set_tensor(self.input_index, (rgb.astype(np.float32) / 255.0)[None])
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index)[0] for index in self.output_indices]


def load_bundle(bundle, num_threads: int) -> tuple:
    """(palm detector, landmark model) from a hand_landmarker.task zip, given as its bytes or its path."""
    name = "the hand landmarker bundle (bytes)" if isinstance(bundle, (bytes, bytearray)) else str(bundle)
    replace = "replace it with MediaPipe's hand_landmarker.task"
    try:
        with zipfile.ZipFile(io.BytesIO(bundle) if isinstance(bundle, (bytes, bytearray)) else bundle) as archive:
            contents = [archive.read(member) for member in BUNDLE_MEMBERS]
    except FileNotFoundError:
        raise PipelineError(f"{name}: file not found; check the path to hand_landmarker.task") from None
    except OSError as error:
        raise PipelineError(f"{name}: cannot read it ({error.strerror or error}); check the path") from None
    except zipfile.BadZipFile as error:
        raise PipelineError(f"{name}: not a readable zip file ({error}); {replace}") from None
    except KeyError as error:
        raise PipelineError(f"{name}: has no member {error} (it needs {' and '.join(BUNDLE_MEMBERS)}); "
                            f"{replace}") from None
    models = []
    for member, content in zip(BUNDLE_MEMBERS, contents):
        try:
            models.append(_Model(content, num_threads))
        except ValueError as error:
            raise PipelineError(f"{name}: {member} is not a TFLite model ({error}); {replace}") from None
    return tuple(models)


def ssd_anchors(input_size: int = DETECTOR_SIZE, strides=ANCHOR_STRIDES) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1], in the order the palm detector's outputs use."""
    centres = []
    layer = 0
    while layer < len(strides):
        same_stride = 0
        while layer + same_stride < len(strides) and strides[layer + same_stride] == strides[layer]:
            same_stride += 1
        grid = math.ceil(input_size / strides[layer])
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        grid_centres = (np.stack([xs, ys], axis=-1).reshape(-1, 1, 2) + ANCHOR_OFFSET) / grid
        centres.append(np.repeat(grid_centres, ANCHORS_PER_LAYER * same_stride, axis=1).reshape(-1, 2))
        layer += same_stride
    return np.concatenate(centres).astype(np.float32)


def decode_palms(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, min_score: float):
    """The palm detector's raw outputs -> (boxes (n, 4) xmin, ymin, xmax, ymax; keypoints (n, 7, 2); scores (n,)),
    all in [0, 1] units of the detector input, keeping scores >= min_score as TensorsToDetectionsCalculator does."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -SCORE_CLIPPING, SCORE_CLIPPING)))
    raw = raw_boxes.reshape(len(anchors), -1) / DETECTOR_SIZE
    # Anchors are unit boxes, so a raw offset is simply added to the anchor centre (x, y order).
    centres = raw[:, 0:2] + anchors
    sizes = raw[:, 2:4]
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    keypoints = raw[:, 4:].reshape(len(anchors), -1, 2) + anchors[:, None, :]
    keep = (scores >= min_score) & (sizes >= 0).all(axis=1)
    return boxes[keep], keypoints[keep], scores[keep]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (xmin, ymin, xmax, ymax) box with each of `boxes`."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = np.prod(box[2:] - box[:2]) + areas - intersection
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = NMS_IOU_THRESHOLD) -> list:
    """MediaPipe's WEIGHTED non-max suppression, best first: [(box, keypoints, score)].

    The best remaining detection and every one overlapping it by IoU > threshold form a cluster; its box
    and keypoints are the score-weighted mean of the cluster, its score the best one's (not a mean).
    """
    order = np.argsort(-scores, kind="stable")
    clusters = []
    while len(order):
        best = order[0]
        overlapping = box_iou(boxes[best], boxes[order]) > iou_threshold
        members = order[overlapping]
        if not len(members):  # a zero-area best box overlaps nothing, itself included: MediaPipe stops there
            clusters.append((boxes[best], keypoints[best], float(scores[best])))
            break
        weights = scores[members] / scores[members].sum()
        clusters.append((weights @ boxes[members], np.tensordot(weights, keypoints[members], axes=1),
                         float(scores[best])))
        order = order[~overlapping]
    return clusters


def hand_box_from_palm(palm_box: np.ndarray, palm_keypoints: np.ndarray) -> tuple:
    """Palm box (xmin, ymin, xmax, ymax) and its 7 keypoints, in pixels -> the square rotated hand box
    (center_x, center_y, side, side, rotation) MediaPipe crops for the landmark model."""
    width, height = palm_box[2:] - palm_box[:2]
    center = (palm_box[:2] + palm_box[2:]) / 2
    dx, dy = palm_keypoints[MIDDLE_MCP] - palm_keypoints[WRIST]
    rotation = TARGET_ANGLE - math.atan2(-dy, dx)
    rotation -= 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))  # into [-pi, pi)
    # Shift towards the fingers along the rotated box's own y axis, by a fraction of the palm height.
    shift = HAND_SHIFT_Y * height
    center_x = center[0] - shift * math.sin(rotation)
    center_y = center[1] + shift * math.cos(rotation)
    side = max(width, height) * HAND_SCALE
    return (float(center_x), float(center_y), float(side), float(side), float(rotation))


def photo_to_crop_matrix(box, size: int) -> np.ndarray:
    """2x3 affine map from photo pixels to the size x size crop of `box`.

    As MediaPipe's ImageToTensorCalculator, the box's edges go to crop coordinates 0 and `size` (not to
    the outer pixel centres), and the box is rotated by `rotation` clockwise on screen (y down).
    """
    center_x, center_y, width, height, rotation = box
    cos, sin = math.cos(rotation), math.sin(rotation)
    unrotate = np.array([[cos, sin], [-sin, cos]]) * np.array([[size / width], [size / height]])
    offset = np.array([size / 2, size / 2]) - unrotate @ np.array([center_x, center_y])
    return np.hstack([unrotate, offset[:, None]])


def crop_to_photo(points: np.ndarray, box, size: int) -> np.ndarray:
    """Points (n, 2+) in pixels of the size x size crop of `box` -> photo pixels (LandmarkProjectionCalculator).
    A third column (depth) is scaled like x."""
    center_x, center_y, width, height, rotation = box
    local = (points[:, :2] / size - 0.5) * np.array([width, height])
    cos, sin = math.cos(rotation), math.sin(rotation)
    photo = local @ np.array([[cos, sin], [-sin, cos]]) + np.array([center_x, center_y])
    if points.shape[1] == 2:
        return photo
    return np.hstack([photo, points[:, 2:] * (width / size)])


def crop_to_box(rgb: np.ndarray, box, size: int, border_mode: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The size x size crop of a (possibly rotated) `box` (center_x, center_y, width, height, rotation) of
    the photo, bilinear; outside the photo the edge pixels are repeated, as for MediaPipe's landmark crop."""
    return cv2.warpAffine(rgb, photo_to_crop_matrix(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=border_mode, borderValue=0)


def letterbox_box(height: int, width: int) -> tuple:
    """The square box, centred on the photo, that keeps its aspect ratio when resized to a square input."""
    return (width / 2, height / 2, float(max(height, width)), float(max(height, width)), 0.0)


def brightened(rgb: np.ndarray, gamma: float) -> np.ndarray:
    """The photo with every channel raised to `gamma` (< 1 lifts the shadows): a per-pixel lookup, so the
    landmarks found on it are positions in the photo itself."""
    table = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return table[rgb]


def add_border(rgb: np.ndarray, border: float) -> tuple:
    """(photo with a black margin of round(border * longest side) pixels on every side, that margin)."""
    margin = int(round(border * max(rgb.shape[:2])))
    return (np.pad(rgb, ((margin, margin), (margin, margin), (0, 0))) if margin else rgb), margin


class HandLandmarker:
    """The most confident hand of a photo and its 21 landmarks, as MediaPipe's Tasks HandLandmarker gives
    them in IMAGE mode with num_hands=1 (a palm score of at least min_detection_confidence, a presence
    score above min_presence_confidence).

    border: a black margin of round(border * longest side) pixels is added around the photo first: the palm
    detector misses hands that fill the frame, and the margin gives them room. fallback_min_presence: when
    that finds no hand, the landmark model alone runs on the whole photo (which may be a tight crop of a
    hand) and its landmarks count when its presence score is at least this; None turns the fallback off.
    second_look_gamma: before the fallback, the palm detector looks again at the photo brightened by this
    gamma with a black margin of second_look_border: the hands it misses on the sample are mostly a dark,
    backlit hand in front of a window or a fist that fills the frame (docs/results.md, "Finding every hand"); None
    turns the second look off.
    """

    def __init__(self, bundle, min_detection_confidence: float = 0.1, min_presence_confidence: float = 0.1,
                 border: float = 0.25, fallback_min_presence: float | None = 0.9, num_threads: int = 2,
                 second_look_gamma: float | None = None, second_look_border: float = 1.0):
        self.detector, self.landmark_model = load_bundle(bundle, num_threads)
        self.anchors = ssd_anchors()
        self.min_detection_confidence = min_detection_confidence
        self.min_presence_confidence = min_presence_confidence
        self.border = border
        self.fallback_min_presence = fallback_min_presence
        self.second_look_gamma = second_look_gamma
        self.second_look_border = second_look_border

    def detect(self, rgb: np.ndarray) -> Hand | None:
        """The most confident hand of an RGB uint8 (H, W, 3) photo, or None."""
        hand = self._detect_with_palm(*add_border(rgb, self.border))
        if hand is None and self.second_look_gamma is not None:
            hand = self._detect_with_palm(*add_border(brightened(rgb, self.second_look_gamma),
                                                      self.second_look_border), source="second_look")
        if hand is None and self.fallback_min_presence is not None:
            hand = self._fallback(rgb)
        return hand

    def _detect_with_palm(self, bordered: np.ndarray, margin: int, source: str = "detector") -> Hand | None:
        palm = self._best_palm(bordered)
        if palm is None:
            return None
        palm_box, palm_keypoints, score = palm
        box = hand_box_from_palm(palm_box, palm_keypoints)
        landmarks, presence, handedness = self._landmarks(crop_to_box(bordered, box, LANDMARK_SIZE), box)
        if presence <= self.min_presence_confidence:
            return None
        landmarks[:, :2] -= margin
        center_x, center_y, *size_and_rotation = box
        return Hand(landmarks, handedness, presence, score, source,
                    (center_x - margin, center_y - margin, *size_and_rotation))

    def _best_palm(self, bordered: np.ndarray):
        """(box xmin, ymin, xmax, ymax; 7 keypoints; score) of the best palm in pixels of `bordered`, or None."""
        letterbox = letterbox_box(*bordered.shape[:2])
        tensor = crop_to_box(bordered, letterbox, DETECTOR_SIZE, cv2.BORDER_CONSTANT)  # MediaPipe pads with black
        raw_boxes, raw_scores = self.detector(tensor)
        palms = weighted_nms(*decode_palms(raw_boxes, raw_scores, self.anchors, self.min_detection_confidence))
        if not palms:
            return None
        box, keypoints, score = palms[0]
        corners = crop_to_photo(box.reshape(2, 2) * DETECTOR_SIZE, letterbox, DETECTOR_SIZE)
        return corners.reshape(4), crop_to_photo(keypoints * DETECTOR_SIZE, letterbox, DETECTOR_SIZE), score

    def _landmarks(self, crop: np.ndarray, box) -> tuple:
        """(landmarks (21, 3) in photo pixels, presence, probability of "Right") for the crop of `box`."""
        raw_landmarks, presence, right, _world = self.landmark_model(crop)
        # MediaPipe divides z by the input width and by normalize_z, then scales it like x.
        points = raw_landmarks.reshape(NUM_LANDMARKS, 3) / np.array([1, 1, LANDMARK_Z_NORMALIZATION])
        landmarks = crop_to_photo(points, box, LANDMARK_SIZE).astype(np.float32)
        # Measured against mediapipe 1.2.2: this output is the score it prints for "Right", unchanged.
        return landmarks, float(presence.item()), float(right.item())

    def _fallback(self, rgb: np.ndarray) -> Hand | None:
        # The whole photo, upright, letterboxed in black: a tight crop of a hand fills the landmark model's
        # input about as a palm detection's crop would (a 1.5x larger box found fewer hands, less precisely).
        box = letterbox_box(*rgb.shape[:2])
        crop = crop_to_box(rgb, box, LANDMARK_SIZE, cv2.BORDER_CONSTANT)
        landmarks, presence, handedness = self._landmarks(crop, box)
        if presence < self.fallback_min_presence:
            return None
        return Hand(landmarks, handedness, presence, 0.0, "fallback", box)


# Tracking, as MediaPipe's HandLandmarker in VIDEO mode (hand_landmarker_graph.cc, hand_landmarks_detector_graph.cc):
# a frame's landmarks give the next frame's crop (HandLandmarksToRectCalculator on a stable subset of the
# landmarks, then RectTransformationCalculator: twice as large, shifted a tenth towards the fingers, square),
# and the palm detector runs only when no hand is tracked.
TRACK_SCALE = 2.0
TRACK_SHIFT_Y = -0.1
# The box is taken around the wrist and the first two joints of each finger, which move less from frame to frame
# than the fingertips; its rotation is the wrist's direction to the knuckles (index and ring MCP averaged, then
# averaged with the middle MCP).
TRACK_BOX_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
INDEX_MCP, MIDDLE_FINGER_MCP, RING_MCP = 5, 9, 13
# MediaPipe's default min_hand_presence_confidence: below it the hand is lost and the detector looks again.
TRACK_MIN_PRESENCE = 0.5
# A hand found this share of its crop's side away from the crop's centre moved fast: it is read again, in the same
# frame, from the crop its landmarks give (the landmark model reads a hand off-centre in its crop less well).
RECROP_SHIFT = 0.15


def hand_box_from_landmarks(landmarks: np.ndarray) -> tuple:
    """(center_x, center_y, side, side, rotation) in photo pixels: the crop MediaPipe takes for the next frame
    from this frame's hand landmarks (21, 2+)."""
    points = landmarks[list(TRACK_BOX_LANDMARKS), :2].astype(np.float64)
    knuckles = ((landmarks[INDEX_MCP, :2] + landmarks[RING_MCP, :2]) / 2 + landmarks[MIDDLE_FINGER_MCP, :2]) / 2
    dx, dy = knuckles - landmarks[WRIST, :2]
    rotation = math.pi / 2 - math.atan2(-dy, dx)
    rotation -= 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))  # into [-pi, pi)
    # The tightest box around the points in the hand's own rotated frame.
    cos, sin = math.cos(rotation), math.sin(rotation)
    middle = (points.min(axis=0) + points.max(axis=0)) / 2
    local = (points - middle) @ np.array([[cos, -sin], [sin, cos]])
    low, high = local.min(axis=0), local.max(axis=0)
    local_center = (low + high) / 2
    width, height = high - low
    center = middle + local_center @ np.array([[cos, sin], [-sin, cos]])
    shift = TRACK_SHIFT_Y * height  # along the box's own y axis, towards the fingers
    side = max(width, height) * TRACK_SCALE
    return (float(center[0] - shift * sin), float(center[1] + shift * cos), float(side), float(side),
            float(rotation))


class HandTrack:
    """One hand followed through the frames of a video: the hand found in one frame gives the next frame's crop
    for the landmark model, and the palm detector (HandLandmarker.detect, fallback included) runs only when no
    hand is tracked: at the start, and after the landmark model's presence score fell under `min_presence`.

    Two differences from MediaPipe's graph, as `spell` reads 10 frames a second, where a hand moves further between
    frames: a frame whose tracked crop lost the hand is searched by the detector at once, rather than reported
    empty and searched in the next frame; and a hand found far from its crop's centre (RECROP_SHIFT) is read again
    from the crop its landmarks give, so that a fast hand's landmarks do not trail it by a frame or two.
    """

    def __init__(self, min_presence: float = TRACK_MIN_PRESENCE):
        self.min_presence = min_presence
        self.box = None  # the crop for the next frame; None: no hand tracked
        self.detector_score = 0.0  # of the detection the track started from
        self.frames = 0
        self.detections = 0  # frames the palm detector ran on

    def find(self, landmarker: HandLandmarker, rgb: np.ndarray) -> Hand | None:
        """The hand in this frame, the next in the video after the last one given; None when there is none."""
        self.frames += 1
        hand = None
        if self.box is not None:
            hand = self._read(landmarker, rgb, self.box)
            if hand is not None:
                moved = hand_box_from_landmarks(hand.landmarks)
                if math.dist(moved[:2], self.box[:2]) > RECROP_SHIFT * self.box[2]:
                    hand = self._read(landmarker, rgb, moved) or hand
        if hand is None:
            self.detections += 1
            hand = landmarker.detect(rgb)
            self.detector_score = 0.0 if hand is None else hand.detector_score
        self.box = None if hand is None else hand_box_from_landmarks(hand.landmarks)
        return hand

    def _read(self, landmarker: HandLandmarker, rgb: np.ndarray, box) -> Hand | None:
        """The hand the landmark model finds in the crop of `box`, or None when its presence score is too low."""
        landmarks, presence, handedness = landmarker._landmarks(crop_to_box(rgb, box, LANDMARK_SIZE), box)
        if presence < self.min_presence:
            return None
        return Hand(landmarks, handedness, presence, self.detector_score, "tracked", box)
