"""Fingerspelling: the model's reading of each video frame in, text out.

A sign is committed when it is held steadily: the same label fills at least `min_share` of the last `window`
frames, each read with a probability of at least `min_probability`. A committed sign is not committed again
until it is released, that is until something else holds the window: another sign, `nothing`, or no hand.
So holding L for two seconds spells one L, and "LL" is spelled by dropping the hand (or showing `nothing`)
between the two. `space` adds a space and `del` removes the last character.

J and Z are signed with a motion, which single frames do not show: they come from the motion reader
(motion.py), never from one frame's reading (a frame read as J or Z counts for no sign). A motion letter is
taken on the frame the motion is read, and is held, like any sign, until released; but not while the still
reader says the hand holds a letter (one letter most of the window's sure readings; for a J, any letter but its
I outnumbering the I): a held letter's hand drifts as much as a finger draws a J or Z at a webcam, and a drift
does not change what the still reader reads. Once taken, a motion letter goes on while its motion is read. The hand holds the motion's
handshape before and after it (the I of a J, the pointing index of a Z), which the still reader reads as some
letter: a letter taken from a hand in the motion's handshape, not released before the hand draws the motion,
was the motion's start and becomes the motion letter; and the handshape held after the motion is the same sign,
not a new letter.
"""
import collections
import dataclasses
import math

SPACE, DELETE, NOTHING = "space", "del", "nothing"

# Measured on 200 random 5-letter words made of held-out sample frames at 10 fps
# (docs/predict-and-spell.md, "Spell from a video"):
WINDOW = 6  # 0.6 s at 10 fps: a shape the hand passes through for under half a second is not read as a sign
MIN_SHARE = 0.7  # 5 of 6 frames: 99% of the words right; 6 of 6 (0.8) 97%, as one misread frame stops a sign
MIN_PROBABILITY = 0.5  # a frame read more likely than not: the kernel head's right readings average 0.92, its wrong 0.45
MOTION_LETTERS = ("J", "Z")
# A motion letter is not taken while one letter makes up this share of the sure still readings of the window:
# the hand holds that letter and drifts. Measured on the 21 webcam people's held-letter clips, each read by a
# head that never saw them, and the four signers' J and Z videos (docs/predict-and-spell.md, "Motion letters"):
# with Z's extent threshold of 597f8d7 (1.23), 0.6 left 4 of 501 held letters read as J or Z (30 without the
# check) and found every J and Z of signers 1, 2 and 4; 0.5 left 2 but lost signer 2's Z; 0.7 left 6. With the
# refitted 1.81, 0.5 to 0.84 all leave the same 2 (held I's read as J, which the J rule below decides).
HELD_SHARE = 0.6
# The still letter a motion letter's path reads as: a J is the I handshape drawn, read as I through most of it
# (the four signers' J videos), so the I does not count as held. A J is taken only where no other still letter
# outnumbers the I: a drifting Y (the little finger out too, with the thumb) is not a J. Z's index passes through
# D, X, R and U: it has no such letter.
MOTION_STARTS = {"J": "I"}


@dataclasses.dataclass(frozen=True)
class Committed:
    """One sign the speller took: where in the stream, and the text after it."""

    label: str  # a letter, SPACE or DELETE
    frame: int  # index of the frame in the source video
    seconds: float  # that frame's time in the source
    text: str


class Speller:
    """Feed it one frame's reading at a time; `text` is what has been spelled so far."""

    def __init__(self, window: int = WINDOW, min_share: float = MIN_SHARE,
                 min_probability: float = MIN_PROBABILITY, held_share: float | None = HELD_SHARE):
        """held_share: HELD_SHARE; None takes every motion letter the motion reader reads, whatever the still
        reader reads (the rule before, for comparison in benchmarks/motion_letters.py)."""
        if window < 1:
            raise ValueError(f"window must be at least 1 frame, not {window}")
        # Over half, so that at most one sign can hold the window at a time.
        if not 0.5 < min_share <= 1:
            raise ValueError(f"min_share must be over 0.5 and at most 1, not {min_share}")
        self.min_probability = min_probability
        self.held_share = held_share
        self.needed = math.ceil(min_share * window)  # frames of one sign that make it steady
        self._recent = collections.deque(maxlen=window)
        self._held = None  # the steady sign last seen: committed already, or `nothing`
        self._held_shapes = frozenset()  # the motion letters whose handshape the hand had when it became steady
        self.text = ""
        self.committed = []
        self.motion = None  # the motion letter the last frame was read as; None also for a held letter's drift

    def feed(self, label: str, probability: float, hand_found: bool | None, frame: int,
             seconds: float, motion: str | None = None, shapes=frozenset()) -> Committed | None:
        """Take one frame's top label; the Committed sign if this frame commits one.

        hand_found: False when the model looked for a hand and found none (read as `nothing`), None when the
        model does not look for hands. motion: the motion letter the motion reader read over the last frames;
        shapes: the motion letters whose handshape the hand has in this frame (motion.handshapes).
        """
        if hand_found is False:
            reading = NOTHING
        else:
            # A frame the model is unsure of counts for no sign: it neither holds nor releases one; nor does a
            # single frame's J or Z, which only the motion reader reads.
            sure = probability >= self.min_probability and label not in MOTION_LETTERS
            reading = label if sure else None
        self._recent.append(reading)
        # A held letter's hand drifting is the held letter, not a motion; a motion letter already taken goes on
        # being read while the motion lasts (else its end handshape, read as D or X, would become a letter).
        if (motion is not None and motion != self._held and self.held_share is not None
                and self._holds_a_still_letter(motion)):
            motion = None
        if motion is not None:
            self._recent[-1] = motion
        self.motion = motion
        steady = motion or self._steady()
        if steady is None or steady == self._held:
            return None
        if self._held in MOTION_LETTERS and self._held in shapes:
            return None  # the handshape the motion ended in, still held: the same sign
        start_of_motion = (steady in MOTION_LETTERS and steady in self._held_shapes
                           and self.committed and self.committed[-1].label == self._held)
        self._held, self._held_shapes = steady, frozenset(shapes)
        if steady == NOTHING:
            return None
        if start_of_motion:  # the handshape taken a moment ago was this motion's start
            self.committed.pop()
            self.text = self.text[:-1]
        self.text = self._apply(steady)
        event = Committed(steady, frame, seconds, self.text)
        self.committed.append(event)
        return event

    def _holds_a_still_letter(self, motion: str) -> bool:
        """Whether the window's sure still readings say the hand holds a letter, drifting, rather than draws
        `motion`: for J, another letter outnumbers its I; for Z, one letter is at least HELD_SHARE of them (and
        two frames)."""
        counts = collections.Counter(label for label in self._recent
                                     if label not in (None, NOTHING, *MOTION_LETTERS))
        start = counts.pop(MOTION_STARTS.get(motion), 0)
        most = max(counts.values(), default=0)
        if motion in MOTION_STARTS:
            return most > start
        return most >= max(2, math.ceil(self.held_share * sum(counts.values())))

    def _steady(self) -> str | None:
        counts = collections.Counter(label for label in self._recent if label is not None)
        if not counts:
            return None
        label, count = counts.most_common(1)[0]
        return label if count >= self.needed else None

    def _apply(self, sign: str) -> str:
        if sign == DELETE:
            return self.text[:-1]
        return self.text + (" " if sign == SPACE else sign)
