"""Signer-grouped scores: who signs a photo, folds that never put a signer on both sides, and scores that
follow what the other signers teach."""
import dataclasses

import numpy as np
import pytest

from asl_pipeline import signers, training
from asl_pipeline.config import DATASET_ORIGIN
from helpers import make_spec, train_params

CLASSES = ("A", "B", "nothing")
SPEC = make_spec(("hand_landmarks",))
MARK = 0  # the feature column that says, in these synthetic rows, which signer a row came from


@pytest.mark.parametrize("path, origin, signer", [
    ("data/raw/asl_alphabet_train/A/A12.jpg", DATASET_ORIGIN, signers.DATASET_SIGNER),
    ("data/extra/signers/A/signer2_A_0012.jpg", "signers", "signer2"),
    ("data/extra/dev/B/hand3_B1.jpg", "dev", "hand3"),
    ("data/extra/my-hand/A/teach_20261202T101010Z_ab12cd34.jpg", "my-hand", "my-hand"),
    ("data/extra/kaggle/0/A/IMG_0001.jpg", "kaggle:owner/name", "kaggle:owner/name"),
])
def test_a_photo_s_signer_comes_from_its_name_else_its_entry(path, origin, signer):
    assert signers.signer_of(path, origin) == signer


def synthetic_split(people: dict, rng, views: int = 0, marked: bool = True) -> dict:
    """Feature-file arrays: for each signer, `n` rows per class; a row's class is in its hand features (one
    column per class, set by `flip` the other way round), and when `marked` its signer id in column MARK."""
    spec = SPEC
    rows = {"hand": [], "labels": [], "paths": [], "views": [], "origins": []}
    for index, (signer, (origin, n, flip)) in enumerate(people.items()):
        for class_index, label in enumerate(CLASSES):
            for frame in range(n):
                vector = np.zeros(spec.hand_dim, np.float32)  # constant columns: no noise to swamp the class
                vector[1:1 + len(CLASSES)] = rng.normal(0, 0.1, len(CLASSES))
                vector[MARK] = index + 1 if marked else 0
                vector[1 + (len(CLASSES) - 1 - class_index if flip else class_index)] += 3
                vector[-1] = 1.0  # a found hand
                name = f"{signer}_{label}_{frame}.jpg" if origin != DATASET_ORIGIN else f"{label}{frame}.jpg"
                for view in range(views + 1):
                    rows["hand"].append(vector)
                    rows["labels"].append(label)
                    rows["paths"].append(f"data/x/{label}/{name}")
                    rows["views"].append(view)
                    rows["origins"].append(origin)
    return {key: np.array(value) for key, value in rows.items()}


PEOPLE = {"kaggle": (DATASET_ORIGIN, 6, False), "signer1": ("signers", 4, False), "signer2": ("signers", 4, False),
          "signer3": ("signers", 4, True)}  # signer3 signs every class as another one


def splits_of(people, rng, marked=True):
    dataset_only = {name: row for name, row in people.items() if row[0] == DATASET_ORIGIN}
    return {"train": synthetic_split(people, rng, 1, marked), "val": synthetic_split(dataset_only, rng, 0, marked),
            "test": synthetic_split(dataset_only, rng, 0, marked)}


def recording_heads(monkeypatch) -> list:
    """(signers trained on, signers validated on) of every head fitted, from the MARK column."""
    seen = []
    real = training.train_head

    def recording(train_x, train_y, val_x, val_y, *args, **kwargs):
        seen.append((set(train_x[:, MARK].astype(int)), set(val_x[:, MARK].astype(int))))
        return real(train_x, train_y, val_x, val_y, *args, **kwargs)

    monkeypatch.setattr(training, "train_head", recording)
    return seen


def test_with_a_fold_per_signer_no_head_trains_on_the_signer_it_scores(monkeypatch):
    splits = splits_of(PEOPLE, np.random.default_rng(0))
    seen = recording_heads(monkeypatch)
    scores = signers.grouped_signer_scores(splits, CLASSES, SPEC, train_params(head="svm"), folds=10)
    assert list(scores["signers"]) == list(PEOPLE) and scores["folds"] == len(PEOPLE) == len(seen)
    for fold, (trained_on, validated_on) in enumerate(seen):
        held_out = {mark for mark, name in enumerate(PEOPLE, start=1) if scores["signers"][name]["fold"] == fold}
        assert len(held_out) == 1 and not held_out & (trained_on | validated_on)
        assert trained_on == set(range(1, len(PEOPLE) + 1)) - held_out
    # Every original photo of the left-out signer is read once: train, val and test, copies (views) not.
    assert scores["signers"]["kaggle"]["n"] == 3 * 6 * 3
    assert scores["signers"]["signer1"]["n"] == 3 * 4


MANY = {"kaggle": (DATASET_ORIGIN, 6, False), **{f"cam{i:02d}": ("webcams", 2 + i % 3, False) for i in range(1, 8)}}


def test_grouped_folds_never_put_a_signer_on_both_sides(monkeypatch):
    """Eight signers in three folds: each fold's signers are in no head that reads them, and every other
    signer is in it; each signer in exactly one fold."""
    splits = splits_of(MANY, np.random.default_rng(4))
    seen = recording_heads(monkeypatch)
    scores = signers.grouped_signer_scores(splits, CLASSES, SPEC, train_params(head="kernel"), folds=3)
    assert scores["folds"] == len(seen) == 3
    assert set(scores["signers"]) == set(MANY)
    marks = {name: mark for mark, name in enumerate(MANY, start=1)}
    for fold, (trained_on, validated_on) in enumerate(seen):
        held_out = {marks[name] for name, row in scores["signers"].items() if row["fold"] == fold}
        assert held_out and not held_out & (trained_on | validated_on)
        assert trained_on == set(marks.values()) - held_out


def test_signer_folds_deal_each_signer_to_one_fold():
    names = np.array(["kaggle"] * 50 + [f"cam{i}" for i in range(9) for _ in range(5)])
    folds = signers.signer_folds(names, 4)
    assert len(folds) == 4 and all(folds)
    assert sorted(name for fold in folds for name in fold) == sorted(set(names.tolist()))
    assert sorted(map(len, signers.signer_folds(names, 50))) == [1] * 10  # never more folds than signers
    assert signers.signer_folds(np.array(["kaggle"] * 5), 4) == []


def test_scores_follow_what_the_others_teach():
    result = signers.grouped_signer_scores(splits_of(PEOPLE, np.random.default_rng(1), marked=False), CLASSES, SPEC,
                                           train_params(head="svm"), folds=len(PEOPLE))
    scores = result["signers"]
    assert scores["signer1"]["accuracy"] == scores["signer2"]["accuracy"] == 1.0  # signs as the others do
    assert scores["signer3"]["accuracy"] < 0.5  # signs `A` as the others sign `nothing`
    accuracies = [row["accuracy"] for row in scores.values()]
    assert result["mean"] == pytest.approx(np.mean(accuracies), abs=1e-4)
    assert result["standard_error"] == pytest.approx(np.std(accuracies, ddof=1) / np.sqrt(len(accuracies)), abs=1e-4)
    assert result["worst"][0] == "signer3"


def test_a_class_no_other_signer_shows_counts_as_wrong_for_the_mlp_head_too():
    people = {"kaggle": (DATASET_ORIGIN, 6, False), "signer1": ("signers", 4, False)}
    splits = splits_of(people, np.random.default_rng(2))
    no_nothing = splits["train"]["labels"] != "nothing"
    others = splits["train"]["origins"] != DATASET_ORIGIN
    splits["train"] = {key: value[~(others & ~no_nothing)] for key, value in splits["train"].items()}
    params = dataclasses.replace(train_params(head="mlp"), epochs=30, learning_rate=0.01)
    kaggle = signers.grouped_signer_scores(splits, CLASSES, SPEC, params, folds=5)["signers"]["kaggle"]
    assert kaggle["accuracy"] <= 2 / 3 + 1e-9  # its `nothing` photos can only be read as A or B


def test_one_signer_has_no_one_to_leave_out():
    people = {"kaggle": (DATASET_ORIGIN, 6, False)}
    assert signers.grouped_signer_scores(splits_of(people, np.random.default_rng(3)), CLASSES, SPEC,
                                         train_params(head="svm"), folds=5) == {
        "signers": {}, "mean": None, "standard_error": None, "worst": [], "folds": 0}
