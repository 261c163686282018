"""Every speed, memory, scale and personalisation figure of the pipeline, side by side in one run: `make bench`.

This script orchestrates; each family of figures is a module of its own, whose docstring documents the keys it
writes into benchmarks/results.json (its KEYS) and whose ABOUT says how they were measured:
  throughput.py       featurize_*, forward_*, *_images_per_s, *_others_cores, bf16_*
  experiments.py      exp30_*, svm_head_train_s
  serving.py          predict_*, spell_fps, spell_frames, live_page_*
  motion_letters.py   motion_*, tracking_speedup, spell_fps_*_signer_videos, *_right_*, signer_videos, sample_words
                      (--only motion runs this part alone)
  memory.py           rss_* (child processes)
  serving_flood.py    flood_* (a child process; --only flood runs this part alone)
  personalisation.py  personalisation* (--skip-personalisation leaves it out)
  scale.py            scale_* (`dvc repro` in throwaway copies; --skip-scale leaves it out)
  head_growth.py      growth_* (the reader's train and signers stages at 1x, 2x, 4x rows; --only growth alone)
common.py holds what they share (the sample photos, Bench, Meter, the quiet waits, params helpers, the machine).
Throughput figures are measured on the same sample photos in one process, in interleaved rounds; each round
first waits (up to --quiet-wait s) for other processes to go quiet, and the quietest round counts. Prints a
table and writes benchmarks/results.json (plain numbers, plus `machine` and `about`). Never part of `make test`.

Params: the hand-landmark figures use the train params of the params.yaml variant that reads hand landmarks
alone (reader), the backbone figures (exp30, bf16) those of the one that reads the backbone alone (resnet50):
benchmarks/bench_variants.py picks them by what they read, the served variant first.

Run: make bench   (or: python benchmarks/run.py [--skip-scale] [--images 256]; --only flood|motion: one family alone)
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, Bench, log, machine, served_model  # first: it puts this checkout on sys.path

import experiments  # benchmarks/, this script's folder: each family of figures a module
import head_growth
import memory
import motion_letters
import scale
import serving
import serving_flood
import throughput
from asl_pipeline.atomic import write_json

RESULTS = REPO / "benchmarks" / "results.json"
TARGETS = {  # key: (comparison, bound)
    "featurize_vs_forward": (">=", 0.95),
    "exp30_speedup": (">=", 20),
    "rss_growth": ("<=", 1.1),
    "scale_linearity": ("<=", 1.15),
    "growth_train_exponent": ("<=", 1.2),
    "growth_signers_exponent": ("<=", 1.2),
    "predict_ms_per_image": ("<=", 100),
    "live_page_fps": (">=", 10),
    "flood_peak_rss_mib": ("<=", 2048),
    "flood_unanswered": ("<=", 0),
    "flood_40_peak_rss_mib": ("<=", 2048),
    "flood_40_unanswered": ("<=", 0),
    "motion_loso_found": (">=", 6),
    "motion_loso_static_clean": (">=", 96),
    "motion_webcam_invented": ("<=", 5),  # 1 in 100 of the 501 clips of still letters (issue #29)
    "motion_webcam_exact_share": (">=", 0.80),
    "tracking_speedup": (">=", 1.5),
    "personalisation_k1_asl-other-dev": (">=", 0.90),
    "personalisation_k1_asl-webcam-dev": (">=", 0.85),
}


def table(results: dict, about: dict) -> str:
    lines = [f"{'figure':<34} {'value':>12}  target", "-" * 60]
    for key, value in results.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        target = TARGETS.get(key)
        mark = ""
        if target:
            holds = value >= target[1] if target[0] == ">=" else value <= target[1]
            mark = f"{target[0]} {target[1]}  {'ok' if holds else 'MISSED'}"
        lines.append(f"{key:<34} {value:>12.3f}  {mark}")
    if about.get("carried_over"):
        lines.append(f"(carried over from an earlier run: {', '.join(about['carried_over'])})")
    return "\n".join(lines)


# --only NAME: one family of figures measured alone (from the served model `dvc repro` trained here, or None)
# and merged into the results file beside the others, which it leaves as they are.
PARTS = {"flood": serving_flood, "motion": motion_letters, "growth": head_growth}  # measure(model_file) -> figures


def part_figures(name: str, args, model_file) -> dict:
    if name == "growth":  # on the cached features, not a model; --growth-heads: other heads beside the reader's
        return head_growth.measure(heads=args.growth_heads)
    return PARTS[name].measure(model_file)


def only(name: str, args, previous: dict, started) -> None:
    log(f"{name} alone, merged into {args.output}")
    model_file = served_model()
    figures = {key: round(value, 4) if isinstance(value, float) else value
               for key, value in part_figures(name, args, model_file).items()}
    about = {**previous.get("about", {}), f"{name}_measured": started.isoformat(timespec="seconds"),
             f"{name}_command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
             f"{name}_model": None if model_file is None else model_file.relative_to(REPO).as_posix(),
             f"{name}_load_average": os.getloadavg()}
    about |= getattr(PARTS[name], "ABOUT", {})  # motion's figures need no note
    kept = {key: value for key, value in previous.items()
            if not key.startswith(f"{name}_") and key not in ("machine", "about")}
    write_json(args.output, {**kept, **figures, "machine": previous.get("machine", machine()), "about": about})
    print(table(figures, about))
    print(f"written: {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="sample photos for throughput, bf16, predict")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds; the best counts")
    parser.add_argument("--bf16-rounds", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="before each round, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--memory-images", type=int, default=256, help="N of rss_growth (4N photos: 1024)")
    parser.add_argument("--predict-photos", type=int, default=20)
    parser.add_argument("--skip-scale", action="store_true",
                        help="leave out the `dvc repro` scale run (~22 min here); keeps the last scale figures, marked")
    parser.add_argument("--scale-only", action="store_true", help="only the scale run, merged into the results")
    parser.add_argument("--scale-per-class", default="all")
    parser.add_argument("--scale-variants", nargs="+", metavar="NAME",
                        help="the scale run's `dvc repro` trains only these params.yaml variants (default: all of "
                             "them, as `dvc repro` does)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "asl-pipeline-bench"),
                        help="outside the repo: the 4N dataset (built once, reused) and the project copies")
    parser.add_argument("--keep-projects", action="store_true")
    parser.add_argument("--skip-personalisation", action="store_true",
                        help="leave out the personalisation run (~5 min here); keeps the last figures, marked")
    parser.add_argument("--growth-heads", nargs="*", default=[], metavar="HEAD",
                        help="train.head values measured beside the reader's own in the growth family, e.g. svm, "
                             "the head it replaced (long: its 4x signers run takes about an hour here)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=sorted(PARTS),
                        help="one family alone, merged into the results without touching the other figures: flood "
                             "(benchmarks/serving_flood.py, ~5 min here), motion (benchmarks/motion_letters.py: J/Z "
                             "leaving one signer out, spell with and without tracking), growth "
                             "(benchmarks/head_growth.py: the reader's train and signers stages at 1x, 2x, 4x rows)")
    args = parser.parse_args()
    started = datetime.datetime.now().astimezone()
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if args.only:
        return only(args.only, args, previous, started)
    import personalisation  # benchmarks/personalisation.py imports TensorFlow: not for --help or --only

    about = {"date": started.isoformat(timespec="seconds"), "command": "python benchmarks/run.py " +
             " ".join(sys.argv[1:]), "load_average_start": os.getloadavg(),
             "images": args.images, "image_size": args.image_size, "batch_size": args.batch_size,
             **throughput.ABOUT, **serving.ABOUT, **memory.ABOUT, **personalisation.ABOUT, **scale.ABOUT}
    results = {}
    with tempfile.TemporaryDirectory(prefix="asl-bench-") as tmp:
        if not args.scale_only:
            log(f"throughput on {args.images} sample photos")
            bench = Bench(args)
            results |= throughput.measure(bench)
            about["throughput_rounds"] = bench.rounds
            log("exp30: head epochs on cached features")
            results |= experiments.exp30(bench)
            log("bf16 against float32")
            results |= throughput.bf16(bench)
            log("predict latency")
            results |= serving.predict(bench, Path(tmp))
            log("spell frames per second")
            results |= serving.spell_fps(bench, Path(tmp))
            log("live page frames per second")
            results |= serving.live_page_fps(bench, Path(tmp))
            log("J and Z from the motion; spell with and without tracking (long)")
            results |= motion_letters.measure(served_model())
            if getattr(bench, "repo_model", None):
                model_path, featurizers = bench.repo_model
                about["predict_ms_per_image_repo_model"] = (f"{model_path} of this checkout, the served variant "
                                                            f"(serve.model; {featurizers})")
            results |= memory.measure(args)
            log("serving flood: 40 large images to each of the demo's paths from 20 clients, then 40")
            results |= serving_flood.measure(served_model())
            about |= serving_flood.ABOUT
            log("head growth: the reader's train and signers stages at 1x, 2x, 4x rows (long)")
            results |= part_figures("growth", args, None)
            about |= head_growth.ABOUT
    carried = []
    if args.skip_personalisation:
        for key, value in previous.items():
            if key.startswith("personalisation"):
                results[key] = value
                carried.append(key)
    elif not args.scale_only:
        log("personalisation: k photos per letter of each other signer in training (long)")
        results |= personalisation.measure()
    scale_runs = None  # about.scale_runs: per run, the others' cores per stage, the split's counts, the variants
    if args.skip_scale:
        for key, value in previous.items():
            if key.startswith("scale_") and isinstance(value, (int, float)):
                results[key] = value
                carried.append(key)
        about["scale_measured"] = previous.get("about", {}).get("scale_measured")
    else:
        log("scale: dvc repro on N and 4N photos (long)")
        try:
            figures, scale_runs = scale.measure(args)
            results |= figures
            about["scale_measured"] = about["date"]
            about["scale_runs"] = scale_runs
        except (RuntimeError, subprocess.CalledProcessError) as error:  # keep the other figures
            log(f"scale run failed: {error}")
            about["scale_error"] = str(error)[-2000:]
    if args.scale_only:
        keep = {k: v for k, v in previous.items() if not k.startswith("scale_") and k not in ("machine", "about")}
        results = keep | results
        about = {**previous.get("about", {}), "scale_measured": about["date"],
                 "scale_command": about["command"], "scale_runs": scale_runs}
    if carried:
        about["carried_over"] = carried
    about["load_average_end"] = os.getloadavg()
    results = {key: round(value, 4) if isinstance(value, float) else value for key, value in results.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.output, {**results, "machine": machine(), "about": about})
    print(table(results, about))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
