"""personalisation: k photos per letter of a new signer in training, that signer's other photos scored; and
benchmarks/personalisation.py, which measures it on a params.yaml variant."""
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from asl_pipeline import features, personalisation
from asl_pipeline.config import DATASET_ORIGIN, ProjectParams, load_params, project_paths
from asl_pipeline.featurizers import Featurizer, FeatureSpec, hand_found
from helpers import HAND_BUNDLE, OTHER_DEV, REPO, make_spec, needs_bundle, train_params

SPEC = make_spec(("hand_landmarks",), features=("angles",))  # 15 angles and the found flag


def clusters(centres: np.ndarray, per_class: int, seed: int, spread: float = 0.1):
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(0, spread, (per_class, len(c))) for c in centres]).astype(np.float32)
    x = np.concatenate([x, np.ones((len(x), 1), np.float32)], axis=1)  # found
    return x, np.repeat(np.arange(len(centres)), per_class)


@pytest.mark.parametrize("name, signer", [("hand3_a_dif_seg_1_cropped.jpg", "hand3"), ("A/user4_A7.jpg", "user4"),
                                          ("C:\\photos\\B\\hand10_b.jpg", "hand10")])
def test_the_signer_comes_from_the_file_name(name, signer):
    assert personalisation.signer_of(name) == signer


def test_a_file_name_without_a_signer_is_an_error_naming_it():
    with pytest.raises(ValueError, match="A1.jpg"):
        personalisation.signer_of("data/A/A1.jpg")


def test_a_draw_takes_k_per_letter_and_leaves_each_letter_one_to_score():
    labels = np.array([0, 0, 0, 1, 1, 2])
    drawn = personalisation.teach_draw(labels, 2, np.random.default_rng(0))
    assert sorted(labels[drawn].tolist()) == [0, 0, 1]  # letter 1 keeps one photo, letter 2 its only one
    np.testing.assert_array_equal(drawn, personalisation.teach_draw(labels, 2, np.random.default_rng(0)))


def test_one_photo_per_letter_of_a_new_signer_lifts_that_signer():
    """A new signer whose every letter sits off the training signer's: the head misreads them until one photo
    per letter of theirs joins training."""
    centres = np.random.default_rng(1).normal(0, 1, (3, 15))
    train_x, train_y = clusters(centres, 30, seed=2)
    shifted = np.roll(centres, 1, axis=0) * 0.5 + centres * 0.5 + 0.6  # halfway to the next letter, and off
    signer_x, signer_y = clusters(shifted, 4, seed=3, spread=0.05)
    arrays = {"hand": train_x, "origins": np.full(len(train_x), DATASET_ORIGIN)}
    scores = personalisation.personalisation(arrays, train_y, {"signer": (signer_x, signer_y)}, SPEC,
                                             train_params(head="svm", svm_c=10.0, extra_weight=3), 3,
                                             ks=(0, 1), draws=2)
    by_k = {score.k: score for score in scores}
    assert by_k[0].accuracy < 0.5 < 0.9 < by_k[1].accuracy
    assert by_k[1].scored == 9  # 12 photos, 3 taught


# benchmarks/personalisation.py: the figures of `make bench`, measured on a params.yaml variant's train features.
sys.path.insert(0, str(REPO / "benchmarks"))
import personalisation as bench  # noqa: E402  (benchmarks/personalisation.py)

LANDMARK_VARIANT = {"model": {"featurizers": ["hand_landmarks"]},
                    "train": {"head": "svm", "svm_c": 10.0, "landmark_copies": 0, "extra_weight": 3}}
BACKBONE_VARIANT = {"model": {"featurizers": ["backbone"]}, "train": {"head": "mlp"}}


def bench_project(root: Path, served: str = "hands", **sections) -> ProjectParams:
    """A project at `root` with the repo's params.yaml, variants `cnn` (backbone) and `hands` (hand landmarks,
    angles only, in 3 classes), serve.model `served`, and `sections` updated key by key; its params."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["variants"] = {"cnn": BACKBONE_VARIANT, "hands": LANDMARK_VARIANT}
    raw["serve"] = {"model": served}
    for section, values in {"split": {"classes": ["A", "B", "C"]}, "hands": {"features": ["angles"]},
                            "evaluate": {"extra_sets": ["photos/other-signers"]}, **sections}.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_params(root / "params.yaml")


def write_train_features(root: Path, project: ProjectParams, name: str, x, y, spec=None) -> None:
    """data/features/<name>/ as featurize@<name> writes it: meta.json and train.npz."""
    spec = spec or FeatureSpec.from_params(project.variant(name))
    folder = project_paths(root).variant(name).features
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"spec": spec.to_dict(), "weights": "not used",
                                                  "pretrained": None}), encoding="utf-8")
    labels = np.array(project.split.classes)[y]
    features.save_features(folder / "train.npz", {
        "hand": x, "labels": labels, "paths": np.array([f"{c}/{c}{i}.jpg" for i, c in enumerate(labels)]),
        "views": np.zeros(len(y), int), "origins": np.full(len(y), DATASET_ORIGIN)})


@needs_bundle
def test_the_benchmark_measures_the_served_landmark_variant_with_its_own_features_and_train_params(
        tmp_path, monkeypatch, capsys):
    project = bench_project(tmp_path)
    centres = np.random.default_rng(1).normal(0, 1, (3, 15))
    write_train_features(tmp_path, project, "hands", *clusters(centres, 30, seed=2))
    (tmp_path / "models").mkdir()
    shutil.copyfile(HAND_BUNDLE, project_paths(tmp_path).hand_model)  # the hand_model stage's copy
    signer = clusters(np.roll(centres, 1, axis=0) * 0.5 + centres * 0.5 + 0.6, 4, seed=3, spread=0.05)
    read, trained = [], []

    def signer_sets(featurizer, folders, classes):  # the photos' hand vectors, without reading photos
        read.append((featurizer.spec, folders, classes))
        return {("other-signers", "hand3"): signer}

    def recording(train, y_train, sets, spec, params, *args):
        trained.append((len(y_train), spec, params))
        return personalisation.personalisation(train, y_train, sets, spec, params, *args)

    monkeypatch.setattr(bench, "signer_sets", signer_sets)
    monkeypatch.setattr(bench, "personalisation", recording)
    figures = bench.measure(draws=2, extra_weights=[1, 3], root=tmp_path)

    spec = FeatureSpec.from_params(project.variant("hands"))
    assert read == [(spec, [tmp_path / "photos" / "other-signers"], project.split.classes)]
    train_params = project.variant("hands").train
    assert trained == [(90, spec, train_params), (90, spec, dataclasses.replace(train_params, extra_weight=1))]
    assert figures["personalisation_variant"] == "hands"
    assert figures["personalisation_extra_weight"] == 3 and figures["personalisation_landmark_copies"] == 0
    assert list(figures["personalisation"]) == ["3", "1"]  # the variant's own weight, then --extra-weight's
    assert set(figures["personalisation"]["1"]["other-signers"]["hand3"]) == {1}
    assert figures["personalisation_k0_other-signers"] < 0.5 < 0.9 < figures["personalisation_k1_other-signers"]
    assert "WARNING" not in capsys.readouterr().err

    bench_project(tmp_path, hands={"features": ["angles"], "border": 0.5})  # params changed, features not re-made
    bench.measure(draws=1, root=tmp_path)
    assert "run `dvc repro featurize@hands`" in capsys.readouterr().err


def test_the_benchmark_refuses_a_served_variant_that_reads_more_than_hand_landmarks(tmp_path):
    bench_project(tmp_path, served="cnn")
    with pytest.raises(SystemExit, match=r"serve.model is 'cnn', which reads \['backbone'\]: pass --variant hands"):
        bench.measure(root=tmp_path)


def test_the_benchmark_refuses_features_of_another_featurizer(tmp_path):
    project = bench_project(tmp_path)
    spec = dataclasses.replace(FeatureSpec.from_params(project.variant("hands")), featurizers=("backbone",))
    write_train_features(tmp_path, project, "hands", *clusters(np.eye(3, 15), 2, seed=0), spec=spec)
    with pytest.raises(SystemExit, match=r"data/features/hands holds \['backbone'\] features"):
        bench.measure(root=tmp_path)


@needs_bundle
@pytest.mark.skipif(not OTHER_DEV.is_dir(), reason=f"needs {OTHER_DEV}")
def test_signer_sets_read_every_photo_of_each_signer_of_each_set(tmp_path):
    classes = ("A", "B")
    folder = tmp_path / "other"
    for letter in classes:
        for source in sorted((OTHER_DEV / letter).glob("hand[34]_*.jpg"))[::4]:
            (folder / letter).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / letter / source.name)
    photos = sorted(folder.rglob("*.jpg"))
    spec = make_spec(("hand_landmarks",), mirror_left=True)
    sets = bench.signer_sets(Featurizer(spec, HAND_BUNDLE.read_bytes()), [folder], classes)

    assert set(sets) == {("other", "hand3"), ("other", "hand4")}
    for signer in ("hand3", "hand4"):
        vectors, labels = sets[("other", signer)]
        mine = [p for p in photos if p.name.startswith(signer + "_")]
        assert vectors.shape[0] == len(mine) == len(labels)
        assert sorted(labels.tolist()) == sorted(classes.index(p.parent.name) for p in mine)
        assert hand_found(vectors).any()  # hands are read, not left empty
