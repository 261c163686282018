"""Who signs in a training photo, and signer-grouped scores: how well a head reads a person it never saw.

The Kaggle frames are one signer; a data.extra_train photo's signer is in its file name (signer2_A_0012.jpg,
cam07_A_0033.jpg, hand3_A1.jpg), else it is the entry it came from (data/my-hand: one person, `my-hand`).
The signers are dealt into `folds` groups (scikit-learn's GroupKFold: no signer in two folds, folds of
similar size in rows); for each fold, a head is trained on the cached features of every other fold's
signers, as the train stage trains it (the same params, copies and weights), and reads that fold's photos.

GroupKFold, not LeaveOneGroupOut: every signer is still read by a head that never saw them, but the cost is
`folds` fits, however many signers join (26 now: leave-one-out would be 26 fits, each on nearly all rows).
"""
import re
from pathlib import Path

import numpy as np

from asl_pipeline import features, training
from asl_pipeline.config import DATASET_ORIGIN, TrainParams

DATASET_SIGNER = "kaggle"  # the one person of the Kaggle frames (data.source)
WORST = 3  # the signers read worst, named in the details and the stage's output
_SIGNER_IN_NAME = re.compile(r"^([A-Za-z]+\d+)_")


def signer_in_name(path) -> str | None:
    """'signer2' of '.../A/signer2_A_0012.jpg'; None when the file name carries no signer."""
    match = _SIGNER_IN_NAME.match(Path(str(path).replace("\\", "/")).name)
    return match.group(1) if match else None


def signer_of(path, origin: str) -> str:
    """The signer of a training photo from its manifest path and origin."""
    if origin == DATASET_ORIGIN:
        return DATASET_SIGNER
    return signer_in_name(path) or origin


def signers_of(arrays: dict) -> np.ndarray:
    """The signer of every row of a feature file."""
    return np.array([signer_of(str(path), str(origin)) for path, origin in zip(arrays["paths"], arrays["origins"])])


def _rows(arrays: dict, keep: np.ndarray) -> dict:
    return {key: value[keep] for key, value in arrays.items()}


def signer_folds(train_signers: np.ndarray, folds: int) -> list:
    """The held-out signers of each fold: GroupKFold over the train split's rows grouped by signer, with as
    many folds as asked for or as there are signers (each fold holds at least one). Deterministic."""
    from sklearn.model_selection import GroupKFold

    names = list(dict.fromkeys(train_signers.tolist()))  # first-seen order: the dataset, then each entry's
    if len(names) < 2:
        return []
    splitter = GroupKFold(n_splits=min(folds, len(names)))
    held_out = [set(train_signers[held].tolist()) for _, held in splitter.split(train_signers, groups=train_signers)]
    return [[name for name in names if name in fold] for fold in held_out]


def grouped_signer_scores(splits: dict, classes, spec, params: TrainParams, folds: int) -> dict:
    """{"signers": {signer: {"accuracy", "n", "fold"}}, "mean", "standard_error", "worst", "folds"}.

    splits: {"train": ..., "val": ..., "test": ...} feature files (features.load_features). A fold's signers
    are left out of every split the head learns from (train rows and their copies, val for early stopping),
    and all of their original photos are read. A fold trains on the classes its other signers show (the
    signers have no del, nothing or space): a photo of a class missing there counts as wrong.
    The mean is over signers, unweighted; its standard error (spread across signers / sqrt(signers)) is the
    noise to read a change against. With one signer there is no one to leave out: no scores, mean None.
    """
    signers = {name: signers_of(arrays) for name, arrays in splits.items()}
    labels = {name: training.class_indices(arrays["labels"], classes) for name, arrays in splits.items()}
    results = {}
    for fold, held_out in enumerate(signer_folds(signers["train"], folds)):
        learn = ~np.isin(signers["train"], held_out)
        known = np.unique(labels["train"][learn])
        remap = np.full(len(classes), -1)
        remap[known] = np.arange(len(known))
        x, y = training.training_rows(_rows(splits["train"], learn), remap[labels["train"][learn]], spec, params)
        val_y = remap[labels["val"]]
        val_rows = ~np.isin(signers["val"], held_out) & (val_y >= 0)
        head, _ = training.train_head(x, y, features.head_input(splits["val"], spec)[val_rows], val_y[val_rows],
                                      len(known), params)
        read = {name: np.isin(signers[name], held_out) & (arrays["views"] == 0) for name, arrays in splits.items()}
        read_x = np.concatenate([features.head_input(arrays, spec)[read[name]] for name, arrays in splits.items()])
        read_y = np.concatenate([labels[name][read[name]] for name in splits])
        read_signers = np.concatenate([signers[name][read[name]] for name in splits])
        # A direct call, not predict(): predict traces a new function for every head trained here.
        right = known[np.asarray(head(read_x, training=False)).argmax(axis=1)] == read_y
        for signer in held_out:
            mine = read_signers == signer
            results[signer] = {"accuracy": round(float(np.mean(right[mine])), 4), "n": int(mine.sum()), "fold": fold}
    results = {name: results[name] for name in dict.fromkeys(signers["train"].tolist()) if name in results}
    accuracies = np.array([row["accuracy"] for row in results.values()])
    if not len(accuracies):
        return {"signers": {}, "mean": None, "standard_error": None, "worst": [], "folds": 0}
    return {"signers": results, "mean": round(float(accuracies.mean()), 4),
            "standard_error": round(float(accuracies.std(ddof=1) / np.sqrt(len(accuracies))), 4),
            "worst": sorted(results, key=lambda name: results[name]["accuracy"])[:WORST],
            "folds": len({row["fold"] for row in results.values()})}
