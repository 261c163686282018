"""Who signs in a training photo, and leave-one-signer-out scores: how well a head reads a person it never saw.

The Kaggle frames are one signer; a data.extra_train photo's signer is in its file name (signer2_A_0012.jpg,
hand3_A1.jpg, user4_B2.jpg), else it is the entry it came from (data/my-hand: one person, `my-hand`). For
each signer, a head is trained on the cached features of every other signer, as the train stage trains it
(the same params, copies and weights), and reads that signer's photos: the field's test of signer
independence (scikit-learn's LeaveOneGroupOut, with signers as the groups).
"""
import re
from pathlib import Path

import numpy as np

from asl_pipeline import features, training
from asl_pipeline.config import DATASET_ORIGIN, TrainParams

DATASET_SIGNER = "kaggle"  # the one person of the Kaggle frames (data.source)
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


def leave_one_signer_out(splits: dict, classes, spec, params: TrainParams) -> dict:
    """{signer: {"accuracy", "n"}} for every signer of the train split, and their unweighted "mean".

    splits: {"train": ..., "val": ..., "test": ...} feature files (features.load_features). A signer's
    photos are left out of every split the head learns from (train rows and their copies, val for early
    stopping) and all of that signer's original photos are read. A fold trains on the classes its signers
    show (the four signers have no del, nothing or space): a photo of a class missing there counts as wrong.
    With one signer there is no one to leave out: no scores, mean None.
    """
    signers = {name: signers_of(arrays) for name, arrays in splits.items()}
    labels = {name: training.class_indices(arrays["labels"], classes) for name, arrays in splits.items()}
    results = {}
    names = [str(name) for name in dict.fromkeys(signers["train"])]  # first-seen order: the dataset, then each entry's
    for held_out in names if len(names) > 1 else []:
        learn = signers["train"] != held_out
        known = np.unique(labels["train"][learn])
        remap = np.full(len(classes), -1)
        remap[known] = np.arange(len(known))
        x, y = training.training_rows(_rows(splits["train"], learn), remap[labels["train"][learn]], spec, params)
        val_y = remap[labels["val"]]
        val_rows = (signers["val"] != held_out) & (val_y >= 0)
        head, _ = training.train_head(x, y, features.head_input(splits["val"], spec)[val_rows], val_y[val_rows],
                                      len(known), params)
        read = {name: (signers[name] == held_out) & (arrays["views"] == 0) for name, arrays in splits.items()}
        read_x = np.concatenate([features.head_input(arrays, spec)[read[name]] for name, arrays in splits.items()])
        read_y = np.concatenate([labels[name][read[name]] for name in splits])
        # A direct call, not predict(): predict traces a new function for every head trained here.
        predicted = known[np.asarray(head(read_x, training=False)).argmax(axis=1)]
        results[held_out] = {"accuracy": round(float(np.mean(predicted == read_y)), 4), "n": int(len(read_y))}
    mean = round(float(np.mean([row["accuracy"] for row in results.values()])), 4) if results else None
    return {"signers": results, "mean": mean}
