"""speller.Speller on synthetic frame sequences: what is committed, when, and what is not."""
import pytest

from asl_pipeline.speller import Speller

FPS = 10
NO_HAND = ("nothing", 0.0, False)  # what a frame without a hand feeds, whatever the model read


def frames(label: str, count: int, probability: float = 0.6, hand_found: bool | None = True) -> list:
    return [(label, probability, hand_found)] * count


def spell(sequence, **params) -> Speller:
    speller = Speller(**params)
    for index, (label, probability, hand_found) in enumerate(sequence):
        speller.feed(label, probability, hand_found, index, index / FPS)
    return speller


def test_a_clean_word_commits_each_letter_once_at_the_frame_it_becomes_steady():
    sequence = frames("C", 10) + frames("nothing", 5) + frames("A", 20) + frames("nothing", 5) + frames("B", 10)
    speller = spell(sequence, window=6, min_share=0.7)
    assert speller.text == "CAB"  # A held for 2 s is one A
    assert [(event.label, event.frame, event.text) for event in speller.committed] == [
        ("C", 4, "C"), ("A", 19, "CA"), ("B", 44, "CAB")]  # the 5th frame of each: 5 of 6 needed
    assert speller.committed[1].seconds == pytest.approx(1.9)


def test_flicker_between_two_letters_commits_neither_until_one_holds():
    flicker = [("U", 0.6, True), ("V", 0.6, True)] * 6  # neither fills 5 of the last 6 frames
    assert spell(flicker).text == ""
    assert spell(flicker + frames("V", 5)).text == "V"


def test_one_misread_frame_neither_stops_nor_repeats_a_letter():
    sequence = frames("L", 4) + frames("I", 1) + frames("L", 12) + frames("I", 1) + frames("L", 12)
    assert spell(sequence).text == "L"


def test_low_probability_frames_are_ignored():
    assert spell(frames("A", 20, probability=0.2), min_probability=0.4).text == ""
    # Unsure frames in the middle of a held letter do not release it: still one A.
    sequence = frames("A", 6) + frames("nothing", 6, probability=0.1) + frames("A", 6)
    assert spell(sequence, min_probability=0.4).text == "A"


def test_a_hand_that_leaves_mid_letter():
    # Not held long enough before the hand left: nothing spelled.
    assert spell(frames("B", 3) + [NO_HAND] * 10).text == ""
    # Committed, then the hand leaves: the letter stays; a hand lost for a frame or two is not a release.
    held = frames("B", 6) + [NO_HAND] * 2 + frames("B", 6)
    assert spell(held).text == "B"
    # Whatever a hand-landmark model reads without a hand, it is not a letter.
    assert spell([("Q", 0.6, False)] * 10).text == ""


def test_a_double_letter_needs_a_pause_between_the_two():
    assert spell(frames("L", 20)).text == "L"
    assert spell(frames("L", 8) + [NO_HAND] * 5 + frames("L", 8)).text == "LL"
    assert spell(frames("L", 8) + frames("nothing", 5) + frames("L", 8)).text == "LL"


def test_del_removes_the_last_character_and_is_harmless_on_empty_text():
    speller = spell(frames("del", 10) + frames("H", 8) + frames("I", 8) + frames("del", 20))
    assert speller.text == "H"  # one del for 2 s held: one character
    assert [event.label for event in speller.committed] == ["del", "H", "I", "del"]
    assert speller.committed[0].text == ""


def test_space_commits_a_space():
    speller = spell(frames("H", 8) + frames("I", 8) + frames("space", 8) + frames("Y", 8) + frames("O", 8))
    assert speller.text == "HI YO"


def test_a_model_without_hands_reads_every_frame():
    assert spell(frames("K", 8, hand_found=None)).text == "K"


@pytest.mark.parametrize("params", [dict(window=0), dict(min_share=0.5), dict(min_share=1.1)])
def test_bad_params_are_refused(params):
    with pytest.raises(ValueError):
        Speller(**params)


def motion_frames(letter: str, count: int) -> list:
    """Frames whose motion the motion reader read as `letter`, the hand in that letter's handshape."""
    return [("I", 0.6, True, letter, {letter})] * count


def shaped(label: str, count: int, shape: str) -> list:
    """Frames read still as `label`, the hand in the handshape of the motion letter `shape`."""
    return [(label, 0.6, True, None, {shape})] * count


def spell_with_motion(sequence, **params) -> Speller:
    speller = Speller(**params)
    for index, (label, probability, hand_found, *motion) in enumerate(sequence):
        speller.feed(label, probability, hand_found, index, index / FPS, *motion)
    return speller


def test_a_motion_letter_is_taken_once_no_still_letter_holds_and_held_like_any_sign():
    speller = spell_with_motion(frames("A", 8) + motion_frames("Z", 4) + frames("nothing", 6) + motion_frames("Z", 2))
    assert speller.text == "AZZ"  # one Z for 4 frames of motion; the second after a release
    # The first Z once the A is under HELD_SHARE of the window's sure readings (3 of 6); the second on the first
    # frame of its motion, no letter being held.
    assert [event.frame for event in speller.committed] == [4, 10, 18]


@pytest.mark.parametrize("held, letter", [("G", "Z"), ("X", "Z"), ("Y", "J"), ("I", "Z")])
def test_a_held_letter_whose_hand_drifts_is_spelled_once_and_never_as_a_motion_letter(held, letter):
    # The motion reader reads the drift as a motion, but the still reader reads the held letter all along.
    drifting = [(held, 0.6, True, letter, {letter})] * 20
    assert spell_with_motion(frames(held, 8) + drifting).text == held
    # ... also with a frame in four read as another letter or unsure, as real frames are.
    flicker = [(other, probability, True, letter, {letter}) for other, probability in
               [(held, 0.6), (held, 0.6), (held, 0.6), ("N", 0.6)] * 3 + [(held, 0.6), ("N", 0.3)] * 3]
    assert spell_with_motion(frames(held, 8) + flicker).text == held


def test_a_j_is_taken_from_the_i_handshape_only():
    # A J's path is read as I through most of it: the I does not hold it back, and the I it started from becomes J.
    assert spell_with_motion(shaped("I", 8, "J") + [("I", 0.6, True, "J", {"J"})] * 4).text == "J"
    # The same path read as Y, or as I outnumbered by Y, is a drifting Y.
    assert spell_with_motion(frames("Y", 8) + [("Y", 0.6, True, "J", {"J"})] * 10).text == "Y"
    mostly_y = [("Y", 0.6, True, "J", {"J"}), ("I", 0.6, True, "J", {"J"}), ("Y", 0.6, True, "J", {"J"})] * 4
    assert spell_with_motion(frames("Y", 8) + mostly_y).text == "Y"


def test_a_still_frame_read_as_j_or_z_is_no_letter():
    assert spell(frames("J", 20) + frames("Z", 20)).text == ""
    # ... and it does not release a held letter either
    assert spell(frames("A", 8) + frames("Z", 8) + frames("A", 8)).text == "A"


@pytest.mark.parametrize("still, letter", [("I", "J"), ("X", "Z"), ("D", "Z")])
def test_the_handshape_a_motion_starts_and_ends_in_is_part_of_it(still, letter):
    # The handshape held long enough to be taken as a still letter, then drawn into the motion without a
    # release, then held after it: one motion letter.
    speller = spell_with_motion(shaped(still, 8, letter) + motion_frames(letter, 3) + shaped(still, 10, letter))
    assert speller.text == letter and [event.label for event in speller.committed] == [letter]
    # Released before the motion, the still letter is a letter of its own.
    released = shaped(still, 8, letter) + frames("nothing", 6) + motion_frames(letter, 3)
    assert spell_with_motion(released).text == still + letter
    # A letter taken from another handshape stays: the hand changed shape before drawing the motion.
    assert spell_with_motion(frames("A", 8) + motion_frames(letter, 3)).text == "A" + letter
    # And the still letter signed again after a release, once the motion is done, is a new letter.
    after = motion_frames(letter, 3) + frames("nothing", 6) + shaped(still, 8, letter)
    assert spell_with_motion(after).text == letter + still


def test_a_motion_letter_taken_goes_on_while_its_motion_lasts():
    # The pointing index read as X, then R as it starts to move; the Z is read, and the hand holds its end pose,
    # read as D (its index not leading in these frames), while the motion reader still reads the Z: one Z, not
    # a Z and a D (signer 2's Z with a model of a few letters).
    start = shaped("X", 6, "Z") + shaped("R", 3, "Z") + [("X", 0.6, True, "Z", {"Z"})]
    end = [("D", 0.6, True, "Z", frozenset())] * 10
    assert spell_with_motion(start + end).text == "Z"
