"""How often asl_pipeline.hands finds a hand, how fast, and how closely it agrees with MediaPipe itself.

1. Hand-found rate per folder, on photos outside `nothing` and on `nothing` (a hand there is a false one):
   the palm detector path alone (MediaPipe's pipeline) and with the whole-photo fallback accepted at each
   fallback_min_presence threshold.
2. How right the fallback's landmarks are at each threshold, judged on photos the detector also finds.
3. detect() photos/s (photos decoded beforehand).
4. Agreement with MediaPipe's own HandLandmarker on tests/fixtures/mediapipe_reference.json.

Run: python benchmarks/hand_detection_rates.py [FOLDER ...] [--step 3]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asl_pipeline import hands, images  # noqa: E402

SHARED = REPO.parent / "shared"
BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
REFERENCE = REPO / "tests" / "fixtures" / "mediapipe_reference.json"
DEFAULT_FOLDERS = [SHARED / "data" / "asl-sample" / "asl_alphabet_train", SHARED / "data" / "asl-other-dev"]


def photo_paths(folder: Path, step: int) -> list:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in images.IMAGE_SUFFIXES)[::step]


def outcomes(detector_only, fallback_only, paths) -> np.ndarray:
    """Per photo: (is a `nothing` photo, found by the detector, fallback presence, median distance between
    the fallback's and the detector's landmarks / photo width, NaN when the detector found nothing)."""
    rows = []
    for path in paths:
        rgb = images.load_rgb(path)
        found, fallback = detector_only.detect(rgb), fallback_only.detect(rgb)
        distance = np.nan
        if found is not None:
            gaps = np.linalg.norm(found.landmarks[:, :2] - fallback.landmarks[:, :2], axis=1)
            distance = np.median(gaps) / rgb.shape[1]
        rows.append((path.parent.name == "nothing", found is not None, fallback.presence, distance))
    return np.array(rows, dtype=float).reshape(-1, 4)


def photos_per_second(landmarker, paths) -> float:
    photos = [images.load_rgb(path) for path in paths]
    start = time.perf_counter()
    for rgb in photos:
        landmarker.detect(rgb)
    return len(photos) / (time.perf_counter() - start)


def reference_agreement(landmarker) -> dict:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))["photos"]
    same_found, distances, same_label = [], [], []
    for record in reference:
        rgb = images.load_rgb(SHARED / record["path"])
        hand = landmarker.detect(rgb)
        same_found.append((hand is not None) == record["found"])
        if hand is not None and record["found"]:
            theirs = np.array(record["landmarks"])[:, :2]
            distances.append(np.median(np.linalg.norm(hand.landmarks[:, :2] - theirs, axis=1)) / rgb.shape[1])
            same_label.append(("Right" if hand.handedness >= 0.5 else "Left") == record["handedness"])
    return {"photos": len(reference), "detection agrees": np.mean(same_found), "both found": len(distances),
            "median landmark distance / width": np.median(distances), "handedness agrees": np.mean(same_label)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, default=DEFAULT_FOLDERS,
                        help="photo folders, one sub-folder per class (default: the shared sample and asl-other-dev)")
    parser.add_argument("--step", type=int, default=1, help="use every STEP-th photo (sorted paths)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.9],
                        help="fallback_min_presence values to compare")
    parser.add_argument("--timing-photos", type=int, default=300, help="photos timed for photos/s")
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    args = parser.parse_args()

    detector_only = hands.HandLandmarker(args.bundle, fallback_min_presence=None)
    # A palm score above 1 never passes: this one always answers with the fallback, whatever its presence.
    fallback_only = hands.HandLandmarker(args.bundle, min_detection_confidence=1.01, fallback_min_presence=0.0)
    results = {folder.name: outcomes(detector_only, fallback_only, photo_paths(folder, args.step))
               for folder in args.folders}

    columns = ["detector"] + [f"+fallback {t}" for t in args.thresholds]
    print("Hand found (share of photos):")
    print(f"{'folder':<22} {'photos':<15} {'n':>5}" + "".join(f" {column:>14}" for column in columns))
    for folder, rows in results.items():
        for nothing, label in [(0, "outside nothing"), (1, "nothing (false)")]:
            group = rows[rows[:, 0] == nothing]
            if len(group):
                _, by_detector, presence, _ = group.T
                rates = [by_detector.mean()] + [(by_detector.astype(bool) | (presence >= t)).mean()
                                                for t in args.thresholds]
                print(f"{folder:<22} {label:<15} {len(group):>5}" + "".join(f" {rate:>14.3f}" for rate in rates))

    print("\nFallback precision, on photos the detector found: share of fallback answers whose landmarks are "
          "within 0.05 of the photo width of the detector's (median over the 21), and how many it accepts:")
    for folder, rows in results.items():
        _, _, presence, distance = rows[rows[:, 1] == 1].T
        cells = [f"presence >= {t}: {np.mean(distance[presence >= t] < 0.05):.3f} of {np.sum(presence >= t)}"
                 for t in args.thresholds]
        print(f"  {folder} ({len(distance)} found): " + ", ".join(cells))

    default = hands.HandLandmarker(args.bundle)
    paths = photo_paths(args.folders[0], args.step)
    timing_paths = paths[::max(1, len(paths) // args.timing_photos)][:args.timing_photos]
    print(f"\ndetect() photos/s, {len(timing_paths)} photos spread over {args.folders[0].name}, decoding excluded "
          f"(load average before: {os.getloadavg()[0]:.2f}):")
    for name, landmarker in [("default (with fallback)", default), ("detector only", detector_only)]:
        print(f"  {name}: {photos_per_second(landmarker, timing_paths):.1f}")

    print(f"\nAgreement with MediaPipe ({REFERENCE.name}):")
    for name, landmarker in [("detector only (MediaPipe's pipeline)", detector_only),
                             ("default (with fallback)", default)]:
        agreement = reference_agreement(landmarker)
        print(f"  {name}: " + ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                                       for key, value in agreement.items()))


if __name__ == "__main__":
    main()
