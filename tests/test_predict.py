"""`python -m asl_pipeline predict`: outputs, batching, unreadable files and model errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asl_pipeline import cli
from asl_pipeline.model import save_model
from test_gradcam import CLASSES, tiny_classifier, write_image

SAMPLE = Path("/work/shared/data/asl-sample/asl_alphabet_test/A_test.jpg")
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_model(tiny_classifier(), CLASSES, folder / "model.keras", folder / "labels.json")
    return folder / "model.keras"


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
    assert set(record) == {"path", "label", "probability", "top_k"}
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


def test_no_images_found(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict(tmp_path / "empty", "--model", tmp_path / "unused.keras") == cli.EXIT_NO_IMAGES
    assert "no images found" in capsys.readouterr().err


def test_help_documents_every_option():
    text = subprocess.run([sys.executable, "-m", "asl_pipeline", "predict", "--help"], cwd=PROJECT,
                          capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--top-k", "--out", "--json", "--no-heatmap", "--batch-size"):
        assert option in text


@pytest.mark.skipif(not SAMPLE.is_file(), reason=f"shared ASL sample not found at {SAMPLE}")
def test_real_sample_photo(tmp_path, model_file, capsys):
    out = tmp_path / "out"
    assert predict(SAMPLE, "--model", model_file, "--out", out) == 0
    assert capsys.readouterr().out.startswith(f"{SAMPLE}: ")
    with Image.open(out / "A_test_heatmap.png") as heatmap, Image.open(SAMPLE) as photo:
        assert heatmap.size == photo.size
