"""benchmarks/run.py's own logic (the measurements themselves run in `make bench`, never here)."""
import hashlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run as bench  # noqa: E402

from asl_pipeline import dataset  # noqa: E402


def test_4n_copies_are_new_bytes_and_new_frames_of_the_same_photo(tmp_path):
    source = tmp_path / "source"
    (source / "asl_alphabet_train" / "A").mkdir(parents=True)
    (source / "asl_alphabet_test").mkdir()
    rng = np.random.default_rng(0)
    for name in ("A7.jpg", "A2999.jpg"):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).save(source / "asl_alphabet_train" / "A" / name,
                                                                           quality=90)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source / "asl_alphabet_test" / "A_test.jpg")

    assert bench.build_4n(source, tmp_path / "big") == 8
    photos = sorted((tmp_path / "big" / "asl_alphabet_train" / "A").glob("*.jpg"))
    assert len(photos) == 8
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}) == 8  # de-duplication keeps all
    frames = sorted(dataset.Item(p.name, "A", "", None).frame for p in photos)
    assert frames == sorted([7, 2999] + [f + k * bench.FRAME_OFFSET for f in (7, 2999) for k in (1, 2, 3)])
    original = np.asarray(Image.open(source / "asl_alphabet_train" / "A" / "A7.jpg"), dtype=float)
    shifted = np.asarray(Image.open(tmp_path / "big" / "asl_alphabet_train" / "A" / f"A{7 + bench.FRAME_OFFSET}.jpg"),
                         dtype=float)
    assert shifted.shape == original.shape
    assert np.abs(shifted[:, 1:] - original[:, :-1]).mean() < np.abs(shifted - original).mean()  # one pixel right
    assert (tmp_path / "big" / "asl_alphabet_test" / "A_test.jpg").is_file()
    assert bench.build_4n(source, tmp_path / "big") == 8  # reused, not rebuilt


def test_the_table_marks_a_missed_target():
    text = bench.table({"featurize_vs_forward": 0.9, "rss_growth": 1.0, "hand_landmarks_images_per_s": 40.0}, {})
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert lines["featurize_vs_forward"].endswith("MISSED")
    assert lines["rss_growth"].endswith("ok")
    assert lines["hand_landmarks_images_per_s"].split()[1:] == ["40.000"]  # no target, no mark
