"""J and Z, the letters ASL signs with a motion, read from the path of the hand's landmarks over the last second.

J is the I handshape (little finger out) whose fingertip hooks down as the hand turns; Z is the index finger
pointing and drawing a Z. A rule, with thresholds measured on the four signers' videos
(benchmarks/motion_letters.py): a letter is read when, over the last WINDOW_SECONDS,
- its finger leads: the fingertip's distance from the wrist over its knuckle's, minus the same for the most
  extended of the three other long fingers (thumb left out), median over the window, is at least `min_lead`;
- its fingertip travelled: the diagonal of the box its path fills, in palm sizes (the wrist's mean distance to
  the four knuckles, in 3D), is at least `min_extent`, so that the hand's distance to the camera does not matter;
- along a drawn path: its strokes (three or more steps in a row that move) keep their direction from frame to
  frame (MIN_COHERENCE), as a finger drawing a letter does, and a hand that jumps (between unrelated photos,
  or back into view) does not. Every frame of the window has the hand: a frame without one starts a new path.
A held handshape moves its fingertip a tenth or two of a palm size (I held still, an index pointing still): it is
not read as J or Z. At a webcam a held hand drifts as far as a finger draws, along as coherent a path: the speller
takes a motion letter only where the still reader reads no letter held (speller.py). All three features are the same for a hand and its mirror image, so a left hand draws alike.
"""
import collections
import dataclasses

import numpy as np

WRIST = 0
KNUCKLES = (5, 9, 13, 17)  # MCP joints of the index, middle, ring and little fingers; their tips are 3 further
WINDOW_SECONDS = 1.2  # a J or a Z takes 0.5-1 s in the four signers' videos
MIN_FRAMES = 4  # fewer frames with a hand in the window tell no path
# The length-weighted mean cosine between consecutive steps of the fingertip's strokes (`strokes`):
# the four signers' J and Z windows that pass the other two thresholds score 0.53-1.0; a hand jumping about
# between unrelated photos scores -1 to 1 at random.
MIN_COHERENCE = 0.5
# Steps shorter than this many palm sizes from one frame to the next are a still hand's jitter, or the tracked
# landmarks settling after the hand jumped: they draw nothing and are left out of the coherence.
MIN_STEP = 0.1
STROKE_STEPS = 3  # a J or Z takes 0.5-1 s: its fingertip moves in at least three steps in a row at 10 fps


@dataclasses.dataclass(frozen=True)
class MotionLetter:
    """A letter drawn by one finger: its knuckle, and the thresholds of its lead and of its tip's travel (in palm
    sizes)."""

    letter: str
    knuckle: int
    min_lead: float
    min_extent: float

    @property
    def tip(self) -> int:
        return self.knuckle + 3


# Measured by benchmarks/motion_letters.py on signers 1, 3 and 4 (signer 2 never set them: `spell` on signer 2's
# videos shows the rule on a signer it was not measured on); docs/predict-and-spell.md, "Motion letters".
MOTION_LETTERS = (MotionLetter("J", 17, min_lead=0.35, min_extent=1.59),
                  MotionLetter("Z", 5, min_lead=0.15, min_extent=1.81))


def finger_extension(landmarks: np.ndarray) -> np.ndarray:
    """(frames, 4): each long finger's tip distance from the wrist over its knuckle's, index to little finger.
    About 1.8-2 for a straight finger, under 1 for one curled into the palm."""
    wrist = landmarks[:, WRIST:WRIST + 1]
    knuckles = landmarks[:, list(KNUCKLES)] - wrist
    tips = landmarks[:, [k + 3 for k in KNUCKLES]] - wrist
    return np.linalg.norm(tips, axis=2) / np.maximum(np.linalg.norm(knuckles, axis=2), 1e-6)


def palm_size(landmarks: np.ndarray) -> np.ndarray:
    """(frames,): the wrist's mean distance to the four knuckles, in 3D: the hand's own scale."""
    return np.linalg.norm(landmarks[:, list(KNUCKLES)] - landmarks[:, WRIST:WRIST + 1], axis=2).mean(axis=1)


def steady_path(path: np.ndarray) -> np.ndarray:
    """Each point of a (frames, 2) path replaced by the median of it and its two neighbours: a landmark model's
    one-frame slip (a hand found on something else for a frame) is not a motion."""
    if len(path) < 3:
        return path
    neighbours = np.stack([path[:-2], path[1:-1], path[2:]])
    return np.concatenate([path[:1], np.median(neighbours, axis=0), path[-1:]])


def strokes(moving: np.ndarray) -> np.ndarray:
    """The steps that belong to a run of at least STROKE_STEPS moving steps in a row: a path being drawn, not a
    hand that jumped (and whose tracked landmarks took a frame to settle) and rests."""
    drawn = np.zeros_like(moving)
    start = 0
    for end in range(len(moving) + 1):
        if end == len(moving) or not moving[end]:
            if end - start >= STROKE_STEPS:
                drawn[start:end] = True
            start = end + 1
    return drawn


def window_features(landmarks: np.ndarray, motion: MotionLetter) -> tuple:
    """(lead, extent, coherence) of `motion`'s finger over a window of (frames, 21, 3) landmarks in pixels."""
    extension = finger_extension(landmarks)
    finger = KNUCKLES.index(motion.knuckle)
    others = np.delete(extension, finger, axis=1).max(axis=1)
    lead = float(np.median(extension[:, finger] - others))
    path = landmarks[:, motion.tip, :2] / max(float(np.median(palm_size(landmarks))), 1e-6)
    path = steady_path(path)
    extent = float(np.linalg.norm(np.ptp(path, axis=0)))
    steps = np.diff(path, axis=0)
    drawn = strokes(np.linalg.norm(steps, axis=1) >= MIN_STEP)
    pairs = drawn[:-1] & drawn[1:]
    turns = (steps[:-1] * steps[1:]).sum(axis=1)[pairs]
    lengths = (np.linalg.norm(steps[:-1], axis=1) * np.linalg.norm(steps[1:], axis=1))[pairs]
    coherence = float(turns.sum() / lengths.sum()) if lengths.sum() > 0 else 0.0
    return lead, extent, coherence


def handshapes(landmarks: np.ndarray, letters=MOTION_LETTERS) -> frozenset:
    """The motion letters whose handshape one frame's (21, 3) landmarks show: their finger leads."""
    return frozenset(motion.letter for motion in letters
                     if window_features(landmarks[None], motion)[0] >= motion.min_lead)


def drawn_letter(landmarks: np.ndarray, letters=MOTION_LETTERS) -> tuple | None:
    """(motion letter, palm sizes its fingertip travelled) that a window of (frames, 21, 3) landmarks draws, or
    None: of two, the one past its extent threshold by more."""
    if len(landmarks) < MIN_FRAMES:
        return None
    drawn = []
    for motion in letters:
        lead, extent, coherence = window_features(landmarks, motion)
        if lead >= motion.min_lead and extent >= motion.min_extent and coherence >= MIN_COHERENCE:
            drawn.append((extent / motion.min_extent, motion.letter, extent))
    return max(drawn)[1:] if drawn else None


class MotionReader:
    """Feed it each frame's hand landmarks (None: no hand) with the frame's time; it says which motion letter the
    last WINDOW_SECONDS drew, if any. A frame without a hand ends the path: a letter is drawn in view, and a hand
    that left and came back elsewhere drew nothing."""

    def __init__(self, letters=MOTION_LETTERS, window_seconds: float = WINDOW_SECONDS):
        self.letters = letters
        self.window_seconds = window_seconds
        self._recent = collections.deque()  # (seconds, landmarks)
        self.travelled = 0.0  # palm sizes the fingertip of the letter last read travelled: why it was read

    def feed(self, landmarks: np.ndarray | None, seconds: float) -> str | None:
        if landmarks is None:
            self._recent.clear()
            return None
        self._recent.append((seconds, np.asarray(landmarks, np.float64)))
        while self._recent[0][0] <= seconds - self.window_seconds:
            self._recent.popleft()
        drawn = drawn_letter(np.stack([points for _, points in self._recent]), self.letters)
        if drawn is None:
            return None
        letter, self.travelled = drawn
        return letter
