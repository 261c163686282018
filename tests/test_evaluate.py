"""The evaluate stage: extra sets of other people's photos, scoring with unreadable files, hand-found rates,
and a variant's evaluate.json with a few scalars per set (per-class scores go to
plots/variants/<variant>/per_class/<set>.csv)."""
import csv
import dataclasses
import json
import runpy
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from asl_pipeline import dataset, evaluation, inference
from asl_pipeline.config import Paths, load_params
from asl_pipeline.errors import PipelineError
from helpers import REPO, SAMPLE, copy_bundle_beside, make_spec, needs_sample
from test_gradcam import CLASSES, save_tiny, tiny_classifier, write_image


# ---------------------------------------------------------------- extra sets

def make_folder(folder, layout: dict) -> None:
    """layout: {relative file name: image size or raw bytes}."""
    for name, content in layout.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_image(path, content)


def test_read_labelled_folder_lists_images_by_class_folder(tmp_path):
    root, folder = tmp_path / "project", tmp_path / "other people"
    root.mkdir()
    make_folder(folder, {"A/a1.jpg": (20, 30), "A/.hidden.jpg": (20, 30), "B/nested/b1.PNG": (30, 20),
                         "B/notes.txt": b"not an image", "B/broken.jpg": b"not a jpeg either",
                         ".cache/A.jpg": (10, 10), "README.jpg": (10, 10)})
    paths, labels = dataset.read_labelled_folder(folder, CLASSES, root)
    assert paths == ["../other people/A/a1.jpg", "../other people/B/broken.jpg", "../other people/B/nested/b1.PNG"]
    assert labels == ["A", "B", "B"]
    assert all((root / path).is_file() for path in paths)  # relative to the root, as manifests are
    # A subset of the model's classes is fine; so is an absolute folder.
    assert dataset.read_labelled_folder(folder.resolve(), CLASSES + ["del"], root)[1] == labels


def test_read_labelled_folder_refuses_a_class_the_model_does_not_know(tmp_path):
    folder = tmp_path / "extra"
    make_folder(folder, {"A/a1.jpg": (20, 20), "hello/h1.jpg": (20, 20), "a/lower.jpg": (20, 20)})
    with pytest.raises(PipelineError) as caught:
        dataset.read_labelled_folder(folder, CLASSES, tmp_path)
    message = str(caught.value)
    assert str(folder) in message and "'hello'" in message and "'a'" in message and "evaluate.extra_sets" in message


def test_read_labelled_folder_refuses_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(PipelineError) as caught:
        dataset.read_labelled_folder(tmp_path / "absent", CLASSES, tmp_path)
    assert str(tmp_path / "absent") in str(caught.value) and "evaluate.extra_sets" in str(caught.value)
    make_folder(tmp_path / "empty", {"A/notes.txt": b"no photos"})
    with pytest.raises(PipelineError, match="no images"):
        dataset.read_labelled_folder(tmp_path / "empty", CLASSES, tmp_path)
    (tmp_path / "file.jpg").write_bytes(b"")
    with pytest.raises(PipelineError, match="file.jpg"):
        dataset.read_labelled_folder(tmp_path / "file.jpg", CLASSES, tmp_path)


# ---------------------------------------------------------------- scoring

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A backbone-only tiny classifier, loaded the way evaluate loads models/<variant>/model.keras."""
    return inference.load_classifier(save_tiny(tiny_classifier(), tmp_path_factory.mktemp("models")))


def test_score_skips_an_unreadable_file_and_reports_it(classifier, tmp_path):
    names = ["A/a1.png", "A/a2.png", "B/bad.jpg", "B/b1.png", "C/c1.png"]
    for name in names:
        if "bad" in name:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("not an image")
        else:
            write_image(tmp_path / name, (40 + len(name), 30))
    y_true = np.array([0, 0, 1, 1, 2])
    scored = evaluation.score(classifier, [tmp_path / n for n in names], names, y_true, top_k=2)
    assert len(scored.skipped) == 1
    skipped_name, reason = scored.skipped[0]
    assert skipped_name == "B/bad.jpg" and "not a readable image" in reason
    assert scored.metrics["n"] == 4
    assert set(scored.metrics) == {"n", "accuracy", "macro_f1", "top_2_accuracy", "mirror_consistency"}  # no hands: no hand_found
    assert all(isinstance(value, (int, float)) for value in scored.metrics.values())
    # The four readable photos scored exactly as the classifier sees them.
    kept = [0, 1, 3, 4]
    photos = [np.asarray(Image.open(tmp_path / names[i]).convert("RGB")) for i in kept]
    predicted = np.array([a.probabilities.argmax() for a in classifier.analyse(photos, with_heatmaps=False)])
    assert scored.metrics["accuracy"] == pytest.approx(np.mean(predicted == y_true[kept]))
    assert [actual for actual, _ in scored.confusion] == ["A", "A", "B", "C"]
    assert [CLASSES.index(p) for _, p in scored.confusion] == predicted.tolist()
    assert all(row[0] != "B/bad.jpg" for row in scored.misclassified)
    assert [row[0] for row in scored.per_class_rows] == ["A", "B", "C"]
    assert [row[1] for row in scored.per_class_rows] == [2, 1, 1]  # images per class, the bad one left out
    assert all(row[5] == "" for row in scored.per_class_rows)  # no_hand: not applicable
    assert "B" in scored.report


def test_score_with_nothing_readable_names_the_first_file(classifier, tmp_path):
    bad = [tmp_path / "x.jpg", tmp_path / "y.jpg"]
    for path in bad:
        path.write_bytes(b"")
    with pytest.raises(PipelineError, match="x.jpg"):
        evaluation.score(classifier, bad, ["x.jpg", "y.jpg"], np.array([0, 1]), top_k=1)


def test_score_with_no_photos_says_so_naming_the_set(classifier):
    with pytest.raises(PipelineError, match="evaluate test: there are no photos to score"):
        evaluation.score(classifier, [], [], np.array([], dtype=int), top_k=1, description="evaluate test")


@needs_sample
def test_score_counts_photos_without_a_hand_outside_nothing(tmp_path):
    from asl_pipeline.model import assemble, build_head

    featurizers, classes = ("hand_landmarks",), ["A", "B", "nothing"]
    spec = make_spec(featurizers)
    network = assemble(spec, None, build_head(spec.hand_dim, 3, hidden_units=0, dropout=0.0))
    model_file = save_tiny(network, tmp_path / "models", featurizers)
    (tmp_path / "models" / "labels.json").write_text(json.dumps(classes))
    copy_bundle_beside(model_file)
    hands_classifier = inference.load_classifier(model_file)
    files = [SAMPLE / "asl_alphabet_train" / "A" / "A1.jpg", tmp_path / "gray.png", tmp_path / "wall.png"]
    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(files[1])
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(files[2])
    scored = evaluation.score(hands_classifier, files, ["a", "gray", "wall"], np.array([0, 1, 2]), top_k=2)
    # A's photo shows a hand, B's gray photo does not; `nothing` is kept apart.
    assert scored.metrics["hand_found"] == 0.5
    assert {row[0]: row[5] for row in scored.per_class_rows} == {"A": 0, "B": 1, "nothing": 1}


def test_hand_counts_and_found_rates_by_hand():
    counts = evaluation.hand_counts(["A", "A", "B", "nothing", "A"], [True, False, True, True, True])
    assert counts == {"A": {"images": 3, "no_hand": 1}, "B": {"images": 1, "no_hand": 0},
                      "nothing": {"images": 1, "no_hand": 0}}
    other = evaluation.hand_counts(["B", "nothing"], [False, False])
    rates = evaluation.hand_found_rates({"test": counts, "other": other})
    assert rates == {"test": 0.75, "other": 0.0, "all_outside_nothing": 0.6, "nothing_false_hands": 0.5}
    assert evaluation.hand_found_rates({"only_nothing": {"nothing": {"images": 2, "no_hand": 2}}}) == {
        "only_nothing": None, "all_outside_nothing": None, "nothing_false_hands": 0.0}


# ---------------------------------------------------------------- the stage

VARIANT = "resnet50"  # the one variant of a StageProject's params.yaml (conftest.TINY_VARIANT)


def variant_paths(project):
    return Paths(project.root).variant(VARIANT)


def write_run(project, **changes) -> dict:
    """run.json beside the variant's model, as train writes it: the params it was trained with, as a record."""
    params = load_params(project.root / "params.yaml").variant(VARIANT)
    record = dataclasses.asdict(params)
    for section, values in changes.items():
        record[section].update(values)
    run = {"variant": VARIANT, "pretrained": False, "backbone_weights": "none", "dvc_experiment": None,
           "params": record, "inputs_sha256": "ab" * 32}
    variant_paths(project).model_files.run.write_text(json.dumps(run))
    return run


@pytest.fixture
def evaluate_project(stage_project, tmp_path):
    """A project with a trained tiny model (and its run.json), a test manifest, split and train metrics, and an
    extra set."""
    root = stage_project.root
    save_tiny(tiny_classifier(), variant_paths(stage_project).model_dir)
    rows = ["path,label"]
    for label in CLASSES:
        for i in range(2):
            relative = f"data/raw/asl_alphabet_train/{label}/{label}{i + 1}.png"
            write_image(root / relative, (36 + i, 30))
            rows.append(f"{relative},{label}")
    (root / "data" / "split").mkdir(parents=True)
    (root / "data" / "split" / "test.csv").write_text("\n".join(rows) + "\n")
    (root / "metrics").mkdir()
    (root / "metrics" / "split.json").write_text(json.dumps({"counts": {"train": 0, "val": 0, "test": 6}}))
    make_folder(root / "extra" / "other-people", {"A/x.jpg": (50, 40), "C/y.jpg": (40, 50), "C/z.jpg": b"broken"})
    stage_project.set(evaluate={"top_k": 2, "extra_sets": ["extra/other-people"]})
    write_run(stage_project)
    return stage_project


def run_evaluate(project, monkeypatch, *args):
    """stages/evaluate.py in this process, with the variant's name as `dvc repro` passes it (or `args`)."""
    script = str(REPO / "stages" / "evaluate.py")
    monkeypatch.chdir(project.root)
    monkeypatch.setattr(sys, "argv", [script, *(args or (VARIANT,))])
    runpy.run_path(script, run_name="__main__")


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_evaluate_stage_writes_scalars_per_set_and_per_class_plots(evaluate_project, monkeypatch, capsys):
    run_evaluate(evaluate_project, monkeypatch)
    root, variant = evaluate_project.root, variant_paths(evaluate_project)
    results = json.loads((variant.metrics / "evaluate.json").read_text())
    assert list(results) == ["mirror_consistency", "macro_f1"]  # accuracy: compare's table, metrics/accuracy.json
    details = json.loads((variant.metrics / "evaluate_details.json").read_text())
    assert list(details) == ["test", "other-people"]  # the extra set named by its folder
    for name, n in (("test", 6), ("other-people", 2)):
        assert set(details[name]) == {"n", "accuracy", "macro_f1", "top_2_accuracy", "mirror_consistency"}, details[name]
        assert all(isinstance(v, (int, float)) for v in details[name].values())  # scalars only: no per_class
        assert details[name]["n"] == n
        for metric in ("mirror_consistency", "macro_f1"):  # what `dvc exp show` compares, to 4 places
            assert results[metric][name] == round(details[name][metric], 4)
    captured = capsys.readouterr()
    assert "z.jpg" in captured.err  # the broken photo of the extra set was skipped and reported
    assert f"evaluate {VARIANT} test: accuracy" in captured.out
    per_class = variant.plots / "per_class"
    assert sorted(p.name for p in per_class.iterdir()) == ["other-people.csv", "test.csv"]
    test_rows = read_rows(per_class / "test.csv")
    assert test_rows[0] == ["class", "images", "precision", "recall", "f1", "no_hand"]
    assert [row[0] for row in test_rows[1:]] == CLASSES and [row[1] for row in test_rows[1:]] == ["2", "2", "2"]
    assert [row[0] for row in read_rows(per_class / "other-people.csv")[1:]] == ["A", "C"]  # classes present only
    assert len(read_rows(variant.plots / "confusion.csv")) == 1 + 6  # the test set's
    report = (variant.metrics / "classification_report.txt").read_text()
    assert "== test (6 images)" in report and "== other-people (2 images)" in report
    assert read_rows(variant.eval / "misclassified.csv")[0] == ["path", "label", "predicted", "probability"]
    assert variant.eval == root / "data" / "eval" / VARIANT
    card = variant.model_card.read_text()
    assert variant.model_card == root / "models" / f"MODEL_CARD_{VARIANT}.md"
    assert f"variant `{VARIANT}`" in card and f"`models/{VARIANT}/`" in card
    # It names the model by its training inputs and finds its commit through git: it names no commit itself.
    assert f"sha256 `{'ab' * 32}`" in card and f"`git log -1 -- models/MODEL_CARD_{VARIANT}.md`" in card
    assert "git commit `" not in card
    # Everything it wrote is in the variant's own folders: nothing at the old shared places.
    assert sorted(p.name for p in (root / "metrics").iterdir()) == ["split.json", "variants"]
    assert sorted(p.name for p in (root / "plots").iterdir()) == ["variants"]
    assert sorted(p.name for p in (root / "models").iterdir()) == [f"MODEL_CARD_{VARIANT}.md", VARIANT]


def test_evaluate_stage_writes_the_model_card_from_the_params_the_model_was_trained_with(evaluate_project,
                                                                                          monkeypatch):
    """params.yaml may have changed since train ran (an mlp head here); the card describes the model as trained."""
    write_run(evaluate_project, train={"head": "svm", "svm_c": 7.5}, split={"seed": 1234})
    run_evaluate(evaluate_project, monkeypatch)
    card = variant_paths(evaluate_project).model_card.read_text()
    assert "SVM, RBF kernel, C=7.5" in card and "dense head" not in card
    assert "seed 1234" in card
    # A fine-tuned model read the photos too: train records no inputs digest, and the card says why.
    run = write_run(evaluate_project, train={"head": "mlp", "fine_tune_epochs": 2})
    del run["inputs_sha256"]
    variant_paths(evaluate_project).model_files.run.write_text(json.dumps(run))
    run_evaluate(evaluate_project, monkeypatch)
    card = variant_paths(evaluate_project).model_card.read_text()
    assert "fine-tuned, so it also read the photos: no inputs digest" in card and "`None`" not in card


@pytest.mark.parametrize("run", [None, {"pretrained": True}, {"pretrained": True, "params": {"data": {}}}],
                         ids=["no run.json", "no params record", "incomplete params record"])
def test_evaluate_stage_without_the_params_record_exits_1_naming_run_json(evaluate_project, monkeypatch, capsys,
                                                                          run):
    variant = variant_paths(evaluate_project)
    if run is None:
        variant.model_files.run.unlink()
    else:
        variant.model_files.run.write_text(json.dumps(run))
    with pytest.raises(SystemExit) as exited:
        run_evaluate(evaluate_project, monkeypatch)
    assert exited.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and f"models/{VARIANT}/run.json" in error and "dvc repro" in error
    assert not variant.metrics.exists() and not variant.model_card.exists()


def test_evaluate_stage_for_a_variant_params_yaml_lacks_names_the_variants(evaluate_project, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        run_evaluate(evaluate_project, monkeypatch, "reader")
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'reader'" in err and f"'{VARIANT}'" in err
    assert not (evaluate_project.root / "metrics" / "variants").exists()


@pytest.mark.parametrize("problem", ["unknown class folder", "missing folder", "two sets named alike"])
def test_evaluate_stage_with_a_bad_extra_set_exits_1_and_keeps_previous_metrics(evaluate_project, monkeypatch,
                                                                                 capsys, problem):
    root, variant = evaluate_project.root, variant_paths(evaluate_project)
    previous = variant.metrics / "evaluate.json"
    previous.parent.mkdir(parents=True)
    previous.write_text('{"previous": true}')
    if problem == "unknown class folder":
        make_folder(root / "extra" / "other-people", {"hello/h.jpg": (20, 20)})
        expected = ["other-people", "'hello'"]
    elif problem == "missing folder":
        evaluate_project.set(evaluate={"extra_sets": ["extra/absent"]})
        expected = ["extra/absent"]
    else:
        shutil.copytree(root / "extra" / "other-people", root / "more" / "other-people")
        evaluate_project.set(evaluate={"extra_sets": ["extra/other-people", "more/other-people"]})
        expected = ["'other-people'", "rename"]
    with pytest.raises(SystemExit) as exited:
        run_evaluate(evaluate_project, monkeypatch)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "evaluate.extra_sets" in err
    assert all(fragment in err for fragment in expected), err
    assert previous.read_text() == '{"previous": true}'
    assert not (root / "plots").exists() and not variant.model_card.exists()
