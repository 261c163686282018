"""asl_pipeline.hands: MediaPipe's hand landmarker rebuilt on LiteRT.

The geometry, anchors and NMS tests are pure numpy. The rest need ../shared (the model bundle and the
photos of tests/fixtures/mediapipe_reference.json, MediaPipe's own output; see make_mediapipe_reference.py).
"""
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from asl_pipeline import hands, images
from asl_pipeline.errors import PipelineError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "mediapipe_reference.json"

needs_shared = pytest.mark.skipif(not (BUNDLE.is_file() and (SHARED / "data" / "asl-sample").is_dir()),
                                  reason=f"needs the model bundle and sample photos under {SHARED}")


@pytest.fixture(scope="module")
def landmarker():
    return hands.HandLandmarker(BUNDLE)


def reference_record(path_suffix: str) -> dict:
    records = json.loads(REFERENCE.read_text(encoding="utf-8"))["photos"]
    return next(record for record in records if record["path"].endswith(path_suffix))


def test_anchors_are_the_palm_detectors_2016_grid_centres():
    anchors = hands.ssd_anchors()
    assert anchors.shape == (2016, 2)
    # Stride 8: a 24x24 grid, 2 anchors per cell, row by row; then strides 16 (3 layers): 12x12, 6 per cell.
    np.testing.assert_allclose(anchors[0], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(anchors[48], [0.5 / 24, 1.5 / 24])
    np.testing.assert_allclose(anchors[1152:1158], [[0.5 / 12, 0.5 / 12]] * 6)
    np.testing.assert_allclose(anchors[-1], [11.5 / 12, 11.5 / 12])


def test_weighted_nms_merges_overlapping_boxes_by_score_and_keeps_the_best_score():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0],    # best
                      [2.0, 2.0, 3.0, 3.0],    # apart: its own cluster
                      [0.1, 0.0, 1.1, 1.0],    # IoU 0.82 with the best: merged into it
                      [0.8, 0.0, 1.8, 1.0]])   # IoU 0.11 with the best: kept apart
    scores = np.array([0.9, 0.8, 0.6, 0.5])
    keypoints = np.stack([np.full((7, 2), i, dtype=float) for i in range(4)])
    clusters = hands.weighted_nms(boxes, keypoints, scores, iou_threshold=0.3)
    assert [score for _, _, score in clusters] == [0.9, 0.8, 0.5]
    box, cluster_keypoints, _ = clusters[0]
    np.testing.assert_allclose(box, (0.9 * boxes[0] + 0.6 * boxes[2]) / 1.5)
    np.testing.assert_allclose(cluster_keypoints, np.full((7, 2), 0.6 * 2 / 1.5))
    np.testing.assert_allclose(clusters[1][0], boxes[1])
    np.testing.assert_allclose(clusters[2][0], boxes[3])


def test_decode_keeps_scores_above_threshold_and_adds_anchor_centres():
    anchors = np.array([[0.25, 0.5], [0.75, 0.5]], dtype=np.float32)
    raw_boxes = np.zeros((2, 18), dtype=np.float32)
    raw_boxes[0, :4] = [19.2, -9.6, 48.0, 96.0]  # x, y offsets and w, h in detector pixels
    raw_boxes[0, 4:6] = [9.6, 0.0]  # wrist keypoint
    raw_scores = np.array([[3.0], [-3.0]], dtype=np.float32)
    boxes, keypoints, scores = hands.decode_palms(raw_boxes, raw_scores, anchors, min_score=0.5)
    assert len(boxes) == 1
    np.testing.assert_allclose(scores, [1 / (1 + math.exp(-3.0))], rtol=1e-6)
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [0.3, 0.5], atol=1e-6)


def test_hand_box_from_palm_grows_shifts_and_rotates_like_mediapipe():
    palm_box = np.array([100.0, 100.0, 140.0, 120.0])  # 40 wide, 20 high
    wrist_below_mcp = np.zeros((7, 2))
    wrist_below_mcp[hands.WRIST], wrist_below_mcp[hands.MIDDLE_MCP] = [120, 120], [120, 100]
    center_x, center_y, width, height, rotation = hands.hand_box_from_palm(palm_box, wrist_below_mcp)
    assert width == height == pytest.approx(40 * 2.6)
    # MediaPipe's Tasks graph passes 90 to a field in radians: an upright hand is turned by
    # 90 - pi/2 - 14 * 2 pi = 0.46 rad, not 0.
    assert rotation == pytest.approx(90 - math.pi / 2 - 28 * math.pi)
    # The centre moves half the palm height (10) along the rotated box's "up".
    assert (center_x, center_y) == pytest.approx((120 + 10 * math.sin(rotation), 110 - 10 * math.cos(rotation)))


@pytest.mark.parametrize("box", [(60.0, 40.0, 50.0, 50.0, 0.0), (70.5, 45.25, 64.0, 64.0, 0.7),
                                 (50.0, 50.0, 90.0, 90.0, -2.5)])
def test_crop_points_map_to_photo_points_and_back(box):
    size = 224
    crop_points = np.array([[0.0, 0.0], [112.0, 112.0], [224.0, 0.0], [30.5, 190.25]])
    photo_points = hands.crop_to_photo(crop_points, box, size)
    center_x, center_y, side, _, rotation = box
    # The crop centre is the box centre; the crop's top-left corner is the box's rotated corner.
    np.testing.assert_allclose(photo_points[1], [center_x, center_y])
    corner = np.array([-side / 2, -side / 2])
    rotate = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    np.testing.assert_allclose(photo_points[0], rotate @ corner + [center_x, center_y], atol=1e-9)
    matrix = hands.photo_to_crop_matrix(box, size)
    back = photo_points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(back, crop_points, atol=1e-9)


def test_a_dot_cropped_through_border_letterbox_and_rotated_crop_lands_back_on_itself():
    photo = np.zeros((90, 160, 3), dtype=np.uint8)  # not square: the detector input is letterboxed
    dot = np.array([121.0, 30.0])
    photo[30, 121] = 255
    bordered, margin = hands.add_border(photo, 0.25)
    assert margin == 40 and bordered.shape == (170, 240, 3)
    letterbox = hands.letterbox_box(*bordered.shape[:2])
    tensor = hands.crop_to_box(bordered, letterbox, hands.DETECTOR_SIZE)
    found = np.array(np.unravel_index(tensor[..., 0].argmax(), tensor.shape[:2]))[::-1].astype(float)
    back = hands.crop_to_photo(found[None], letterbox, hands.DETECTOR_SIZE)[0] - margin
    assert np.abs(back - dot).max() <= 240 / 192  # within one detector pixel
    box = (dot[0] + margin + 3, dot[1] + margin - 2, 40.0, 40.0, 0.5)
    crop = hands.crop_to_box(bordered, box, 224)
    found = np.array(np.unravel_index(crop[..., 0].argmax(), crop.shape[:2]))[::-1].astype(float)
    back = hands.crop_to_photo(found[None], box, 224)[0] - margin
    assert np.abs(back - dot).max() <= 1.0


def test_missing_or_broken_bundle_is_a_pipeline_error_naming_the_file(tmp_path):
    incomplete = tmp_path / "hand_landmarker.task"
    with zipfile.ZipFile(incomplete, "w") as archive:
        archive.writestr("hand_detector.tflite", b"not a model")
    with pytest.raises(PipelineError, match=r"hand_landmarker\.task.*hand_landmarks_detector\.tflite.*replace"):
        hands.HandLandmarker(incomplete)
    not_a_zip = tmp_path / "broken.task"
    not_a_zip.write_bytes(b"plain text")
    with pytest.raises(PipelineError, match=r"broken\.task: not a readable zip file.*replace"):
        hands.HandLandmarker(not_a_zip)
    with pytest.raises(PipelineError, match=r"absent\.task: file not found.*check"):
        hands.HandLandmarker(tmp_path / "absent.task")


@needs_shared
def test_bundle_loads_from_bytes_too():
    rgb = images.load_rgb(SHARED / reference_record("asl_alphabet_train/A/A1.jpg")["path"])
    hand = hands.HandLandmarker(BUNDLE.read_bytes()).detect(rgb)
    assert hand is not None and hand.landmarks.shape == (21, 3) and hand.landmarks.dtype == np.float32


@needs_shared
@pytest.mark.parametrize("kind", ["gray", "noise"])
def test_no_hand_in_a_photo_without_one(landmarker, kind):
    rng = np.random.default_rng(0)
    photo = np.full((200, 240, 3), 128, np.uint8) if kind == "gray" else rng.integers(0, 256, (200, 240, 3), np.uint8)
    assert landmarker.detect(photo) is None


@needs_shared
def test_agrees_with_mediapipes_own_hand_landmarker():
    """Detector path only (no fallback): that is MediaPipe's pipeline, with the same border and thresholds."""
    landmarker = hands.HandLandmarker(BUNDLE, fallback_min_presence=None)
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    same_found, distances, same_label = [], [], []
    for record in reference["photos"]:
        rgb = images.load_rgb(SHARED / record["path"])
        hand = landmarker.detect(rgb)
        same_found.append((hand is not None) == record["found"])
        if hand is not None and record["found"]:
            theirs = np.array(record["landmarks"])
            distances.append(np.median(np.linalg.norm(hand.landmarks[:, :2] - theirs[:, :2], axis=1)) / rgb.shape[1])
            same_label.append(("Right" if hand.handedness >= 0.5 else "Left") == record["handedness"])
    assert np.mean(same_found) >= 0.9
    assert len(distances) >= 0.8 * len(reference["photos"])
    # A faithful copy is within 0.001 of the width (the reference is rounded to 0.01 px); 0.02 would still
    # let a wrong crop rotation through (with target angle pi/2 instead of MediaPipe's 90 rad: 0.011).
    assert np.median(distances) <= 0.005
    assert np.mean(same_label) >= 0.9


@needs_shared
def test_hand_fields_are_in_photo_coordinates(landmarker):
    rgb = images.load_rgb(SHARED / reference_record("asl_alphabet_train/A/A1.jpg")["path"])
    hand = landmarker.detect(rgb)
    assert hand.source == "detector" and 0 < hand.detector_score <= 1 and 0 < hand.presence <= 1
    assert 0 <= hand.handedness <= 1
    assert hand.box[2] == hand.box[3]
    # The box is the landmark model's crop, in this photo's pixels: every landmark falls inside it.
    matrix = hands.photo_to_crop_matrix(hand.box, hands.LANDMARK_SIZE)
    in_crop = hand.landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    assert np.all((in_crop > 0) & (in_crop < hands.LANDMARK_SIZE))
    crop = hands.crop_to_box(rgb, hand.box, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


@needs_shared
def test_fallback_finds_a_hand_that_fills_the_photo():
    """A tight crop of a hand, no border: the palm detector misses it, the landmark model alone finds it."""
    record = reference_record("asl_alphabet_train/U/U10.jpg")
    rgb = images.load_rgb(SHARED / record["path"])
    theirs = np.array(record["landmarks"])[:, :2]
    margin = 0.1 * (theirs.max(axis=0) - theirs.min(axis=0)).max()
    left, top = np.floor(np.maximum(theirs.min(axis=0) - margin, 0)).astype(int)
    right, bottom = np.ceil(theirs.max(axis=0) + margin).astype(int)
    tight = np.ascontiguousarray(rgb[top:bottom, left:right])
    assert hands.HandLandmarker(BUNDLE, border=0.0, fallback_min_presence=None).detect(tight) is None
    found = hands.HandLandmarker(BUNDLE, border=0.0).detect(tight)
    assert found is not None and found.source == "fallback" and found.detector_score == 0.0
    distances = np.linalg.norm(found.landmarks[:, :2] + [left, top] - theirs, axis=1)
    assert np.median(distances) <= 0.03 * rgb.shape[1]


@needs_shared
def test_second_look_finds_a_hand_in_a_darkened_photo_and_none_in_a_photo_of_nothing():
    """The detector's second look, at the photo brightened with a wider margin, before the fallback."""
    one_look = hands.HandLandmarker(BUNDLE, fallback_min_presence=0.5)
    two_looks = hands.HandLandmarker(BUNDLE, fallback_min_presence=0.5, second_look_gamma=0.5,
                                     second_look_border=1.0)
    photo = images.load_rgb(SHARED / "data/asl-sample/asl_alphabet_train/A/A1260.jpg")
    dark = (photo.astype(np.float32) * 0.12).astype(np.uint8)  # a hand in a dim room
    assert one_look.detect(dark) is None
    found = two_looks.detect(dark)
    assert found is not None and found.source == "second_look"
    # The brightening is a per-pixel lookup: landmarks stay where the hand is in the photo itself.
    bright = one_look.detect(photo)
    assert np.median(np.linalg.norm(found.landmarks[:, :2] - bright.landmarks[:, :2], axis=1)) <= 0.05 * photo.shape[1]
    for nothing in sorted((SHARED / "data/asl-sample/asl_alphabet_train/nothing").glob("*.jpg"))[:10]:
        assert two_looks.detect(images.load_rgb(nothing)) is None, nothing


def test_brightened_lifts_shadows_and_keeps_black_and_white():
    photo = np.array([[[0, 64, 255]]], np.uint8)
    assert hands.brightened(photo, 0.5).tolist() == [[[0, 128, 255]]]
    assert hands.brightened(photo, 1.0).tolist() == photo.tolist()
