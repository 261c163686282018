"""benchmarks/run.py's own logic and its family modules' (the measurements themselves run in `make bench`, never
here)."""
import ast
import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402  (first: it puts this checkout on sys.path)
import bench_variants  # noqa: E402
import experiments  # noqa: E402
import head_growth  # noqa: E402
import memory  # noqa: E402
import motion_clips  # noqa: E402
import motion_letters  # noqa: E402
import personalisation  # noqa: E402
import run as bench  # noqa: E402
import scale  # noqa: E402
import serving  # noqa: E402
import serving_flood  # noqa: E402
import throughput  # noqa: E402

from asl_pipeline import dataset  # noqa: E402
from asl_pipeline.config import parse_params  # noqa: E402

RAW_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
READS_LANDMARKS = {"model": {"featurizers": ["hand_landmarks"]}, "train": {"head": "svm"}}
READS_BACKBONE = {"model": {"featurizers": ["backbone"]}, "train": {"head": "mlp"}}
READS_BOTH = {"model": {"featurizers": ["backbone", "hand_landmarks"]}, "train": {"head": "svm"}}


def project(variants: dict, served: str):
    """The repo's params.yaml with these variants and serve.model, parsed."""
    raw = copy.deepcopy(RAW_PARAMS)
    raw["variants"], raw["serve"] = copy.deepcopy(variants), {"model": served}
    return parse_params(raw)


def test_4n_copies_are_new_bytes_and_new_frames_of_the_same_photo(tmp_path):
    source = tmp_path / "source"
    (source / "asl_alphabet_train" / "A").mkdir(parents=True)
    (source / "asl_alphabet_test").mkdir()
    rng = np.random.default_rng(0)
    for name in ("A7.jpg", "A2999.jpg"):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).save(source / "asl_alphabet_train" / "A" / name,
                                                                           quality=90)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source / "asl_alphabet_test" / "A_test.jpg")

    assert scale.build_4n(source, tmp_path / "big") == 8
    photos = sorted((tmp_path / "big" / "asl_alphabet_train" / "A").glob("*.jpg"))
    assert len(photos) == 8
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}) == 8  # de-duplication keeps all
    frames = sorted(dataset.Item(p.name, "A", "", None).frame for p in photos)
    assert frames == sorted([7, 2999] + [f + k * scale.FRAME_OFFSET for f in (7, 2999) for k in (1, 2, 3)])
    original = np.asarray(Image.open(source / "asl_alphabet_train" / "A" / "A7.jpg"), dtype=float)
    shifted = np.asarray(Image.open(tmp_path / "big" / "asl_alphabet_train" / "A" / f"A{7 + scale.FRAME_OFFSET}.jpg"),
                         dtype=float)
    assert shifted.shape == original.shape
    assert np.abs(shifted[:, 1:] - original[:, :-1]).mean() < np.abs(shifted - original).mean()  # one pixel right
    assert (tmp_path / "big" / "asl_alphabet_test" / "A_test.jpg").is_file()
    assert scale.build_4n(source, tmp_path / "big") == 8  # reused, not rebuilt


def test_the_table_marks_a_missed_target():
    text = bench.table({"featurize_vs_forward": 0.9, "rss_growth": 1.0, "hand_landmarks_images_per_s": 40.0}, {})
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert lines["featurize_vs_forward"].endswith("MISSED")
    assert lines["rss_growth"].endswith("ok")
    assert lines["hand_landmarks_images_per_s"].split()[1:] == ["40.000"]  # no target, no mark


def test_the_repo_params_give_the_reader_to_landmark_figures_and_resnet50_to_backbone_figures():
    params = common.repo_params()
    assert bench_variants.variant_reading(params, bench_variants.LANDMARKS, "figures") == "reader"
    assert bench_variants.variant_reading(params, bench_variants.BACKBONE, "figures") == "resnet50"
    assert common.variant_params(bench_variants.LANDMARKS, "figures") == params.variant("reader")
    assert common.variant_params(bench_variants.BACKBONE, "figures").train.head == \
        params.variant("resnet50").train.head == "mlp"
    assert bench_variants.served_reader(params) == "reader"


def test_figures_take_the_served_variant_first_then_the_first_that_reads_the_same():
    variants = {"fused": READS_BOTH, "hands_b": READS_LANDMARKS, "hands_a": READS_LANDMARKS, "cnn": READS_BACKBONE}
    assert bench_variants.variant_reading(project(variants, "hands_a"), ["hand_landmarks"], "figures") == "hands_a"
    assert bench_variants.variant_reading(project(variants, "fused"), ["hand_landmarks"], "figures") == "hands_b"
    assert bench_variants.variant_reading(project(variants, "fused"), ["backbone"], "figures") == "cnn"


def test_no_variant_reading_the_figures_input_is_an_error_naming_every_variant():
    with pytest.raises(SystemExit, match=r"exp30.*\['backbone'\].*fused: \['backbone', 'hand_landmarks'\]"):
        bench_variants.variant_reading(project({"fused": READS_BOTH, "hands": READS_LANDMARKS}, "hands"),
                                       ["backbone"], "exp30")


def test_personalisation_measures_the_served_variant_only_if_it_reads_hand_landmarks_alone():
    variants = {"cnn": READS_BACKBONE, "hands": READS_LANDMARKS}
    assert bench_variants.served_reader(project(variants, "hands")) == "hands"
    with pytest.raises(SystemExit, match=r"serve.model is 'cnn', which reads \['backbone'\]: pass --variant hands"):
        bench_variants.served_reader(project(variants, "cnn"))
    assert bench_variants.served_reader(project(variants, "cnn"), "hands") == "hands"  # --variant
    with pytest.raises(SystemExit, match=r"variant 'cnn', which reads"):
        bench_variants.served_reader(project(variants, "hands"), "cnn")
    with pytest.raises(SystemExit, match=r"no variant 'readr'"):
        bench_variants.served_reader(project(variants, "hands"), "readr")
    with pytest.raises(SystemExit, match=r"add a variant with model.featurizers: \['hand_landmarks'\]"):
        bench_variants.served_reader(project({"cnn": READS_BACKBONE, "fused": READS_BOTH}, "cnn"))


def test_the_scale_run_keeps_every_variant_or_the_chosen_ones_with_a_served_one_among_them():
    raw = copy.deepcopy(RAW_PARAMS)
    assert scale.scale_variants(raw, None) == raw
    only = scale.scale_variants(raw, ["resnet50"])
    assert list(only["variants"]) == ["resnet50"] and only["serve"]["model"] == "resnet50"
    assert parse_params(only).served == "resnet50"  # still a valid params.yaml
    kept = scale.scale_variants(raw, ["resnet50", "reader"])
    assert list(kept["variants"]) == list(raw["variants"]) and kept["serve"] == raw["serve"]
    assert raw["variants"] == RAW_PARAMS["variants"]  # the input is left alone
    with pytest.raises(SystemExit, match="readr"):
        scale.scale_variants(raw, ["readr"])


def test_the_flood_alone_is_merged_into_the_results_beside_the_other_figures(tmp_path, monkeypatch):
    output = tmp_path / "results.json"
    output.write_text(json.dumps({"live_page_fps": 40.5, "flood_peak_rss_mib": 9999.0, "machine": {"cores": 2},
                                  "about": {"date": "earlier"}}))
    monkeypatch.setattr(serving_flood, "measure",
                        lambda model: {"flood_peak_rss_mib": 1234.56789, "flood_unanswered": 0})
    monkeypatch.setattr(sys, "argv", ["run.py", "--only", "flood", "--output", str(output)])
    bench.main()
    results = json.loads(output.read_text())
    assert results["live_page_fps"] == 40.5 and results["machine"] == {"cores": 2}  # the others' figures stay
    assert results["flood_peak_rss_mib"] == 1234.5679 and results["flood_unanswered"] == 0
    assert results["about"]["date"] == "earlier" and "serving_flood.py" in results["about"]["flood"]


FAMILIES = (throughput, experiments, serving, motion_letters, memory, serving_flood, personalisation, scale,
            head_growth)


def test_the_families_declare_every_figure_of_results_json_once():
    """A figure renamed in a family's KEYS, or in the committed results.json, shows here without `make bench`."""
    set_names = [Path(folder).name for folder in RAW_PARAMS["evaluate"]["extra_sets"]]
    per_set = [personalisation.SUMMARY.format(k=k, set_name=name) for name in set_names for k in personalisation.KS]
    declared = [key for family in FAMILIES for key in family.KEYS] + per_set
    assert len(declared) == len(set(declared))  # no figure in two families
    committed = json.loads((REPO / "benchmarks" / "results.json").read_text())
    assert set(declared) == set(committed) - {"machine", "about"}
    assert set(bench.TARGETS) <= set(declared)


def test_every_family_documents_its_keys_and_common_imports_no_family():
    for module in FAMILIES:
        assert module.__doc__ and "Keys:" in module.__doc__, module.__name__
    family_names = {module.__name__ for module in FAMILIES} | {"run"}
    tree = ast.parse(Path(common.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & family_names


def test_each_webcam_person_is_in_one_fold_and_the_folds_are_even():
    people = [f"cam{number:02d}" for number in range(1, 22)]
    folds = motion_clips.person_folds(people)
    assert sorted(folds) == people and sorted(set(folds.values())) == list(range(motion_clips.FOLDS))
    sizes = [list(folds.values()).count(fold) for fold in range(motion_clips.FOLDS)]
    assert max(sizes) - min(sizes) <= 1


def test_a_word_of_clips_has_a_second_without_a_hand_between_letters_and_spells_each_letter():
    hand = np.zeros((21, 3), np.float32)
    clip = {"seconds": np.arange(8) / 10, "landmarks": np.stack([hand] * 8)}
    classes = ("A", "B", "nothing")
    reads = {letter: np.tile(np.eye(3, dtype=np.float32)[classes.index(letter)] * 0.6, (8, 1)) for letter in "AB"}
    frames, rows = motion_clips.word_frames([clip, clip, clip], [reads["A"], reads["A"], reads["B"]])
    assert len(frames["seconds"]) == len(rows) == 3 * 8 + 2 * motion_clips.READ_FPS
    assert (np.diff(frames["seconds"]) > 0).all()
    assert np.isnan(frames["landmarks"][8:18, 0, 0]).all() and not np.isnan(frames["landmarks"][:8]).any()
    assert motion_clips.spell_frames(frames, rows, classes) == "AAB"  # the double letter: the pause releases it


# ---------------------------------------------------------------- head growth

def test_grown_rows_make_new_signers_of_the_extra_people_and_more_frames_of_the_kaggle_signer():
    from asl_pipeline import signers

    arrays = {"hand": np.arange(12, dtype=np.float32).reshape(4, 3),
              "labels": np.array(["A", "B", "A", "B"]), "views": np.zeros(4, np.int16),
              "paths": np.array(["data/raw/asl_alphabet_train/A/A1.jpg", "data/raw/asl_alphabet_train/B/B2.jpg",
                                 "data/extra/webcams/A/cam07_A_0033.jpg", "data/extra/signers/B/signer2_B_0001.jpg"]),
              "origins": np.array(["dataset", "dataset", "webcams", "signers"])}
    grown = head_growth.grown(arrays, 2, "hand")
    assert {key: len(value) for key, value in grown.items()} == {key: 12 for key in arrays}
    assert list(signers.signers_of(grown)) == ["kaggle", "kaggle", "cam07", "signer2",
                                               "kaggle", "kaggle", "cam0701", "signer201",
                                               "kaggle", "kaggle", "cam0702", "signer202"]
    assert len(np.unique(grown["hand"], axis=0)) == 12  # jittered: no two rows alike
    np.testing.assert_allclose(grown["hand"][4:8], arrays["hand"], atol=0.1)  # ... by 1% of the spread
    assert list(grown["labels"]) == list(arrays["labels"]) * 3


@pytest.mark.parametrize("power", [1.0, 1.2, 2.0])
def test_growth_exponent_is_the_power_of_the_rows(power):
    rows = [1000, 2000, 4000]
    assert head_growth.exponent(rows, [3.0 * r ** power for r in rows]) == pytest.approx(power)
