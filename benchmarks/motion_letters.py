"""J and Z read from the motion, scored on signers the rule was not measured on; and `spell` with and without
tracking on the same videos. Part of `make bench`; alone:

    python benchmarks/motion_letters.py [--json]      (or: python benchmarks/run.py --only motion)

- Leave one signer out: for each of the four signers of ../shared/data/asl-signer-videos, the rule's thresholds
  (asl_pipeline/motion.py) are measured on the other three signers' 78 videos (all three 10 fps phases of their
  30 fps frames), then that signer's 26 videos are read as `spell` reads them (10 fps): J and Z found in their own
  videos, and false J or Z in the 24 static letters' videos. The shipped thresholds are measured the same way
  on signers 1, 3 and 4 (`shipped_fit`), so signer 2 demonstrates a signer the rule never saw.
- Tracking: `spell` on every signer video and on words of held-out sample frames, with and without tracking,
  the two alternating video by video: letters spelled and frames per second.

Per-frame hands of the 104 videos are computed once (tracked, as `spell` finds them) and cached under the
system's temp folder.

Keys:
  motion_loso_found, motion_loso_static_clean   J and Z found in the held-out signers' videos (of
                          motion_loso_motion_videos), static letters' videos with no false J or Z (of
                          motion_loso_static_videos); motion_loso_details: per signer
  motion_shipped_fit, motion_shipped_matches_code   the thresholds fitted on SHIPPED_FROM, and whether they are
                          asl_pipeline/motion.py's
  tracking_speedup, spell_fps_tracking_signer_videos, spell_fps_no_tracking_signer_videos   `spell`'s frames per
                          second on the signer videos and sample words, with tracking over without
  signer_videos_right_*, sample_words_right_*   texts spelled right, of signer_videos and sample_words
                          (with a model only: the tracking comparison)
"""
import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BUNDLE, REPO, SHARED  # first: it puts this checkout on sys.path

from asl_pipeline import hands, hand_model, motion  # noqa: E402
from asl_pipeline.config import load_params  # noqa: E402

VIDEOS = SHARED / "data" / "asl-signer-videos"
SIGNERS = ("signer1", "signer2", "signer3", "signer4")
SHIPPED_FROM = ("signer1", "signer3", "signer4")
SOURCE_FPS, READ_FPS = 30, 10
PHASES = SOURCE_FPS // READ_FPS  # a 30 fps video read at 10 fps three ways: frames 0, 3, ...; 1, 4, ...; 2, 5, ...
LEADS = np.round(np.arange(-0.5, 1.01, 0.05), 2)  # the lead thresholds tried
MIN_EXTENT = 0.5  # palm sizes: below it, a fingertip's path is a held hand's tremor and the landmarks' noise
MIN_GAP = 1.5  # a clear gap: the letter's own fingertips travelled at least this many times as far as any other's
CACHE = Path(tempfile.gettempdir()) / "asl-motion-landmarks"
HOLD = 3  # frames each sample photo is shown in the word videos: 0.3 s at 10 fps
KEYS = ("motion_loso_found", "motion_loso_motion_videos", "motion_loso_static_clean", "motion_loso_static_videos",
        "motion_loso_details", "motion_shipped_fit", "motion_shipped_matches_code",
        "spell_fps_tracking_signer_videos", "spell_fps_no_tracking_signer_videos", "tracking_speedup",
        *(f"{counter}_{mode}" for mode in ("tracking", "no_tracking")
          for counter in ("signer_videos_right", "sample_words_right")),
        "signer_videos", "sample_words")


def video_frames(path: Path) -> list:
    import cv2
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def tracked_landmarks(path: Path, landmarker) -> np.ndarray:
    """(frames, 21, 3) of every frame, NaN where no hand: each phase's frames tracked as `spell` tracks them."""
    frames = video_frames(path)
    landmarks = np.full((len(frames), 21, 3), np.nan, np.float32)
    for phase in range(PHASES):
        track = hands.HandTrack()
        for index in range(phase, len(frames), PHASES):
            hand = track.find(landmarker, frames[index])
            if hand is not None:
                landmarks[index] = hand.landmarks
    return landmarks


def signer_videos() -> dict:
    """{(letter, signer): (frames, 21, 3) landmarks}, computed once and cached."""
    paths = sorted(VIDEOS.glob("*/signer*.mp4"))
    if len(paths) != 26 * len(SIGNERS):
        sys.exit(f"expected {26 * len(SIGNERS)} videos under {VIDEOS}, found {len(paths)}")
    digest = hashlib.sha256("".join(f"{p}{p.stat().st_size}" for p in paths).encode()
                            + Path(hands.__file__).read_bytes()).hexdigest()[:16]
    cache = CACHE.with_name(f"{CACHE.name}-{digest}.npz")
    if not cache.is_file():
        params = load_params(REPO / "params.yaml").hands
        landmarker = hands.HandLandmarker(
            hand_model.verified_bundle(BUNDLE),
            params.min_detection_confidence, params.min_presence_confidence, params.border,
            params.fallback_min_presence, num_threads=1)
        arrays = {}
        for number, path in enumerate(paths):
            print(f"\rhands of {path.parent.name}/{path.name} ({number + 1}/{len(paths)})", end="", file=sys.stderr)
            arrays[f"{path.parent.name}/{path.stem}"] = tracked_landmarks(path, landmarker)
        print(file=sys.stderr)
        np.savez_compressed(cache, **arrays)
    with np.load(cache) as data:
        return {tuple(key.split("/")): data[key] for key in data.files}


def phase_frames(landmarks: np.ndarray, phase: int) -> list:
    """[(seconds, (21, 3) landmarks or None)] of one phase, as `spell` reads it at READ_FPS."""
    return [(index / SOURCE_FPS, None if np.isnan(landmarks[index, 0, 0]) else landmarks[index])
            for index in range(phase, len(landmarks), PHASES)]


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
    features = {}  # (letter, signer, phase) -> {motion letter: (windows, 2) lead, extent}
    for (letter, signer), landmarks in videos.items():
        if signer in signers:
            for phase in range(PHASES):
                features[letter, signer, phase] = {
                    m.letter: np.array([motion.window_features(w, m) for w in windows(phase_frames(landmarks, phase))]
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


def read_video(landmarks: np.ndarray, letters, phase: int = 0) -> set:
    """The motion letters the motion reader reads anywhere in one phase of a video."""
    reader = motion.MotionReader(letters)
    return {reader.feed(points, seconds) for seconds, points in phase_frames(landmarks, phase)} - {None}


def leave_one_signer_out(videos: dict) -> dict:
    """Per held-out signer: thresholds measured on the others; J and Z found, false J/Z on the static videos."""
    result = {}
    for signer in SIGNERS:
        letters = fit(videos, [s for s in SIGNERS if s != signer])
        read = {letter: read_video(landmarks, letters) for (letter, who), landmarks in videos.items() if who == signer}
        false = sorted(f"{letter}->{''.join(sorted(found))}" for letter, found in read.items()
                       if letter not in ("J", "Z") and found)
        result[signer] = {"J_found": read["J"] == {"J"}, "Z_found": read["Z"] == {"Z"}, "false_static": false,
                          "thresholds": {m.letter: [m.min_lead, m.min_extent] for m in letters}}
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


def measure(model_file: Path | None = None, words: int = 30) -> dict:
    """The figures run.py writes into benchmarks/results.json (and `loso_details`, `shipped_fit` beside them)."""
    videos = signer_videos()
    loso = leave_one_signer_out(videos)
    shipped = fit(videos, SHIPPED_FROM)
    result = {"motion_loso_found": sum(v["J_found"] + v["Z_found"] for v in loso.values()),
              "motion_loso_motion_videos": 2 * len(SIGNERS),
              "motion_loso_static_clean": sum(24 - len(v["false_static"]) for v in loso.values()),
              "motion_loso_static_videos": 24 * len(SIGNERS),
              "motion_loso_details": loso,
              "motion_shipped_fit": {m.letter: [m.min_lead, m.min_extent] for m in shipped},
              "motion_shipped_matches_code": shipped == motion.MOTION_LETTERS}
    if model_file is not None:
        result |= tracking_comparison(model_file, words)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "reader" / "model.keras",
                        help="the model `spell` reads with in the tracking comparison (default: %(default)s)")
    parser.add_argument("--words", type=int, default=30, help="five-letter words of held-out sample frames")
    parser.add_argument("--skip-tracking", action="store_true", help="only the J/Z figures")
    args = parser.parse_args()
    result = measure(None if args.skip_tracking else args.model, args.words)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
