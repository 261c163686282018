"""How much k photos per letter of a new signer lift that signer's other photos: "teach it your hand", measured.

For each signer of the other-people sets (file names carry the signer: hand3_A1.jpg, user4_B2.jpg), k photos
per letter of that signer join the training rows, as data.extra_train photos do (each counted
train.extra_weight times, with reshaped copies like every training hand), the head is trained as the train stage trains it, and it reads
that signer's other photos. k = 0 is the model without them. Draws of the k photos are repeated with other
seeds and averaged. Only `make bench` runs this: it trains on the dev sets' photos by design, so no model of
the pipeline ever does.
"""
import dataclasses

import numpy as np

from asl_pipeline import signers, training
from asl_pipeline.config import TrainParams

TAUGHT_ORIGIN = "taught"  # a taught photo's origin in training: like any origin but the dataset's, it counts extra_weight times


def signer_of(path) -> str:
    """'hand3' of '.../A/hand3_A1.jpg'; a file name without a signer prefix is an error naming it."""
    signer = signers.signer_in_name(path)
    if signer is None:
        raise ValueError(f"{path}: no signer in the file name (expected e.g. hand3_A1.jpg)")
    return signer


def teach_draw(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k photos per label, at most all but one of a label's photos, so that every letter keeps a
    photo to score."""
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(k, len(members) - 1)
        chosen += list(rng.choice(members, take, replace=False)) if take > 0 else []
    return np.array(sorted(chosen), dtype=int)


@dataclasses.dataclass(frozen=True)
class SignerScore:
    signer: object  # the key of signer_sets
    k: int
    accuracy: float  # mean over draws
    spread: float  # standard deviation over draws
    scored: int  # photos scored per draw


def personalisation(train_arrays: dict, y_train: np.ndarray, signer_sets: dict, spec, params: TrainParams,
                    num_classes: int, ks=(0, 1, 2), draws: int = 3) -> list[SignerScore]:
    """SignerScores of every signer for every k.

    train_arrays: the train feature file ("hand", "origins"); signer_sets: {signer: (hand vectors, class
    indices)} of that signer's photos.
    """
    scores = []
    for signer, (vectors, labels) in signer_sets.items():
        for k in ks:
            accuracies, scored = [], 0
            for draw in range(draws if k else 1):
                taught = teach_draw(labels, k, np.random.default_rng([draw, k]))
                rest = np.setdiff1d(np.arange(len(labels)), taught)
                arrays = {"hand": np.concatenate([train_arrays["hand"], vectors[taught]]),
                          # data.extra_train photos already among the train features keep their origin
                          "origins": np.concatenate([train_arrays["origins"], np.full(len(taught), TAUGHT_ORIGIN)])}
                x, y = training.training_rows(arrays, np.concatenate([y_train, labels[taught]]), spec,
                                                       params)
                head, _ = training.train_head(x, y, x[:0], y[:0], num_classes, params)
                # A direct call, not predict(): predict traces a new function for every head trained here.
                predicted = np.asarray(head(vectors[rest], training=False)).argmax(axis=1)
                accuracies.append(float(np.mean(predicted == labels[rest])))
                scored = len(rest)
            scores.append(SignerScore(signer, k, float(np.mean(accuracies)), float(np.std(accuracies)), scored))
    return scores
