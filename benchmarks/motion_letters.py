"""J and Z read from the motion and held letters spelled once, scored on people the rules and the still reader
were not measured or trained on; and `spell` with and without tracking on the same videos. Part of `make bench`;
alone:

    python benchmarks/motion_letters.py [--skip-tracking] [--features DIR]   (or: python benchmarks/run.py --only motion)

The still reader that reads each person's frames is the reader variant's head trained as the train stage trains
it (params.yaml, the feature files of `dvc repro featurize@reader`, which hold the 21 webcam people's photos)
without that person: the webcam people in GroupKFold folds (motion_clips.FOLDS), each of the four signers alone.
Hands are found as `spell` finds them (tracked, 10 fps) and cached with each frame's head input under the
system's temp folder (motion_clips.py), so only the heads are trained on a later run.

- Leave one signer out: for each of the four signers of ../shared/data/asl-signer-videos, the motion thresholds
  (asl_pipeline/motion.py) are measured on the other three signers' 78 videos (all three 10 fps phases of their
  30 fps frames), then that signer's 26 videos (phase 0) are spelled: J and Z found in their own videos, and
  false J or Z in the 24 static letters' videos. The shipped thresholds are measured the same way on signers 1, 3
  and 4 (`shipped_fit`), so signer 2 demonstrates a signer the rule never saw.
- Webcam people: every clip of ../shared/data/asl-webcam-signer-clips (4 s of one person holding one letter)
  spelled, and WORDS_PER_PERSON words per person made of their clips, a second without a hand between letters.
- Tracking: `spell` on every signer video and on words of held-out sample frames, with and without tracking,
  the two alternating video by video: letters spelled and frames per second.

Each figure of the rules also comes with the suffix _no_still_check (the same motion thresholds, every motion
letter taken whatever the still reader reads) and _before (the rule of 597f8d7, BEFORE). Keys:
  motion_loso_found, motion_loso_static_clean   J and Z found in the held-out signers' videos (of
                          motion_loso_motion_videos), static letters' videos with no false J or Z (of
                          motion_loso_static_videos); motion_loso_details: per signer
  motion_shipped_fit, motion_shipped_matches_code   the thresholds fitted on SHIPPED_FROM, and whether they are
                          asl_pipeline/motion.py's
  motion_webcam_invented   clips of still letters (of motion_webcam_clips_held) whose text has a J or Z
  motion_webcam_exact_share, motion_webcam_exact_by_letter   the share of those clips spelled exactly as their
                          letter, once; per letter
  motion_webcam_repeated, motion_webcam_with_others, motion_webcam_missed   clips spelled as their letter more
                          than once, as their letter with others, without their letter
  motion_webcam_jz_read   J and Z clips (of motion_webcam_clips_jz) whose text has their letter
  motion_words_exact_share, motion_words_missed   words (of motion_words) spelled exactly; the others, as spelled
  motion_webcam_people, motion_webcam_folds   the webcam people and their folds
  tracking_speedup, spell_fps_tracking_signer_videos, spell_fps_no_tracking_signer_videos   `spell`'s frames per
                          second on the signer videos and sample words, with tracking over without
  signer_videos_right_*, sample_words_right_*   texts spelled right, of signer_videos and sample_words
                          (with a model only: the tracking comparison)
"""
import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO  # first: it puts this checkout on sys.path

import motion_clips  # noqa: E402  (benchmarks/)
from asl_pipeline import motion, speller  # noqa: E402
from asl_pipeline.config import project_paths  # noqa: E402

VIDEOS = motion_clips.SIGNER_VIDEOS
SIGNERS = ("signer1", "signer2", "signer3", "signer4")
SHIPPED_FROM = ("signer1", "signer3", "signer4")
READ_FPS = motion_clips.READ_FPS
MOTION = speller.MOTION_LETTERS
# The lead thresholds tried: from 0, a finger that leads. Below 0, held out, signer 3's P (index and middle finger
# out, misread by the still reader as M, N and Q) was read as Z.
LEADS = np.round(np.arange(0.0, 1.01, 0.05), 2)
MIN_EXTENT = 0.5  # palm sizes: below it, a fingertip's path is a held hand's tremor and the landmarks' noise
MIN_GAP = 1.5  # a clear gap: the letter's own fingertips travelled at least this many times as far as any other's
# The rule of 597f8d7, before issue #29, for the "before" figures: its thresholds, no look at the still reader.
BEFORE = (motion.MotionLetter("J", 17, min_lead=0.25, min_extent=1.59),
          motion.MotionLetter("Z", 5, min_lead=0.15, min_extent=1.23))
# Key suffix -> (the speller's held_share, the motion letters of the webcam figures): this rule; its thresholds
# without the look at the still reader; and the rule before. (The signers left out get thresholds of their own.)
RULES = {"": (speller.HELD_SHARE, motion.MOTION_LETTERS), "_no_still_check": (None, motion.MOTION_LETTERS),
         "_before": (None, BEFORE)}
WORDS_PER_PERSON = 5
WORD_LETTERS = (3, 4)
HOLD = 3  # frames each sample photo is shown in the word videos: 0.3 s at 10 fps
KEYS = ("motion_loso_motion_videos", "motion_loso_static_videos", "motion_shipped_fit", "motion_shipped_matches_code",
        "motion_webcam_clips_held", "motion_webcam_clips_jz", "motion_webcam_people", "motion_webcam_folds",
        "motion_words",
        *(f"{name}{rule}" for rule in RULES for name in (
            "motion_loso_found", "motion_loso_static_clean", "motion_loso_details", "motion_webcam_invented",
            "motion_webcam_exact_share", "motion_webcam_exact_by_letter", "motion_webcam_repeated",
            "motion_webcam_with_others", "motion_webcam_missed", "motion_webcam_jz_read", "motion_words_exact_share",
            "motion_words_missed")),
        "spell_fps_tracking_signer_videos", "spell_fps_no_tracking_signer_videos", "tracking_speedup",
        *(f"{counter}_{mode}" for mode in ("tracking", "no_tracking")
          for counter in ("signer_videos_right", "sample_words_right")),
        "signer_videos", "sample_words")


def hand_frames(tracked: dict) -> list:
    """[(seconds, (21, 3) landmarks or None)] of one video's tracked frames, as the motion reader is fed them."""
    return [(seconds, None if np.isnan(points[0, 0]) else points)
            for seconds, points in zip(tracked["seconds"], tracked["landmarks"])]


def windows(frames: list, window_seconds: float = motion.WINDOW_SECONDS) -> list:
    """The (frames, 21, 3) window the motion reader sees at each frame with a hand: the frames of the last
    window_seconds since the last frame without one."""
    result, run = [], []
    for seconds, points in frames:
        run = [] if points is None else [(when, p) for when, p in run if when > seconds - window_seconds]
        if points is not None:
            run.append((seconds, points))
        if len(run) >= motion.MIN_FRAMES:
            result.append(np.stack([p for _, p in run]).astype(np.float64))
    return result


def fit(videos: dict, signers) -> tuple:
    """The MotionLetters measured on `signers`' videos, all phases. For each letter and each lead threshold of
    LEADS, the extent threshold goes to the geometric middle of the gap between the farthest any other video's
    fingertip travelled (so none is read as the letter) and the least of the letter's own videos beyond it. Of
    the lead thresholds that find the most of the letter's videos with a clear gap (MIN_GAP), the middle one
    is taken."""
    features = {}  # (letter, signer, phase) -> {motion letter: (windows, 3) lead, extent, coherence}
    for (letter, signer, phase), tracked in videos.items():
        if signer in signers:
            features[letter, signer, phase] = {
                m.letter: np.array([motion.window_features(w, m) for w in windows(hand_frames(tracked))]
                                   or np.zeros((0, 3)))
                for m in motion.MOTION_LETTERS}
    fitted = []
    for base in motion.MOTION_LETTERS:
        choices = {}  # lead -> (videos found, how much farther they travelled than any other, extent threshold)
        for lead in LEADS:
            reach = {key: float(f[base.letter][(f[base.letter][:, 0] >= lead)
                                               & (f[base.letter][:, 2] >= motion.MIN_COHERENCE), 1].max(initial=0.0))
                     for key, f in features.items()}
            negatives = max(max(value for key, value in reach.items() if key[0] != base.letter), MIN_EXTENT)
            positives = sorted(value for key, value in reach.items() if key[0] == base.letter and value > negatives)
            if positives:
                choices[float(lead)] = (len(positives), positives[0] / negatives,
                                        float(np.sqrt(positives[0] * negatives)))
        most = max(found for found, _, _ in choices.values())
        best = [lead for lead, (found, _, _) in choices.items() if found == most]
        clear = [lead for lead in best if choices[lead][1] >= MIN_GAP]
        # The middle of the leads that find the most with a clear gap: as far as these signers allow from either side.
        leads = clear or best
        lead = leads[len(leads) // 2]
        fitted.append(dataclasses.replace(base, min_lead=lead, min_extent=round(choices[lead][2], 2)))
    return tuple(fitted)


def leave_one_signer_out(videos: dict, readings: dict, classes, held_share) -> dict:
    """Per held-out signer: thresholds measured on the others' videos, then that signer's videos (phase 0) spelled
    as `spell` spells them, each frame read by a still reader trained without that signer: J and Z found (the
    letter in the text, the other motion letter not), and the static letters' videos with a J or Z."""
    result = {}
    for signer in SIGNERS:
        letters = fit(videos, [s for s in SIGNERS if s != signer])
        texts = {letter: motion_clips.spell_frames(tracked, readings[letter, who, phase], classes, letters, held_share)
                 for (letter, who, phase), tracked in videos.items() if who == signer and phase == "0"}
        false = sorted(f"{letter}->{text}" for letter, text in texts.items()
                       if letter not in MOTION and set(text) & set(MOTION))
        result[signer] = {**{f"{m}_found": m in texts[m] and not set(texts[m]) & (set(MOTION) - {m}) for m in MOTION},
                          "false_static": false, "thresholds": {m.letter: [m.min_lead, m.min_extent] for m in letters}}
    return result


def spelled(classifier, path: Path, tracking: bool) -> tuple:
    """(text, frames, seconds) of `spell` on a video, with or without tracking."""
    from asl_pipeline import video
    from asl_pipeline.stream import StreamReader

    reader = StreamReader(tracking=tracking)
    capture = video.open_source(path, None)
    try:
        start = time.perf_counter()
        frames = video.spell(classifier, capture, reader, READ_FPS, live=False)
        return reader.speller.text, frames, time.perf_counter() - start
    finally:
        capture.release()


def sample_word_videos(folder: Path, count: int, seed: int = 0) -> list:
    """[(word, path)]: `count` random five-letter words of held-out sample frames (data/split/test.csv) at 10 fps:
    each letter four photos, `nothing` two between and around, each photo held HOLD frames as a hand holds still
    (the sample's frames of a letter are seconds apart in its video: one after another every 0.1 s, the hand would
    jump about the frame ten times a second, which no signer does)."""
    import csv

    import cv2

    from asl_pipeline import images

    by_label = {}
    with (REPO / "data" / "split" / "test.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            by_label.setdefault(row["label"], []).append(REPO / row["path"])
    letters = [label for label in by_label if len(label) == 1 and label not in ("J", "Z")]
    rng = np.random.default_rng(seed)
    result = []
    for number in range(count):
        word = "".join(rng.choice(letters, 5))
        path = folder / f"word{number}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), READ_FPS, (200, 200))
        for label, photos in [("nothing", 2)] + [s for letter in word for s in ((letter, 4), ("nothing", 2))]:
            for photo in rng.choice(by_label[label], photos, replace=False):
                bgr = cv2.cvtColor(cv2.resize(images.load_rgb(photo), (200, 200)), cv2.COLOR_RGB2BGR)
                for _ in range(HOLD):
                    writer.write(bgr)
        writer.release()
        result.append((word, path))
    return result


def tracking_comparison(model_file: Path, words: int) -> dict:
    """`spell` with and without tracking, alternating video by video: texts right, and frames per second."""
    from asl_pipeline import inference

    classifier = inference.load_classifier(model_file)
    classifier.analyse([np.zeros((200, 200, 3), np.uint8)], with_heatmaps=False)  # warm: traces, interpreters
    totals = {mode: {"frames": 0, "seconds": 0.0, "signer_videos_right": 0, "sample_words_right": 0}
              for mode in ("tracking", "no_tracking")}
    with tempfile.TemporaryDirectory(prefix="asl-words-") as folder:
        jobs = [(path.parent.name, path, "signer_videos_right") for path in sorted(VIDEOS.glob("*/signer*.mp4"))]
        jobs += [(word, path, "sample_words_right") for word, path in sample_word_videos(Path(folder), words)]
        for number, (expected, path, counter) in enumerate(jobs):
            print(f"\rspell with and without tracking: {number + 1}/{len(jobs)}", end="", file=sys.stderr)
            for mode in (("tracking", "no_tracking") if number % 2 else ("no_tracking", "tracking")):
                text, frames, seconds = spelled(classifier, path, mode == "tracking")
                totals[mode]["frames"] += frames
                totals[mode]["seconds"] += seconds
                totals[mode][counter] += text == expected
    print(file=sys.stderr)
    fps = {mode: total["frames"] / total["seconds"] for mode, total in totals.items()}
    return {"spell_fps_tracking_signer_videos": fps["tracking"],
            "spell_fps_no_tracking_signer_videos": fps["no_tracking"],
            "tracking_speedup": fps["tracking"] / fps["no_tracking"],
            **{f"{counter}_{mode}": total[counter] for mode, total in totals.items()
               for counter in ("signer_videos_right", "sample_words_right")},
            "signer_videos": len(list(VIDEOS.glob("*/signer*.mp4"))), "sample_words": words}


def webcam_figures(clips: dict, readings: dict, classes, held_share, letters, key: str) -> dict:
    """The webcam people's clips spelled (each person's frames read by their fold's head): motion letters invented
    in the clips of the other letters, the held letter read exactly once (overall and per letter), how the others
    went wrong, and the J and Z clips read as their letter."""
    texts = {(letter, person): motion_clips.spell_frames(tracked, readings[letter, person], classes, letters, held_share)
             for (letter, person), tracked in clips.items()}
    held = {clip: text for clip, text in texts.items() if clip[0] not in MOTION}
    kinds = {"exact": lambda letter, text: text == letter,
             "repeated": lambda letter, text: len(text) > 1 and set(text) == {letter},
             "with_others": lambda letter, text: letter in text and set(text) != {letter},
             "missed": lambda letter, text: letter not in text}
    return {f"motion_webcam_invented{key}": sum(bool(set(text) & set(MOTION)) for text in held.values()),
            f"motion_webcam_exact_share{key}": np.mean([text == letter for (letter, _), text in held.items()]),
            f"motion_webcam_exact_by_letter{key}": {
                letter: round(float(np.mean([text == letter for (which, _), text in held.items() if which == letter])), 3)
                for letter in sorted({letter for letter, _ in held})},
            **{f"motion_webcam_{kind}{key}": sum(test(letter, text) for (letter, _), text in held.items())
               for kind, test in kinds.items() if kind != "exact"},
            f"motion_webcam_jz_read{key}": sum(letter in text for (letter, _), text in texts.items() if letter in MOTION)}


def webcam_words(clips: dict, readings: dict, classes, held_share, letters, seed: int = 0) -> list:
    """[(word, text)]: WORDS_PER_PERSON random words of WORD_LETTERS letters per person, of that person's clips of
    still letters joined with a second without a hand between letters, spelled (seeded: the same words each run)."""
    rng = np.random.default_rng(seed)
    result = []
    for person in sorted({person for _, person in clips}):
        still = sorted(letter for letter, who in clips if who == person and letter not in MOTION)
        for _ in range(WORDS_PER_PERSON):
            word = "".join(rng.choice(still, rng.integers(WORD_LETTERS[0], WORD_LETTERS[1] + 1)))
            frames, rows = motion_clips.word_frames([clips[letter, person] for letter in word],
                                                    [readings[letter, person] for letter in word])
            result.append((word, motion_clips.spell_frames(frames, rows, classes, letters, held_share)))
    return result


def measure(model_file: Path | None = None, words: int = 30,
            features: Path = project_paths(REPO).variant("reader").features) -> dict:
    """The figures run.py writes into benchmarks/results.json (and `loso_details`, `shipped_fit` beside them).

    features: the reader variant's feature files (`dvc repro featurize@reader`, with the webcam people's photos),
    from which a head is trained without each person whose videos it reads."""
    videos, clips = motion_clips.signer_videos(), motion_clips.webcam_clips()
    classes, readings = motion_clips.still_readings(features, clips, videos)
    shipped = fit(videos, SHIPPED_FROM)
    result = {"motion_loso_motion_videos": 2 * len(SIGNERS), "motion_loso_static_videos": 24 * len(SIGNERS),
              "motion_shipped_fit": {m.letter: [m.min_lead, m.min_extent] for m in shipped},
              "motion_shipped_matches_code": shipped == motion.MOTION_LETTERS,
              "motion_webcam_clips_held": sum(letter not in MOTION for letter, _ in clips),
              "motion_webcam_clips_jz": sum(letter in MOTION for letter, _ in clips),
              "motion_webcam_people": len({person for _, person in clips}), "motion_webcam_folds": motion_clips.FOLDS,
              "motion_words": WORDS_PER_PERSON * len({person for _, person in clips})}
    for key, (held_share, letters) in RULES.items():
        loso = leave_one_signer_out(videos, readings, classes, held_share)
        spelled_words = webcam_words(clips, readings, classes, held_share, letters)
        result |= {f"motion_loso_found{key}": sum(v["J_found"] + v["Z_found"] for v in loso.values()),
                   f"motion_loso_static_clean{key}": sum(24 - len(v["false_static"]) for v in loso.values()),
                   f"motion_loso_details{key}": loso,
                   **webcam_figures(clips, readings, classes, held_share, letters, key),
                   f"motion_words_exact_share{key}": np.mean([word == text for word, text in spelled_words]),
                   f"motion_words_missed{key}": [f"{word}->{text}" for word, text in spelled_words if word != text]}
    if model_file is not None:
        result |= tracking_comparison(model_file, words)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "reader" / "model.keras",
                        help="the model `spell` reads with in the tracking comparison (default: %(default)s)")
    parser.add_argument("--words", type=int, default=30, help="five-letter words of held-out sample frames")
    parser.add_argument("--skip-tracking", action="store_true", help="only the J/Z and webcam figures")
    parser.add_argument("--features", type=Path, default=project_paths(REPO).variant("reader").features,
                        help="the reader's feature files, with the webcam people's photos (default: %(default)s)")
    args = parser.parse_args()
    result = measure(None if args.skip_tracking else args.model, args.words, args.features)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
