"""`python -m asl_pipeline predict`: outputs, batching, unreadable files, hands and model errors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from asl_pipeline import cli
from helpers import SAMPLE as SAMPLE_DIR, copy_bundle_beside, needs_bundle, needs_sample
from test_gradcam import CLASSES, save_tiny, tiny_classifier, write_image

SAMPLE = SAMPLE_DIR / "asl_alphabet_test" / "A_test.jpg"
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A backbone-only model: no hand detection, so hand_found is null and no _hand.png is drawn."""
    return save_tiny(tiny_classifier(), tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def hands_model_file(tmp_path_factory):
    """A model fusing the backbone with hand landmarks, the hand bundle beside it as the train stage leaves it."""
    featurizers = ("backbone", "hand_landmarks")
    model_file = save_tiny(tiny_classifier(featurizers=featurizers), tmp_path_factory.mktemp("models"), featurizers)
    copy_bundle_beside(model_file)
    return model_file


def predict(*args):
    return cli.main(["predict", *map(str, args)])


def test_predict_one_image_writes_text_heatmap_and_json(tmp_path, model_file, capsys):
    image = write_image(tmp_path / "in" / "hand.png", size=(61, 45))
    out = tmp_path / "out"
    assert predict(image, "--model", model_file, "--out", out, "--json", "--top-k", "2") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.split(": ")[1].split()[0] in CLASSES
    assert "[top-2: " in line
    text = (out / "hand_prediction.txt").read_text()
    assert text.splitlines()[0].split(": ")[1] in CLASSES
    with Image.open(out / "hand_heatmap.png") as heatmap, Image.open(image) as original:
        assert heatmap.size == (61, 45) and heatmap.mode == "RGB"
        assert np.abs(np.asarray(heatmap, int) - np.asarray(original.convert("RGB"), int)).mean() > 5
    [record] = json.loads((out / "predictions.json").read_text())
    assert set(record) == {"path", "label", "probability", "top_k", "hand_found"}
    assert record["hand_found"] is None  # this model does not look for hands
    assert "hand_found" not in text
    assert not (out / "hand_hand.png").exists()
    assert record["path"] == image and record["label"] in CLASSES
    assert [set(entry) for entry in record["top_k"]] == [{"label", "probability"}] * 2
    assert record["top_k"][0] == {"label": record["label"], "probability": record["probability"]}


def test_folder_with_unreadable_rgba_and_grayscale(tmp_path, model_file, capsys):
    folder = tmp_path / "photos"
    write_image(folder / "rgba.png", mode="RGBA")
    write_image(folder / "gray.png", mode="L")
    write_image(folder / "nested" / "upper.JPG")
    (folder / "bad.jpg").write_text("this is not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    assert predict(folder, "--model", model_file, "--out", out, "--batch-size", "2") == 1
    captured = capsys.readouterr()
    assert "bad.jpg" in captured.err
    assert len(captured.out.strip().splitlines()) == 3
    assert sorted(p.name for p in out.iterdir()) == [
        f"{stem}_{kind}" for stem in ("gray", "rgba", "upper") for kind in ("heatmap.png", "prediction.txt")]


def test_no_heatmap(tmp_path, model_file):
    out = tmp_path / "out"
    assert predict(write_image(tmp_path / "hand.png"), "--model", model_file, "--out", out, "--no-heatmap") == 0
    assert [p.name for p in out.iterdir()] == ["hand_prediction.txt"]


def test_same_stems_get_distinct_outputs(tmp_path, model_file):
    first, second = write_image(tmp_path / "a" / "x.png"), write_image(tmp_path / "b" / "x.jpg")
    out = tmp_path / "out"
    assert predict(first, second, "--model", model_file, "--out", out) == 0
    assert {p.name for p in out.iterdir()} == {"x_prediction.txt", "x_heatmap.png",
                                               "x_2_prediction.txt", "x_2_heatmap.png"}


def test_missing_model_names_the_file(tmp_path, capsys):
    image = write_image(tmp_path / "hand.png")
    assert predict(image, "--model", tmp_path / "absent.keras", "--out", tmp_path / "out") == 1
    assert "absent.keras" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_labels_mismatch_names_the_file(tmp_path, model_file, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.keras").write_bytes(model_file.read_bytes())
    (folder / "labels.json").write_text(json.dumps(CLASSES[:2]))
    assert predict(write_image(tmp_path / "hand.png"), "--model", folder / "model.keras") == 1
    assert "labels.json" in capsys.readouterr().err


def test_damaged_run_json_names_the_file(tmp_path, model_file, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("model.keras", "labels.json", "featurizers.json"):
        shutil.copyfile(model_file.with_name(name), folder / name)
    (folder / "run.json").write_text("{damaged")
    assert predict(write_image(tmp_path / "hand.png"), "--model", folder / "model.keras",
                   "--out", tmp_path / "out") == 1
    assert "run.json" in capsys.readouterr().err


def test_no_images_found(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict(tmp_path / "empty", "--model", tmp_path / "unused.keras") == cli.EXIT_NO_IMAGES
    assert "no images found" in capsys.readouterr().err


def served_project(root: Path, served: str) -> Path:
    """A project folder with the repo's params.yaml, its variants `reader` and `mirror` each holding a tiny saved
    model in models/<variant>/, and serve.model naming `served`. The two models read the same photo as different
    letters: the reader's first class grows with its features, mirror's last."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    params["variants"] = {"reader": {"model": {"featurizers": ["backbone"]}, "train": {"head": "mlp"}},
                          "mirror": {"model": {"featurizers": ["backbone"]}, "train": {"head": "mlp"}}}
    params["serve"] = {"model": served}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for variant, head_sign in (("reader", (1.0, -1.0, -1.0)), ("mirror", (-1.0, -1.0, 1.0))):
        if not (root / "models" / variant / "model.keras").is_file():
            save_tiny(tiny_classifier(head_sign=head_sign), root / "models" / variant)
    return root


def predict_in(folder: Path, *args) -> subprocess.CompletedProcess:
    """`python -m asl_pipeline predict ARGS` run in `folder`, as someone in their project root runs it."""
    return subprocess.run([sys.executable, "-m", "asl_pipeline", "predict", *map(str, args)], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def test_without_model_predict_uses_the_variant_serve_model_names(tmp_path, monkeypatch):
    image = write_image(tmp_path / "hand.png")
    project = served_project(tmp_path / "project", "mirror")
    result = predict_in(project, image, "--out", tmp_path / "out-mirror", "--json", "--no-heatmap")
    assert result.returncode == 0, result.stderr
    [record] = json.loads((tmp_path / "out-mirror" / "predictions.json").read_text())
    assert record["label"] == CLASSES[-1]  # mirror's model, from models/mirror/

    served_project(project, "reader")  # the same project, serving the other variant
    monkeypatch.chdir(project)
    assert predict(image, "--out", tmp_path / "out-reader", "--json", "--no-heatmap") == 0
    [record] = json.loads((tmp_path / "out-reader" / "predictions.json").read_text())
    assert record["label"] == CLASSES[0]  # the reader's, from models/reader/


def test_without_model_predict_names_the_missing_model_of_serve_model(tmp_path, monkeypatch, capsys):
    project = served_project(tmp_path / "project", "mirror")
    shutil.rmtree(project / "models" / "mirror")
    monkeypatch.chdir(project)
    assert predict(write_image(tmp_path / "hand.png"), "--out", tmp_path / "out") == 1
    assert str(Path("models") / "mirror" / "model.keras") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_model_or_params_yaml_predict_says_to_pass_model(tmp_path):
    image = write_image(tmp_path / "hand.png")
    (tmp_path / "elsewhere").mkdir()
    result = predict_in(tmp_path / "elsewhere", image, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "params.yaml" in result.stderr and "--model" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_documents_every_option():
    text = subprocess.run([sys.executable, "-m", "asl_pipeline", "predict", "--help"], cwd=PROJECT,
                          capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--top-k", "--out", "--json", "--no-heatmap", "--batch-size", "serve.model",
                   "models/reader/model.keras"):
        assert option in " ".join(text.split()), option  # argparse wraps the help text


@pytest.mark.skipif(not SAMPLE.is_file(), reason=f"shared ASL sample not found at {SAMPLE}")
def test_real_sample_photo(tmp_path, model_file, capsys):
    out = tmp_path / "out"
    assert predict(SAMPLE, "--model", model_file, "--out", out) == 0
    assert capsys.readouterr().out.startswith(f"{SAMPLE}: ")
    with Image.open(out / "A_test_heatmap.png") as heatmap, Image.open(SAMPLE) as photo:
        assert heatmap.size == photo.size


@needs_sample
def test_hands_model_reports_hand_found_and_draws_the_skeleton(tmp_path, hands_model_file, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copyfile(SAMPLE, photos / "sign.jpg")
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(photos / "wall.png")  # no hand in it
    out = tmp_path / "out"
    assert predict(photos, "--model", hands_model_file, "--out", out, "--json") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.endswith("(no hand found)") for line in lines] == [False, True]  # sign.jpg, then wall.png
    records = {Path(record["path"]).name: record for record in json.loads((out / "predictions.json").read_text())}
    assert records["sign.jpg"]["hand_found"] is True and records["wall.png"]["hand_found"] is False
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json"] + [
        f"{stem}_{kind}" for stem in ("sign", "wall") for kind in ("hand.png", "heatmap.png", "prediction.txt")]
    assert "hand_found: yes" in (out / "sign_prediction.txt").read_text()
    assert "hand_found: no" in (out / "wall_prediction.txt").read_text()
    for stem, original in (("sign", SAMPLE), ("wall", photos / "wall.png")):
        with Image.open(out / f"{stem}_hand.png") as drawn, Image.open(original) as photo:
            assert drawn.size == photo.size
            # The skeleton, or "no hand found", is drawn over the photo.
            assert np.abs(np.asarray(drawn, int) - np.asarray(photo.convert("RGB"), int)).max() > 100

    out = tmp_path / "out-no-heatmap"
    assert predict(photos, "--model", hands_model_file, "--out", out, "--no-heatmap") == 0
    assert sorted(p.name for p in out.iterdir()) == ["sign_prediction.txt", "wall_prediction.txt"]


@needs_bundle
def test_landmarks_only_model_draws_the_hand_and_its_keypoint_weights(tmp_path, capsys):
    from asl_pipeline.model import assemble, build_head
    from helpers import make_spec

    featurizers = ("hand_landmarks",)
    spec = make_spec(featurizers)
    network = assemble(spec, None, build_head(spec.hand_dim, len(CLASSES), hidden_units=0, dropout=0.0))
    model_file = save_tiny(network, tmp_path / "models", featurizers)
    copy_bundle_beside(model_file)
    out = tmp_path / "out"
    image = write_image(tmp_path / "noise.png")
    assert predict(image, "--model", model_file, "--out", out, "--json") == 0
    assert capsys.readouterr().out.strip().endswith("(no hand found)")
    # _keypoints.png: the joints coloured by weight (here "no hand found"), tests/test_keypoint_attribution.py
    assert sorted(p.name for p in out.iterdir()) == ["noise_hand.png", "noise_keypoints.png", "noise_prediction.txt",
                                                     "predictions.json"]
    [record] = json.loads((out / "predictions.json").read_text())
    assert record["hand_found"] is False
    # No hand: the hand vector is all zeros, and the model still gives a probability per class.
    assert sum(entry["probability"] for entry in record["top_k"]) == pytest.approx(1, abs=1e-4)


@needs_bundle
def test_hands_model_without_its_bundle_names_the_missing_file(tmp_path, hands_model_file, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("model.keras", "labels.json", "featurizers.json"):
        shutil.copyfile(hands_model_file.with_name(name), folder / name)
    assert predict(write_image(tmp_path / "hand.png"), "--model", folder / "model.keras",
                   "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert str(folder / "hand_landmarker.task") in err and "hand_model" in err


def test_missing_feature_spec_names_the_file(tmp_path, model_file, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("model.keras", "labels.json"):
        shutil.copyfile(model_file.with_name(name), folder / name)
    assert predict(write_image(tmp_path / "hand.png"), "--model", folder / "model.keras",
                   "--out", tmp_path / "out") == 1
    assert "featurizers.json" in capsys.readouterr().err

