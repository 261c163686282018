"""Grad-CAM on tiny models with the assembled structure, overlays, and the explain stage.

Grad-CAM through a fused model with an SVM head: test_fusion.py.
"""
import runpy
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from asl_pipeline import drawing, explain, gradcam, model as model_module
from asl_pipeline.config import ExplainParams, Paths
from asl_pipeline.config import ModelFiles
from asl_pipeline.errors import PipelineError
from asl_pipeline.model import assemble, build_head, save_model
from helpers import copy_bundle_beside, make_spec, needs_bundle

CLASSES = ["A", "B", "C"]
SIZE = 32
STRIDE = 2
PROJECT = Path(__file__).resolve().parents[1]
VARIANT = "resnet50"  # a variant of the repo's params.yaml, which the explain stage test runs with


def tiny_classifier(kernel_seed: int = 0, head_sign=(1.0, -1.0, -1.0), image_size: int = SIZE,
                    featurizers=("backbone",)):
    """A model shaped like model.assemble's whose features only see the top-right quadrant of the image.

    The backbone crops that quadrant and zero-pads it back, so its conv map is exactly zero elsewhere.
    The head's class c weighs every backbone feature by head_sign[c]: class 0 grows with the features.
    With hand_landmarks among the featurizers the head also reads the hand vector, with small fixed weights.
    """
    spec = make_spec(featurizers, image_size)
    half = image_size // 2
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Cropping2D(((0, half), (half, 0)))(inputs)
    x = keras.layers.ZeroPadding2D(((0, half), (half, 0)))(x)
    conv = keras.layers.Conv2D(8, 3, strides=STRIDE, padding="same", use_bias=False, activation="relu",
                               name="last_conv")
    features = keras.layers.GlobalAveragePooling2D()(conv(x))
    backbone = keras.Model(inputs, features, name="resnet50")
    conv.set_weights([np.random.default_rng(kernel_seed).normal(0, 0.05, (3, 3, 3, 8)).astype("float32")])
    hand_dim = spec.hand_dim if "hand_landmarks" in featurizers else 0
    head = build_head(8 + hand_dim, len(head_sign), hidden_units=0, dropout=0.0)
    weights = np.tile(np.asarray(head_sign, "float32"), (8, 1))
    if hand_dim:
        hand_weights = np.random.default_rng(kernel_seed).normal(0, 0.01, (hand_dim, len(head_sign)))
        weights = np.vstack([weights, hand_weights.astype("float32")])
    head.get_layer("logits").set_weights([weights, np.zeros(len(head_sign), "float32")])
    return assemble(spec, backbone, head)


def save_tiny(network, folder: Path, featurizers=("backbone",), image_size: int = SIZE) -> Path:
    """`network` saved as the train stage saves it: model.keras, labels.json and featurizers.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ModelFiles(folder / "model.keras")
    save_model(network, CLASSES, make_spec(featurizers, image_size), files.model, files.labels, files.spec)
    return files.model


def random_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, height, width, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return tiny_classifier()


def test_heatmaps_shape_range_and_peak(model):
    maps, probabilities = gradcam.heatmaps(model, random_images(3, 40, 50), last_conv_layer="last_conv")
    side = SIZE // STRIDE
    assert maps.shape == (3, side, side) and maps.dtype == np.float32
    assert probabilities.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1)


def test_heatmap_lies_in_the_only_region_the_features_see(model):
    maps, _ = gradcam.heatmaps(model, random_images(5, SIZE, SIZE, seed=1), last_conv_layer="last_conv")
    side = SIZE // STRIDE
    # Map cell (i, j) reads input rows 2i..2i+2 and columns 2j..2j+2 ('same' padding, stride 2),
    # so the top-right input quadrant covers rows 0..side/2-1 and columns side/2-1..side-1.
    rows, cols = side // 2, side // 2 - 1
    for heatmap in maps:
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert row < rows and col >= cols, (row, col)
        assert heatmap.max() == 1
        assert not heatmap[rows:, :].any() and not heatmap[:, :cols].any()


def test_class_indices_choose_the_explained_class(model):
    # Class 1 weighs every feature negatively: its Grad-CAM, ReLU'd, is all zero (and not NaN).
    maps, probabilities = gradcam.heatmaps(model, random_images(3, SIZE, SIZE), np.array([0, 1, 0]),
                                           last_conv_layer="last_conv")
    assert np.isfinite(maps).all()
    assert maps[0].max() == 1 and maps[2].max() == 1
    assert not maps[1].any()
    assert (probabilities.argmax(axis=1) == 0).all()


def test_default_layer_falls_back_to_the_last_4d_output(model):
    assert gradcam.default_last_conv_layer(model) == "last_conv"
    images = random_images(2, SIZE, SIZE)
    np.testing.assert_array_equal(gradcam.heatmaps(model, images)[0],
                                  gradcam.heatmaps(model, images, last_conv_layer="last_conv")[0])


def test_default_layer_prefers_the_registry_name():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, name="conv5_block3_out")(inputs)
    x = keras.layers.Conv2D(4, 3, name="later_conv")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="resnet50")
    classifier = assemble(make_spec(("backbone",)), backbone, build_head(4, 2, 0, 0.0))
    assert gradcam.default_last_conv_layer(classifier) == "conv5_block3_out"


def test_heatmaps_through_a_fused_model_match_its_predictions():
    """With a hand input beside the images, Grad-CAM still explains the backbone branch, and its
    probabilities are the model's own (the hand block joins the features in assemble's order)."""
    fused = tiny_classifier(featurizers=("backbone", "hand_landmarks"))
    assert set(model_module.input_names(fused)) == {"images", "hand"}
    images = random_images(3, SIZE, SIZE, seed=2)
    hand = np.random.default_rng(3).normal(0, 1, (3, fused.get_layer("head").input_shape[-1] - 8)).astype("float32")
    maps, probabilities = gradcam.heatmaps(fused, {"images": images, "hand": hand}, last_conv_layer="last_conv")
    np.testing.assert_allclose(probabilities, fused.predict({"images": images, "hand": hand}, verbose=0), atol=1e-5)
    assert maps.shape == (3, SIZE // STRIDE, SIZE // STRIDE)
    assert maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1)


def test_overlay_keeps_size_dtype_and_rgb_order():
    image = np.full((37, 53, 3), 100, np.uint8)
    hot = np.ones((4, 4), np.float32)
    blended = drawing.overlay(image, hot, 0.5)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    np.testing.assert_array_equal(drawing.overlay(image, hot, 0.0), image)
    red, green, blue = drawing.overlay(image, hot, 1.0)[0, 0]
    assert red > 100 and blue == 0 and green == 0  # jet's hottest colour is dark red, not blue


def test_explanation_panels_follow_what_the_model_uses():
    image = np.full((30, 40, 3), 100, np.uint8)
    heatmap = np.ones((4, 4), np.float32)
    assert drawing.explanation(image, heatmap, None, False, 0.4).shape == (30, 40, 3)  # Grad-CAM only
    both = drawing.explanation(image, heatmap, None, True, 0.4)  # Grad-CAM beside the (missing) skeleton
    assert both.shape == (30, 80, 3)
    np.testing.assert_array_equal(both[:, :40], drawing.overlay(image, heatmap, 0.4))
    assert not np.array_equal(both[:, 40:], image)  # "no hand found" is written on it
    assert drawing.explanation(image, None, None, True, 0.4).shape == (30, 40, 3)  # landmarks-only model
    np.testing.assert_array_equal(drawing.explanation(image, None, None, False, 0.4), image)


def test_unique_names_are_deterministic_and_distinct():
    assert explain.unique_names(["a", "a", "a_2", "b", "a"]) == ["a", "a_3", "a_2", "b", "a_4"]
    assert explain.safe_name("del/x y") == "del_x_y"


def test_choose_images_per_class_and_misclassified_once():
    test_paths = ["a1.jpg", "a2.jpg", "b1.jpg", "b2.jpg", "c1.jpg"]
    labels = ["A", "A", "B", "B", "C"]
    wrong = [("a2.jpg", "A", "B"), ("c1.jpg", "C", "A"), ("b2.jpg", "B", "C")]
    chosen = explain.choose_images(test_paths, labels, wrong, per_class=1, max_misclassified=2)
    assert [c.name for c in chosen] == ["A_a1", "B_b1", "misclassified_A_as_B_a2", "misclassified_C_as_A_c1"]


def write_image(path: Path, size=(48, 40), mode="RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path.as_posix()


@pytest.fixture
def project(tmp_path, model):
    """A project with a saved tiny model of the variant VARIANT, a test manifest (with one unreadable file) and
    the variant's misclassified.csv."""
    paths = Paths(tmp_path)
    save_tiny(model, paths.variant(VARIANT).model_dir)
    rows = [("A", "A1"), ("A", "A2"), ("B", "Bbad"), ("B", "B1"), ("C", "C1")]
    manifest = ["path,label"]
    for label, stem in rows:
        relative = f"data/raw/{label}/{stem}.jpg"
        if stem == "Bbad":
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_text("not a jpeg")
        else:
            write_image(tmp_path / relative)
        manifest.append(f"{relative},{label}")
    paths.split.mkdir(parents=True)
    paths.manifest("test").write_text("\n".join(manifest) + "\n")
    paths.variant(VARIANT).eval.mkdir(parents=True)
    (paths.variant(VARIANT).eval / "misclassified.csv").write_text(
        "path,label,predicted,probability\n"
        "data/raw/A/A2.jpg,A,B,0.7\n"
        "data/raw/C/C1.jpg,C,A,0.6\n")
    return paths


PARAMS = ExplainParams(per_class=1, max_misclassified=5, alpha=0.4, target="true")
EXPECTED = {"A_A1.png", "misclassified_A_as_B_A2.png", "misclassified_C_as_A_C1.png", "grid.png"}


def test_explain_writes_one_overlay_per_chosen_image_and_a_grid(project, capsys):
    summary = explain.explain_test_set(project, project.variant(VARIANT), PARAMS, batch_size=2)
    out = project.root / "plots" / "variants" / VARIANT / "explain"
    assert summary.out_dir == out
    assert {p.name for p in out.iterdir()} == EXPECTED
    assert [p.name for p in project.plots.iterdir()] == ["variants"]  # nothing outside the variant's folder
    assert (summary.written, summary.misclassified, summary.skipped) == (3, 2, 1)
    assert "Bbad.jpg" in capsys.readouterr().err
    for name in EXPECTED:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 50


@needs_bundle
def test_explain_with_a_hands_model_shows_grad_cam_beside_the_skeleton(project, monkeypatch):
    featurizers = ("backbone", "hand_landmarks")
    copy_bundle_beside(save_tiny(tiny_classifier(featurizers=featurizers), project.variant(VARIANT).model_dir,
                                 featurizers))
    drawn = {}
    monkeypatch.setattr(explain, "save_titled_overlay", lambda path, rgb, title: drawn.update({Path(path).name: rgb}))
    summary = explain.explain_test_set(project, project.variant(VARIANT), PARAMS)
    assert set(drawn) == EXPECTED - {"grid.png"} and summary.written == 3
    for rgb in drawn.values():  # the 48 x 40 photo twice: Grad-CAM overlay, then the hand (or "no hand found")
        assert rgb.shape == (40, 96, 3)
        assert not np.array_equal(rgb[:, :48], rgb[:, 48:])


def test_explain_failure_keeps_the_previous_plots(project, monkeypatch):
    variant = project.variant(VARIANT)
    old = variant.plots / "explain"
    old.mkdir(parents=True)
    (old / "old.png").write_bytes(b"previous run")
    calls = []

    def fail_on_second(path, overlay_rgb, title):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        Path(path).write_bytes(b"new")

    monkeypatch.setattr(explain, "save_titled_overlay", fail_on_second)
    with pytest.raises(RuntimeError, match="disk full"):
        explain.explain_test_set(project, variant, PARAMS)
    assert [p.name for p in variant.plots.iterdir()] == ["explain"]  # no temporary folder left behind
    assert [p.name for p in old.iterdir()] == ["old.png"]


def test_explain_stage_script(project, monkeypatch, capsys):
    shutil.copy(PROJECT / "params.yaml", project.params)
    script = str(PROJECT / "stages" / "explain.py")
    monkeypatch.chdir(project.root)
    monkeypatch.setattr(sys, "argv", [script, VARIANT])  # as dvc.yaml's explain@VARIANT runs it
    runpy.run_path(script, run_name="__main__")
    out = capsys.readouterr().out
    assert out.startswith(f"explain {VARIANT}: 3 ") and "2 misclassified" in out and "1 unreadable" in out, out
    assert (project.variant(VARIANT).plots / "explain" / "grid.png").is_file()


def test_explain_reads_the_model_and_misclassified_photos_of_its_own_variant(project):
    """Two variants side by side: each one's explanations come from its own model folder and misclassified.csv."""
    other = project.variant("other")
    other.eval.mkdir(parents=True)
    (other.eval / "misclassified.csv").write_text("path,label,predicted,probability\ndata/raw/B/B1.jpg,B,C,0.9\n")
    with pytest.raises(PipelineError, match="models/other/model.keras"):  # not VARIANT's model
        explain.explain_test_set(project, other, PARAMS)
    save_tiny(tiny_classifier(head_sign=(-1.0, 1.0, -1.0)), other.model_dir)
    summary = explain.explain_test_set(project, other, PARAMS)
    assert summary.out_dir == other.plots / "explain" and summary.misclassified == 1
    assert {p.name for p in summary.out_dir.iterdir()} == {"A_A1.png", "C_C1.png", "misclassified_B_as_C_B1.png",
                                                          "grid.png"}
    assert not (project.variant(VARIANT).plots / "explain").exists()
