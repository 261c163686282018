"""motion.MotionReader on synthetic landmark paths: a hand drawing a J or a Z is read as that letter, and the same
handshape held still (or moved without its letter's handshape) is not; and stream.StreamReader, which takes a
motion letter only where the still reader reads no letter held: a held handshape drifting is that letter."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from asl_pipeline import motion
from asl_pipeline.stream import StreamReader

FPS = 10
PALM = 50.0  # pixels from the wrist to the knuckles


def handshape(extended: tuple, palm: float = PALM) -> np.ndarray:
    """(21, 3) landmarks of an upright right hand, wrist at the origin: the long fingers (index .. little) whose
    flags are set stretched out, the others curled into the palm; the thumb tucked in."""
    points = np.zeros((21, 3))
    points[1:5] = [[-0.3 * palm, -0.2 * palm * k, 0] for k in range(1, 5)]  # the thumb, along the palm
    for finger, (knuckle, straight) in enumerate(zip(motion.KNUCKLES, extended)):
        base = np.array([(finger - 1.5) * 0.3 * palm, -palm, 0.0])
        points[knuckle] = base
        for joint in (1, 2, 3):
            # Stretched, each joint is 0.3 palms further up; curled, the finger folds back into the palm.
            step = (np.array([0, -0.3 * palm * joint, 0]) if straight
                    else np.array([0, 0.12 * palm * joint, -0.1 * palm]))
            points[knuckle + joint] = base + step
    return points


I_SHAPE = handshape((False, False, False, True))
POINTING = handshape((True, False, False, False))


def placed(shape: np.ndarray, x: float, y: float, turn: float = 0.0) -> np.ndarray:
    """The handshape turned by `turn` radians about its wrist and moved to (x, y) in the frame."""
    cos, sin = math.cos(turn), math.sin(turn)
    turned = shape.copy()
    turned[:, :2] = shape[:, :2] @ np.array([[cos, sin], [-sin, cos]])
    return turned + np.array([x, y, 0])


def j_path(shape=I_SHAPE, frames: int = 9, scale: float = 1.0) -> list:
    """The J: the little finger's tip hooks down and round as the hand turns a quarter over `frames` frames."""
    return [placed(shape * scale, 300 + 40 * scale * math.sin(math.pi * t), 200 + 90 * scale * t, -math.pi / 2 * t)
            for t in np.linspace(0, 1, frames)]


def z_path(shape=POINTING, scale: float = 1.0) -> list:
    """The Z: the index tip goes right, down-left across, then right again, about two palms each stroke."""
    corners = np.array([[0, 0], [100, 0], [0, 100], [100, 100]]) * scale + 300
    stroke = [corners[i] + (corners[i + 1] - corners[i]) * t for i in range(3) for t in (0, 1 / 3, 2 / 3)]
    return [placed(shape * scale, x, y) for x, y in stroke + [corners[-1]]]


def held(shape: np.ndarray, frames: int = 20, seed: int = 0) -> list:
    """The handshape held still, with a real hand's tremor of a few pixels."""
    rng = np.random.default_rng(seed)
    return [placed(shape, 300, 200) + rng.normal(0, 1.5, (21, 3)) for _ in range(frames)]


def read(frames: list) -> list:
    """The motion reader's answer at each frame, 10 frames a second."""
    reader = motion.MotionReader()
    return [reader.feed(points, number / FPS) for number, points in enumerate(frames)]


def test_a_hand_drawing_a_j_is_read_as_j():
    readings = read(held(I_SHAPE, 5) + j_path())
    assert "J" in readings and set(readings) <= {None, "J"}
    assert readings[:5] == [None] * 5  # not while the I is held before the motion


def test_a_hand_drawing_a_z_is_read_as_z():
    readings = read(held(POINTING, 5) + z_path())
    assert "Z" in readings and set(readings) <= {None, "Z"}


@pytest.mark.parametrize("shape", [I_SHAPE, POINTING], ids=["I held", "index pointing held"])
def test_the_same_handshape_held_still_is_no_motion_letter(shape):
    assert set(read(held(shape, 30))) == {None}


def test_the_distance_to_the_camera_does_not_matter():
    # The same J and Z by a hand three times nearer the camera, and three times farther.
    for scale in (3.0, 1 / 3):
        assert "J" in read(j_path(scale=scale))
        assert "Z" in read(z_path(scale=scale))


def test_a_path_is_read_only_with_its_letters_handshape():
    flat_hand = handshape((True, True, True, True))  # B: every finger out, none leads
    assert set(read(j_path(flat_hand))) == {None}
    assert set(read(z_path(flat_hand))) == {None}
    assert "Z" not in read(j_path()) and "J" not in read(z_path())


def test_a_hand_that_leaves_and_comes_back_elsewhere_drew_nothing_and_old_motion_is_forgotten():
    there = [placed(I_SHAPE, 300, 200)] * 5
    elsewhere = [placed(I_SHAPE, 300 + 3 * PALM, 200 + 3 * PALM)] * 5
    assert set(read(there + [None] + elsewhere)) == {None}
    assert set(read(there + elsewhere)) == {None}  # nor does a hand that jumps in one frame: no stroke is drawn
    # 2 s after the J, the hand held still: its old path has left the window.
    assert read(j_path() + held(I_SHAPE, 20))[-1] is None


Y_SHAPE = handshape((False, False, False, True))
Y_SHAPE[1:5] = [[-0.35 * PALM * k, 0.1 * PALM * k, 0] for k in range(1, 5)]  # the thumb out sideways
CLASSES = ("D", "I", "Y", "nothing")


def drift(shape: np.ndarray, frames: int = 20) -> list:
    """The handshape held while the hand drifts down and sideways, 0.3 palm sizes a frame: the motion reader
    alone reads its leading finger's path as drawn."""
    return [placed(shape, 300 + 0.1 * PALM * number, 200 + 0.3 * PALM * number) for number in range(frames)]


def stream(frames: list, still: list) -> list:
    """StreamReader's readings of the frames, each read by the still reader as its `still` label (p 0.6)."""
    reader = StreamReader(tracking=False)
    readings = []
    for number, (points, label) in enumerate(zip(frames, still)):
        probabilities = np.array([0.6 if name == label else 0.4 / (len(CLASSES) - 1) for name in CLASSES])
        # What StreamReader takes from Classifier.analyse.
        analysis = SimpleNamespace(probabilities=probabilities, hand=SimpleNamespace(landmarks=points), hand_found=True)
        readings.append(reader.feed(analysis, CLASSES, number, number / FPS))
    return readings


@pytest.mark.parametrize("shape, letter, still", [(Y_SHAPE, "J", "Y"), (POINTING, "Z", "D")],
                         ids=["drifting Y", "drifting index pointing (D)"])
def test_a_held_handshape_drifting_gives_no_motion_letter(shape, letter, still):
    path = held(shape, 10) + drift(shape)
    assert letter in read(path)  # the path alone passes the motion reader's thresholds
    readings = stream(path, [still] * len(path))
    assert not any(reading.motion for reading in readings)
    assert [reading.committed.text for reading in readings if reading.committed] == [still]  # once
    # The annotated video and the live page say why no motion letter was read.
    assert f"{still} held, not {letter}" in readings[-1].describe()


def test_a_j_drawn_from_the_i_handshape_is_read_and_says_why():
    path = held(I_SHAPE, 10) + j_path()
    readings = stream(path, ["I"] * len(path))  # a J's frames read as I, the handshape it draws
    assert readings[-1].committed is None and [r.label for r in readings if r.committed] == ["I", "J"]
    drawn = [reading for reading in readings if reading.motion]
    assert drawn and "little finger drew" in drawn[0].describe() and "no letter held" in drawn[0].describe()
