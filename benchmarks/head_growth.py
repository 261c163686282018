"""Head growth: how the reader's train and signers stages grow with their training rows, and whether reading a
photo slows as they grow. On the reader's cached features (data/features/<reader>/, from `dvc repro
featurize`), the train split is grown to 2x and 4x its rows: each extra copy of a data.extra_train signer's
rows is a new signer (cam07 -> cam0701), each extra copy of a Kaggle frame another frame of the Kaggle signer,
every copy's features jittered by 1% of their spread so that no two rows are equal. The stages' own work is
timed (training.training_rows + train_head; signers.grouped_signer_scores), not their I/O.

Keys:
  growth_rows_1x, growth_rows_2x, growth_rows_4x   the rows the head learns from (copies and weights included)
  growth_train_s_1x, growth_train_s_2x, growth_train_s_4x   seconds to fit the head on them
  growth_train_exponent    the slope of log(seconds) on log(rows) over 1x, 2x, 4x: 1 is linear
  growth_signers_s_1x, growth_signers_s_2x, growth_signers_s_4x, growth_signers_exponent   the same for the
                           signer-grouped scores (evaluate.signer_folds heads)
  growth_predict_ms_1x, growth_predict_ms_4x   the head trained at 1x / 4x, one photo's landmarks at a time
                           (median of 200 calls): the part of predict that could grow with the rows
  growth_head              the head measured (the reader's train.head); --growth-heads adds others, their keys
                           prefixed growth_<head>_ (e.g. growth_svm_train_exponent)

Run alone: python benchmarks/run.py --only growth
"""
import dataclasses
import time

import numpy as np

from common import REPO, log, quiet, repo_params  # first: it puts this checkout on sys.path
from bench_variants import LANDMARKS, variant_reading

SCALES = (1, 2, 4)
JITTER = 0.01  # of each feature column's spread
PREDICT_CALLS = 200
KEYS = ("growth_head", *(f"growth_rows_{k}x" for k in SCALES),
        *(f"growth_{stage}_s_{k}x" for stage in ("train", "signers") for k in SCALES),
        "growth_train_exponent", "growth_signers_exponent", "growth_predict_ms_1x", "growth_predict_ms_4x")
ABOUT = {"growth_train_exponent": "the reader's head on its cached train split grown 1x, 2x, 4x (new signers for "
                                  "the extra signers' copies, more Kaggle frames for Kaggle's), slope of "
                                  "log(seconds) on log(rows)"}


def grown(arrays: dict, copies: int, hand_key: str, seed: int = 0) -> dict:
    """A feature file with `copies` jittered copies of every row after the originals; copy k of signer cam07's
    rows is signer cam07<k:02d> (a new person), a Kaggle frame's copy another frame of the Kaggle signer."""
    rng = np.random.default_rng(seed)
    spread = arrays[hand_key].std(axis=0)
    parts = [arrays]
    for k in range(1, copies + 1):
        copy = dict(arrays)
        copy[hand_key] = (arrays[hand_key] + rng.normal(0, 1, arrays[hand_key].shape) * JITTER * spread
                          ).astype(arrays[hand_key].dtype)
        copy["paths"] = np.array([as_new_signer(str(path), k) for path in arrays["paths"]])
        parts.append(copy)
    return {key: np.concatenate([part[key] for part in parts]) for key in arrays}


def as_new_signer(path: str, k: int) -> str:
    """The path of copy k of a row: .../cam07_A_0033.jpg -> .../cam0701_A_0033.jpg; a Kaggle frame's unchanged."""
    from asl_pipeline.signers import signer_in_name  # here: run.py starts without TensorFlow

    name = path.rsplit("/", 1)[-1]
    signer = signer_in_name(path)
    return path if signer is None else path[:len(path) - len(name)] + f"{signer}{k:02d}" + name[len(signer):]


def exponent(rows, seconds) -> float:
    """The slope of log(seconds) on log(rows): the power of the rows the cost grows with."""
    return float(np.polyfit(np.log(rows), np.log(seconds), 1)[0])


def predict_ms(head, rows: np.ndarray) -> float:
    """Median milliseconds of the head on one row at a time (the served page reads one photo at a time)."""
    times = []
    for row in rows[:PREDICT_CALLS]:
        start = time.perf_counter()
        head(row[None], training=False)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure_head(head_name: str | None = None) -> dict:
    from asl_pipeline import features, signers, training
    from asl_pipeline.atomic import read_json
    from asl_pipeline.config import SPLITS, project_paths
    from asl_pipeline.featurizers import FeatureSpec

    project = repo_params()
    name = variant_reading(project, LANDMARKS, "the head growth figures")
    params = project.variant(name)
    train_params = params.train if head_name is None else dataclasses.replace(params.train, head=head_name)
    variant = project_paths(REPO).variant(name)
    spec = FeatureSpec.from_dict(read_json(variant.features / "meta.json", f"featurize@{name}")["spec"])
    splits = {split: features.load_features(variant.features_file(split), spec) for split in SPLITS}
    classes = params.split.classes
    figures = {"growth_head": train_params.head}
    with quiet():  # once untimed: the first fit also pays for imports and TensorFlow's first traces
        y = training.class_indices(splits["train"]["labels"], classes)
        x, rows_y = training.training_rows(splits["train"], y, spec, train_params)
        training.train_head(x, rows_y, x[:0], rows_y[:0], len(classes), train_params)
    for scale in SCALES:
        scaled = dict(splits, train=grown(splits["train"], scale - 1, "hand"))
        y = training.class_indices(scaled["train"]["labels"], classes)
        training.seed_everything(train_params.seed)
        log(f"growth: {train_params.head} head at {scale}x")
        with quiet():
            start = time.perf_counter()
            x, rows_y = training.training_rows(scaled["train"], y, spec, train_params)
            head, _ = training.train_head(x, rows_y, features.head_input(splits["val"], spec),
                                          training.class_indices(splits["val"]["labels"], classes), len(classes),
                                          train_params)
            figures[f"growth_train_s_{scale}x"] = time.perf_counter() - start
            figures[f"growth_rows_{scale}x"] = len(x)
            start = time.perf_counter()
            signers.grouped_signer_scores(scaled, classes, spec, train_params, params.evaluate.signer_folds)
            figures[f"growth_signers_s_{scale}x"] = time.perf_counter() - start
        if scale in (SCALES[0], SCALES[-1]):
            figures[f"growth_predict_ms_{scale}x"] = predict_ms(head, features.head_input(splits["test"], spec))
    rows = [figures[f"growth_rows_{k}x"] for k in SCALES]
    for stage in ("train", "signers"):
        figures[f"growth_{stage}_exponent"] = exponent(rows, [figures[f"growth_{stage}_s_{k}x"] for k in SCALES])
    return figures


def measure(model_file=None, heads=()) -> dict:
    """The reader's own head, then each of `heads` (another train.head), its keys prefixed growth_<head>_.
    model_file: unused (run.py's --only passes the served model to every family)."""
    figures = measure_head()
    for head_name in heads:
        figures |= {key.replace("growth_", f"growth_{head_name}_", 1): value
                    for key, value in measure_head(head_name).items() if key != "growth_head"}
    return figures
