"""hands.HandTrack and featurizers.Track: a video's hand followed from frame to frame, the palm detector run only
when the track is lost (the hand leaves the frame), and the hand found again when it comes back."""
import numpy as np
import pytest

from asl_pipeline import hand_model, hands, images
from asl_pipeline.featurizers import Featurizer, Track
from helpers import HAND_BUNDLE, SAMPLE, make_spec, needs_sample

TRAIN = SAMPLE / "asl_alphabet_train"


@pytest.fixture(scope="module")
def landmarker():
    return hands.HandLandmarker(hand_model.verified_bundle(HAND_BUNDLE), fallback_min_presence=0.5)


def photo(label: str, number: int = 0) -> np.ndarray:
    return images.load_rgb(sorted((TRAIN / label).glob("*.jpg"))[number])


@needs_sample
def test_the_hand_is_tracked_and_the_detector_runs_again_only_when_it_leaves(landmarker):
    hand, empty = photo("B"), photo("nothing")  # the same room with and without the hand
    video = [hand] * 4 + [empty] * 3 + [hand] * 4
    track = hands.HandTrack()
    found = [track.find(landmarker, frame) for frame in video]
    assert [h is not None for h in found] == [True] * 4 + [False] * 3 + [True] * 4
    # The first frame and each frame after the hand was lost (the three empty ones and its return) are
    # searched by the detector; every other frame is read from the crop the last frame's hand gave.
    assert track.detections == 1 + 3 + 1 and track.frames == len(video)
    assert [h.source == "tracked" for h in found if h is not None] == [False, True, True, True] * 2
    # A tracked hand is the hand the detector finds in the same frame, to a few pixels.
    detected = landmarker.detect(hand)
    for tracked in found[1:4] + found[8:]:
        assert np.abs(tracked.landmarks[:, :2] - detected.landmarks[:, :2]).mean() < 3


def test_the_next_crop_is_square_around_the_hand_and_turns_with_it():
    # An upright hand: knuckles above the wrist. The crop is twice the hand's size, shifted towards the fingers.
    points = np.zeros((21, 3))
    points[:, 0] = np.linspace(80, 120, 21)
    points[:, 1] = np.linspace(200, 100, 21)
    points[0] = (100, 200, 0)
    points[[5, 9, 13]] = [(85, 120, 0), (100, 115, 0), (115, 120, 0)]
    center_x, center_y, width, height, rotation = hands.hand_box_from_landmarks(points)
    assert width == height and rotation == pytest.approx(0, abs=0.05)
    assert 100 < width < 400 and center_y < 160  # above the middle of wrist .. knuckles: towards the fingers
    # The hand turned a quarter clockwise on screen about its wrist: the crop turns with it.
    turned = points.copy()
    turned[:, :2] = (points[:, :2] - (100, 200)) @ np.array([[0, 1], [-1, 0]]) + (100, 200)
    assert hands.hand_box_from_landmarks(turned)[4] == pytest.approx(np.pi / 2, abs=0.05)


@needs_sample
def test_a_left_hand_is_tracked_in_the_mirrored_frames(landmarker):
    featurizer = Featurizer(make_spec(("hand_landmarks",), mirror_left=True), hand_model.verified_bundle(HAND_BUNDLE))
    left = np.ascontiguousarray(photo("L")[:, ::-1])  # the sample's right hand, mirrored: a left hand
    track = Track()
    vectors = [featurizer.prepare(left, track).hand_vector for _ in range(4)]
    photo_vector = featurizer.prepare(left).hand_vector
    assert track.detections == 2  # once in the frames, once in their mirror images: then both are tracked
    for vector in vectors:
        assert np.abs(vector - photo_vector).mean() < 0.05  # read as the photo path reads it
