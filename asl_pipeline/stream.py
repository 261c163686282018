"""A stream of frames read sign by sign, for `spell` (a video file or a camera) and the live page alike: each
frame's hand found from the last frame's (tracking), its letter read by the classifier, J and Z read from the
motion over the last second, and the speller fed.

The model call itself stays with the caller (`spell` runs it in its loop, the live page on the demo's model
thread): `StreamReader.track` goes with the frame to Classifier.analyse, and `StreamReader.feed` takes the
Analysis.
"""
import dataclasses

import numpy as np

from asl_pipeline.featurizers import Track
from asl_pipeline.motion import MOTION_LETTERS, MotionReader, handshapes
from asl_pipeline.speller import Committed, Speller


@dataclasses.dataclass(frozen=True)
class Reading:
    """What one frame was read as: its top label (or the motion letter), and the sign it made the speller take."""

    label: str
    probability: float  # the classifier's top probability; 1.0 for a motion letter
    hand_found: bool | None
    motion: bool  # the label is a J or Z read from the motion of the last frames
    committed: Committed | None
    why: str = ""  # for a motion letter, why it was read; for a motion not taken, why not

    def describe(self) -> str:
        """The reading as the annotated video and the live page show it."""
        if self.hand_found is False:
            return "no hand"
        reading = self.label if self.motion else f"{self.label} {self.probability:.2f}"
        return f"{reading} ({self.why})" if self.why else reading


class StreamReader:
    """One video's or camera's reader: its hand track, its motion reader and its speller.

    tracking: False finds the hand in every frame from scratch, as for a photo (to compare, `spell --no-tracking`).
    """

    def __init__(self, speller: Speller | None = None, tracking: bool = True, motion_letters=MOTION_LETTERS):
        self.speller = Speller() if speller is None else speller
        self.track = Track() if tracking else None
        self.motion = MotionReader(motion_letters)

    def feed(self, analysis, classes, frame: int, seconds: float) -> Reading:
        """The classifier's Analysis of the next frame (made with `self.track`) into the motion reader and the
        speller."""
        best = int(np.argmax(analysis.probabilities))
        label, probability = classes[best], float(analysis.probabilities[best])
        landmarks = None if analysis.hand is None else analysis.hand.landmarks
        drawn = self.motion.feed(landmarks, seconds)
        shapes = frozenset() if landmarks is None else handshapes(landmarks, self.motion.letters)
        committed = self.speller.feed(label, probability, analysis.hand_found, frame, seconds, drawn, shapes)
        why = ""
        if drawn is not None:
            finger = "little finger" if drawn == "J" else "index"
            why = f"{finger} drew {self.motion.travelled:.1f} palms"
            why += ", no letter held" if self.speller.motion else f": {label} held, not {drawn}"
        if self.speller.motion is not None:
            label, probability = self.speller.motion, 1.0
        return Reading(label, probability, analysis.hand_found, self.speller.motion is not None, committed, why)
