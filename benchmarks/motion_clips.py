"""The webcam people's clips and the four signers' videos as `spell` reads them, for motion_letters.py: each
frame's hand found as `spell` finds it (tracked at 10 fps, a left hand read as the right hand it mirrors), its
landmarks for the motion reader and the input of the still reader's head; the reader variant's head trained
without each person, reading that person's frames; and the speller fed as StreamReader feeds it. The hands are
computed once per clip set and hand code, the heads' readings once per feature files and params, cached under the
system's temp folder.
"""
import hashlib
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from common import BUNDLE, REPO, SHARED  # first: it puts this checkout on sys.path

from asl_pipeline import featurizers, hand_model, hands, motion, speller  # noqa: E402
from asl_pipeline.config import load_params  # noqa: E402
from asl_pipeline.featurizers import FeatureSpec  # noqa: E402
from asl_pipeline.stream import StreamReader  # noqa: E402

CLIPS = SHARED / "data" / "asl-webcam-signer-clips"  # <LETTER>/camNN.mp4: 4 s of a person holding the letter
SIGNER_VIDEOS = SHARED / "data" / "asl-signer-videos"  # <LETTER>/signerN.mp4 at 30 fps
READ_FPS = 10  # as `spell` reads
SIGNER_FPS = 30
PHASES = SIGNER_FPS // READ_FPS  # a 30 fps video read at 10 fps three ways: frames 0, 3, ...; 1, 4, ...; 2, 5, ...
CACHE = Path(tempfile.gettempdir()) / "asl-motion-frames"


def reader_featurizer() -> featurizers.Featurizer:
    """The reader variant's featurizer by params.yaml, with the shared hand model."""
    spec = FeatureSpec.from_params(load_params(REPO / "params.yaml").variant("reader"))
    return featurizers.Featurizer(spec, hand_model.verified_bundle(BUNDLE))


def tracked(featurizer, timed_frames) -> dict:
    """{"seconds", "landmarks" (frames, 21, 3; NaN without a hand), "vectors" (frames, hand_dim)} of
    (seconds, RGB frame) pairs read in order as one video, as `spell` reads them."""
    track = featurizers.Track()
    seconds, landmarks, vectors = [], [], []
    for when, rgb in timed_frames:
        prepared = featurizer.prepare(rgb, track)
        seconds.append(when)
        landmarks.append(np.full((21, 3), np.nan, np.float32) if prepared.hand is None else prepared.hand.landmarks)
        vectors.append(prepared.hand_vector)
    return {"seconds": np.array(seconds, np.float64), "landmarks": np.array(landmarks, np.float32),
            "vectors": np.array(vectors, np.float32)}


def clip_frames(path: Path):
    """(seconds, RGB) of a clip sampled as `spell` samples a file (video.sampled_frames at READ_FPS)."""
    from asl_pipeline import video

    capture = video.open_source(path, None)
    try:
        for _, seconds, rgb in video.sampled_frames(capture, READ_FPS, live=False):
            yield seconds, rgb
    finally:
        capture.release()


def signer_video_phases(path: Path) -> list:
    """The PHASES ways of reading a 30 fps signer video at 10 fps: [[(seconds, RGB)], ...]."""
    from asl_pipeline import video

    capture = video.open_source(path, None)
    try:
        frames = [(index / SIGNER_FPS, rgb) for index, (_, _, rgb)
                  in enumerate(video.sampled_frames(capture, SIGNER_FPS, live=False))]
    finally:
        capture.release()
    return [frames[phase::PHASES] for phase in range(PHASES)]


def _cached(name: str, paths: list, compute) -> dict:
    """{key: tracked(...)} for `paths`, computed by compute(featurizer, path) -> {key suffix: tracked}, cached
    under a digest of the files and the hand code."""
    digest = hashlib.sha256("".join(f"{p}{p.stat().st_size}" for p in paths).encode()
                            + Path(hands.__file__).read_bytes() + Path(featurizers.__file__).read_bytes()
                            + (REPO / "params.yaml").read_bytes()).hexdigest()[:16]
    cache = CACHE.with_name(f"{CACHE.name}-{name}-{digest}.npz")
    if not cache.is_file():
        featurizer = reader_featurizer()
        arrays = {}
        for number, path in enumerate(paths):
            print(f"\rhands of {name} {path.parent.name}/{path.name} ({number + 1}/{len(paths)})", end="",
                  file=sys.stderr)
            for key, values in compute(featurizer, path).items():
                arrays |= {f"{key}|{field}": value for field, value in values.items()}
        print(file=sys.stderr)
        np.savez_compressed(cache, **arrays)
    result = {}
    with np.load(cache) as data:
        for name_field in data.files:
            key, field = name_field.split("|")
            result.setdefault(tuple(key.split("/")), {})[field] = data[name_field]
    return result


def webcam_clips() -> dict:
    """{(letter, person): tracked frames} of every webcam clip."""
    paths = sorted(CLIPS.glob("*/cam*.mp4"))
    if not paths:
        sys.exit(f"no clips under {CLIPS}")
    return _cached("clips", paths, lambda featurizer, path: {
        f"{path.parent.name}/{path.stem}": tracked(featurizer, clip_frames(path))})


def signer_videos() -> dict:
    """{(letter, signer, phase): tracked frames} of the four signers' videos, each read at the PHASES phases."""
    paths = sorted(SIGNER_VIDEOS.glob("*/signer*.mp4"))
    return _cached("signers", paths, lambda featurizer, path: {
        f"{path.parent.name}/{path.stem}/{phase}": tracked(featurizer, frames)
        for phase, frames in enumerate(signer_video_phases(path))})


# ------------------------------------------------------------------------ the still reader, people left out

FOLDS = 5  # the webcam people in GroupKFold folds: each person's clips read by a head that never saw them


def person_folds(people) -> dict:
    """{person: fold} of the webcam people (scikit-learn's GroupKFold over their names, sorted)."""
    from sklearn.model_selection import GroupKFold

    people = sorted(people)
    folds = GroupKFold(n_splits=min(FOLDS, len(people))).split(people, groups=people)
    return {people[index]: number for number, (_, held) in enumerate(folds) for index in held}


def head_without(splits: dict, left_out, params, spec, classes: tuple):
    """The reader variant's head trained as the train stage trains it, on every feature row but `left_out`'s
    people's (training.training_rows, training.train_head)."""
    from asl_pipeline import features, signers, training

    keep = {name: ~np.isin(signers.signers_of(arrays), list(left_out)) for name, arrays in splits.items()}
    train = {key: value[keep["train"]] for key, value in splits["train"].items()}
    x, y = training.training_rows(train, training.class_indices(train["labels"], classes), spec, params.train)
    val_x = features.head_input(splits["val"], spec)[keep["val"]]
    val_y = training.class_indices(splits["val"]["labels"][keep["val"]], classes)
    head, _ = training.train_head(x, y, val_x, val_y, len(classes), params.train)
    return head


def still_readings(features_dir: Path, clips: dict, videos: dict) -> tuple:
    """(classes, {key: (frames, classes) probabilities}): each frame of the webcam `clips` and the four signers'
    `videos` ({(letter, person, ...): tracked frames}) read by the reader variant's head trained without that
    person: a webcam person by the head of their GroupKFold fold (the Kaggle signer and the four signers always in
    training), one of the four signers by a head without that signer. Cached by the feature files, params.yaml
    and the training code."""
    from asl_pipeline import features, training

    params = load_params(REPO / "params.yaml").variant("reader")
    spec, classes = FeatureSpec.from_params(params), params.split.classes
    files = [features_dir / f"{split}.npz" for split in ("train", "val")]
    everything = {**clips, **videos}
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files) + repr(params).encode()
                            + Path(training.__file__).read_bytes() + repr(sorted(everything)).encode()
                            ).hexdigest()[:16]
    cache = CACHE.with_name(f"{CACHE.name}-still-{digest}.npz")
    if not cache.is_file():
        splits = {path.stem: features.load_features(path, spec) for path in files}
        folds = person_folds({key[1] for key in clips})
        groups = [[person for person, fold in folds.items() if fold == number] for number in sorted(set(folds.values()))]
        groups += [[signer] for signer in sorted({key[1] for key in videos})]
        probabilities = {}
        for number, left_out in enumerate(groups):
            print(f"still reader without {', '.join(left_out)} ({number + 1}/{len(groups)})", file=sys.stderr)
            head = head_without(splits, left_out, params, spec, classes)
            for key, frames in everything.items():
                if key[1] in left_out:
                    probabilities["/".join(key)] = np.asarray(head(frames["vectors"], training=False))
        np.savez_compressed(cache, **probabilities)
    with np.load(cache) as data:
        return classes, {tuple(key.split("/")): data[key] for key in data.files}


def analysis(probabilities: np.ndarray, landmarks: np.ndarray) -> SimpleNamespace:
    """What StreamReader.feed takes from Classifier.analyse, rebuilt from a cached frame."""
    found = not np.isnan(landmarks[0, 0])
    return SimpleNamespace(probabilities=probabilities, hand_found=found,
                           hand=SimpleNamespace(landmarks=landmarks) if found else None)


def spell_frames(frames: dict, probabilities: np.ndarray, classes, letters=motion.MOTION_LETTERS,
                 held_share=speller.HELD_SHARE) -> str:
    """The text `spell` prints for one video's tracked frames read with these still-reader probabilities, the
    motion `letters` and the speller's `held_share` (None: the rule before issue #29)."""
    reader = StreamReader(speller.Speller(held_share=held_share), tracking=False, motion_letters=letters)
    for index, (seconds, landmarks, row) in enumerate(zip(frames["seconds"], frames["landmarks"], probabilities)):
        reader.feed(analysis(row, landmarks), classes, index, float(seconds))
    return reader.speller.text


def word_frames(clips: list, probabilities: list, pause_frames: int = READ_FPS) -> tuple:
    """One video of one person's letter clips in turn, `pause_frames` without a hand between two (so that a double
    letter is two): (tracked frames, probabilities)."""
    seconds, landmarks, rows, start = [], [], [], 0.0
    for number, (frames, row) in enumerate(zip(clips, probabilities)):
        if number:
            seconds.append(start + np.arange(pause_frames) / READ_FPS)
            landmarks.append(np.full((pause_frames, 21, 3), np.nan, np.float32))
            rows.append(np.zeros((pause_frames, row.shape[1]), np.float32))
            start += pause_frames / READ_FPS
        seconds.append(start + frames["seconds"])
        landmarks.append(frames["landmarks"])
        rows.append(row)
        start += frames["seconds"][-1] + 1 / READ_FPS
    return {"seconds": np.concatenate(seconds), "landmarks": np.concatenate(landmarks)}, np.concatenate(rows)


if __name__ == "__main__":  # fill the hands' caches ahead of a benchmark run
    webcam_clips()
    signer_videos()
