"""Scale: `dvc repro` split..evaluate on the sample (N photos) and on a 4N copy of it, each in a throwaway copy
of the project, every params.yaml variant (--scale-variants: some). `run.py --skip-scale` leaves it out.

Keys:
  scale_linearity         wall time per image of `dvc repro` split..evaluate on 4N images over N
                          (scale_n_images, scale_4n_images: the photos; scale_n_seconds, scale_4n_seconds:
                          the wall times)
  scale_<stage>_n_s, scale_<stage>_4n_s, scale_<stage>_linearity   the same per stage of SCALE_STAGES
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BUNDLE, REPO, SAMPLE, TRAIN_DIR, Meter, log

SCALE_STAGES = ("split", "featurize", "train", "evaluate")
SCALE_COPIES = 3  # the 4N dataset: every sample photo and 3 shifted re-encodings of it
FRAME_OFFSET = 3000  # Kaggle's frames are numbered 1..3000 per class: copy k of frame f is frame f + k * 3000
KEYS = ("scale_linearity", "scale_n_images", "scale_4n_images", "scale_n_seconds", "scale_4n_seconds",
        *(f"scale_{stage}_{figure}" for stage in SCALE_STAGES for figure in ("n_s", "4n_s", "linearity")))
ABOUT = {"scale_linearity": "dvc repro -s split, featurize, train, evaluate (each stage of every variant "
                            "in params.yaml, or of --scale-variants: about.scale_runs.*.variants; split.per_class "
                            "--scale-per-class, no extra sets) on 4N photos over N, per photo"}


def build_4n(source: Path, target: Path, copies: int = SCALE_COPIES) -> int:
    """The Kaggle-layout dataset `source` with `copies` more of each training photo, copy k shifted right by k
    pixels (edge column repeated) and re-encoded with the original's quantization tables and subsampling:
    other bytes, so de-duplication keeps them, at the original's size and quality; copy k of frame f is
    frame f + k * FRAME_OFFSET. Built once (reused while complete); returns the number of training photos."""
    from PIL import Image, JpegImagePlugin
    import numpy as np

    originals = sorted((source / "asl_alphabet_train").rglob("*.jpg"))
    expected = len(originals) * (copies + 1)
    done = target / ".complete"
    if done.is_file() and done.read_text() == f"{source} {expected}":
        return expected
    if target.exists():
        shutil.rmtree(target)
    log(f"scale: building the 4N dataset ({expected} photos) in {target}")
    if (source / "asl_alphabet_test").is_dir():
        shutil.copytree(source / "asl_alphabet_test", target / "asl_alphabet_test")
    for path in originals:
        out = target / "asl_alphabet_train" / path.parent.name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / path.name)
        stem = path.stem.rstrip("0123456789")
        frame = int(path.stem[len(stem):]) if stem != path.stem else None
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
            tables, sampling = image.quantization, JpegImagePlugin.get_sampling(image)
        for k in range(1, copies + 1):
            shifted = np.concatenate([np.repeat(rgb[:, :1], k, axis=1), rgb[:, :-k]], axis=1)
            name = f"{stem}{frame + k * FRAME_OFFSET}" if frame is not None else f"{path.stem}-copy{k}x"
            Image.fromarray(shifted).save(out / f"{name}.jpg", qtables=tables, subsampling=sampling)
    done.write_text(f"{source} {expected}")
    return expected


def scale_variants(params: dict, names=None) -> dict:
    """params.yaml (as read by yaml) with only the variants `names` (None: all of them, as `dvc repro` runs
    them); serve.model stays unless it is left out, then it is the first kept. SystemExit on an unknown name."""
    if not names:
        return params
    unknown = [name for name in names if name not in params["variants"]]
    if unknown:
        raise SystemExit(f"--scale-variants: no variant(s) {unknown} in params.yaml (it has "
                         f"{list(params['variants'])})")
    variants = {name: overrides for name, overrides in params["variants"].items() if name in names}
    served = params["serve"]["model"]
    return {**params, "variants": variants, "serve": {**params["serve"],
                                                      "model": served if served in variants else next(iter(variants))}}


def project_copy(root: Path, data_dir: Path, per_class: str, variants=None) -> Path:
    """The working tree as git lists it (tracked and untracked, not ignored) in `root`, a fresh git repo with
    params set for the measurement; `variants`: only these params.yaml variants (default: all)."""
    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import copy_working_tree  # the DVC tests' throwaway projects are made the same way

    copy_working_tree(root, skip=("metrics/", "plots/", "dvc.lock", "benchmarks/"))
    params = scale_variants(yaml.safe_load((root / "params.yaml").read_text()), variants)
    params["data"].update(source="local", local_dir=str(data_dir))
    params["hands"].update(source="local", local_file=str(BUNDLE))
    params["split"]["per_class"] = "all" if per_class == "all" else int(per_class)
    params["evaluate"]["extra_sets"] = []
    params["data"]["extra_train"] = {}  # the dataset alone, N or 4N photos of it
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    return root


def repro_seconds(root: Path) -> tuple:
    """(seconds, others' cores) per stage: download, extra_kaggle and hand_model untimed, then each of
    SCALE_STAGES alone (`dvc repro -s`), timed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*stages):
        result = subprocess.run(["dvc", "repro", *stages], cwd=root, env=env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"dvc repro {' '.join(stages)} failed in {root}:\n"
                               f"{result.stdout[-3000:]}{result.stderr[-3000:]}")

    dvc("download", "extra_kaggle", "hand_model")
    seconds, others = {}, {}
    for stage in SCALE_STAGES:
        with Meter() as meter:
            dvc("-s", stage)
        seconds[stage], others[stage] = meter.wall, round(meter.foreign or 0.0, 2)
        log(f"scale: {root.name} {stage} {seconds[stage]:.1f} s (others {others[stage]:.2f} cores)")
    return seconds, others


def measure(args) -> tuple:
    """(figures, runs): the figures of KEYS, and per run (n, 4n) the cores others kept busy per stage, the
    split's counts and the variants trained (results.json's about.scale_runs)."""
    import yaml

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    n_photos = len(list(TRAIN_DIR.rglob("*.jpg")))
    big = work / "asl-sample-4x"
    big_photos = build_4n(SAMPLE, big)
    runs = {}
    for label, data_dir, photos in (("n", SAMPLE, n_photos), ("4n", big, big_photos)):
        root = Path(tempfile.mkdtemp(prefix=f"bench-project-{label}-", dir=work))
        try:
            log(f"scale: dvc repro on {photos} photos in {root}")
            project_copy(root, data_dir, args.scale_per_class, args.scale_variants)
            seconds, others = repro_seconds(root)
            counts = json.loads((root / "metrics" / "split.json").read_text())["counts"]
            variants = list(yaml.safe_load((root / "params.yaml").read_text())["variants"])
            runs[label] = {"photos": photos, "seconds": seconds, "others": others, "counts": counts,
                           "variants": variants}
        finally:
            if not args.keep_projects:
                shutil.rmtree(root, ignore_errors=True)
    n, big_run = runs["n"], runs["4n"]

    def per_image(run, stages=SCALE_STAGES):
        return sum(run["seconds"][s] for s in stages) / run["photos"]

    result = {"scale_linearity": per_image(big_run) / per_image(n), "scale_n_images": n["photos"],
              "scale_4n_images": big_run["photos"], "scale_n_seconds": sum(n["seconds"].values()),
              "scale_4n_seconds": sum(big_run["seconds"].values())}
    for stage in SCALE_STAGES:
        result[f"scale_{stage}_n_s"] = n["seconds"][stage]
        result[f"scale_{stage}_4n_s"] = big_run["seconds"][stage]
        result[f"scale_{stage}_linearity"] = per_image(big_run, [stage]) / per_image(n, [stage])
    details = {label: {"others_cores": run["others"], "counts": run["counts"], "variants": run["variants"]}
               for label, run in runs.items()}
    return result, details
