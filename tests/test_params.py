"""params.yaml is validated when a stage starts: every error names the param, the value and what is allowed."""
import copy
import math
from pathlib import Path

import pytest
import yaml

from asl_pipeline.backbones import BACKBONES
from asl_pipeline.config import (ALL_CLASSES, FEATURIZERS, HAND_FEATURE_GROUPS, HAND_MODEL_SOURCES, HEADS, PRECISIONS,
                                 SECTIONS, load_params, parse_params)
from asl_pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
DELETE = object()


def changed(**dotted) -> dict:
    """The repo's params with `section__key=value` changes that every variant sees: the key is set in each
    variant that sets its own, and in the top-level section unless every variant does (DELETE removes it from
    all of them)."""
    raw = copy.deepcopy(BASE)
    for name, value in dotted.items():
        section, key = name.split("__")
        variants = [overrides or {} for overrides in raw["variants"].values()]
        places = [overrides[section] for overrides in variants if key in overrides.get(section, {})]
        if len(places) < len(variants):
            places.append(raw[section])
        for place in places:
            if value is DELETE:
                place.pop(key, None)
            else:
                place[key] = value
    return raw


def each_variant(params, section: str) -> list:
    """`section` as every variant of the parsed params sees it."""
    return [getattr(variant, section) for variant in params.variants.values()]


# Every key a variant ends up with: the top-level sections' and those only the variants set (model.featurizers,
# train.head), and serve's.
KEYS = sorted({(section, key) for section in SECTIONS for key in BASE[section]}
              | {(section, key) for overrides in BASE["variants"].values() for section, keys in overrides.items()
                 for key in keys} | {("serve", key) for key in BASE["serve"]})


def error(raw) -> str:
    with pytest.raises(PipelineError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert list(params.variants) == list(BASE["variants"]) and len(params.variants) >= 2
    assert params.served == BASE["serve"]["model"] and params.served in params.variants
    for name, overrides in BASE["variants"].items():
        variant = params.variant(name)
        assert variant.train.epochs == BASE["train"]["epochs"]
        assert variant.model.backbone in BACKBONES
        # Each variant sets the two keys the top-level sections leave out.
        assert set(variant.model.featurizers) == set(overrides["model"]["featurizers"])
        assert variant.train.head == overrides["train"]["head"]


@pytest.mark.parametrize("section, key", KEYS)
def test_a_missing_key_is_named(section, key):
    message = error(changed(**{f"{section}__{key}": DELETE}))
    assert f"'{section}.{key}'" in message and "missing" in message


@pytest.mark.parametrize("section", list(BASE))
def test_a_missing_section_is_named(section):
    raw = copy.deepcopy(BASE)
    del raw[section]
    assert f"'{section}'" in error(raw)


def test_a_misspelt_key_is_refused_not_ignored():
    message = error(changed(train__lerning_rate=1e-5))
    assert "train.lerning_rate" in message and "learning_rate" in message


def test_an_unknown_section_is_refused():
    raw = copy.deepcopy(BASE)
    raw["trian"] = {"epochs": 3}
    assert "trian" in error(raw)


def test_params_that_are_not_a_mapping():
    assert "mapping" in error(["split", "train"])


NUMBER_RULES = {  # param: (bad values, what the message must say is allowed)
    "train.epochs": ([0, -3, "ten", 2.5, True, None], ">= 1"),
    "train.batch_size": ([0, "64"], ">= 1"),
    "train.patience": ([0], ">= 1"),
    "train.hidden_units": ([-1], ">= 0"),
    "train.seed": ([-1, 4.2], ">= 0"),
    "train.learning_rate": ([0, -0.001, "fast", "1e-5x", math.inf, math.nan, [0.1]], "> 0"),
    "train.fine_tune_learning_rate": ([0, math.inf], "> 0"),
    "train.dropout": ([1, 1.5, -0.1, math.nan], "[0.0, 1.0)"),
    "train.fine_tune_epochs": ([-1], ">= 0"),
    "train.svm_c": ([0, -1.0, "big", math.inf], "> 0"),
    "train.landmark_copies": ([-1, 1.5, "four"], ">= 0"),
    "train.extra_weight": ([0, -2, 2.5, "heavy"], ">= 1"),
    "hands.min_detection_confidence": ([-0.1, 1.5, "high"], "[0, 1]"),
    "hands.min_presence_confidence": ([1.01, math.nan], "[0, 1]"),
    "hands.fallback_min_presence": ([1.5, -1, "off"], "[0, 1]"),
    "hands.border": ([-0.1, 2.5], "[0, 2]"),
    "hands.second_look_gamma": ([0, 1.5, -0.5, "bright"], "(0, 1]"),
    "hands.second_look_border": ([-0.1, 2.5], "[0, 2]"),
    "split.val_fraction": ([-0.1, 1, 1.0, 1.5, "half"], "[0.0, 1.0)"),
    "split.test_fraction": ([-0.01, 1, 2], "[0.0, 1.0)"),
    "split.per_class": ([0, -5, "ALL", 2.5], "all"),
    "split.block_size": ([0], ">= 1"),
    "split.near_duplicate_similarity": ([0, 1.01, -1], "(0, 1]"),
    "featurize.batch_size": ([0], ">= 1"),
    "featurize.augment_copies": ([-1], ">= 0"),
    "evaluate.top_k": ([0], ">= 1"),
    "explain.per_class": ([-1], ">= 0"),
    "explain.max_misclassified": ([-1], ">= 0"),
    "explain.alpha": ([1.5, -0.2], "[0, 1]"),
}
CHOICE_RULES = {  # param: (bad values, every value the message must list)
    "model.backbone": (["resnet51", "ResNet50", 50], sorted(BACKBONES)),
    "featurize.precision": (["float16", "bf16"], PRECISIONS),
    "split.strategy": (["blocks", "Random"], ["block", "random"]),
    "data.source": (["s3", "Kaggle"], ["auto", "kaggle", "local"]),
    "explain.target": (["both"], ["predicted", "true"]),
    "featurize.horizontal_flip": (["yes", 1, "true"], ["true", "false"]),
    "data.kaggle_dataset": (["asl-alphabet", "a/b/c"], ["owner/dataset"]),
    "model.weights": ([None, 0], ["imagenet", "none"]),
    "train.head": (["SVM", "knn", None], HEADS),
    "hands.source": (["kaggle", "Local"], HAND_MODEL_SOURCES),
    "hands.mirror_left": (["yes", 0], ["true", "false"]),
    "hands.local_file": ([None, 3], ["hand_landmarker.task"]),
    "featurize.crop_to_hand": (["no", 1], ["true", "false"]),
    "model.featurizers": (["backbone", [], ["backbone", "backbone"], ["hands"], ["Backbone"]], FEATURIZERS),
    "hands.features": (["angles", [], ["angles", "angles"], ["keypoints", "depth"]], HAND_FEATURE_GROUPS),
    "evaluate.extra_sets": (["../shared/data/asl-other-dev", [""], [3], None], ["list of folder paths", "[]"]),
    "data.extra_train": (["data/my-hand", ["data/my-hand"], {"mine": ""}, {"mine": 3}, {"../up": "data/x"},
                          {"a b": "x"}, {"kaggle": "data/x"}], ["mapping of names", ".zip", "{my-hand: data/my-hand}"]),
    "split.extra_exclude": (["J", ["J", "J"], ["j"], None], ["class names", "[]"]),
    "data.extra_kaggle": (["owner/name", ["nobody"], ["a/b/c"], ["a/b", "a/b"], [3]], ["owner/name", "[]"]),
}
CASES = ([(name, value, [allowed]) for name, (values, allowed) in NUMBER_RULES.items() for value in values]
         + [(name, value, list(allowed)) for name, (values, allowed) in CHOICE_RULES.items() for value in values])


@pytest.mark.parametrize("name, value, allowed", CASES, ids=[f"{n}={v!r}" for n, v, _ in CASES])
def test_a_bad_value_names_the_param_the_value_and_what_is_allowed(name, value, allowed):
    section, key = name.split(".")
    message = error(changed(**{f"{section}__{key}": value}))
    assert f"'{name}'" in message
    # The value as given, or as read (an int given for a float param is shown as that float).
    shown = {repr(value)} | ({repr(float(value))} if type(value) is int else set())
    assert any(text in message for text in shown), (shown, message)
    for fragment in allowed:
        assert fragment in message, fragment


@pytest.mark.parametrize("name, value", [("model.featurizers", [["backbone"]]), ("hands.features", [{"angles": 1}])])
def test_a_nested_list_is_named_not_a_crash(name, value):
    section, key = name.split(".")
    assert f"'{name}'" in error(changed(**{f"{section}__{key}": value}))


@pytest.mark.parametrize("classes, problem", [
    (["A", "B", "Ä"], "'Ä'"), (["A", "b"], "'b'"), (["A", "SPACE"], "'SPACE'"), (["A"], "at least 2"),
    (["A", "B", "A"], "repeats"), ("A,B", "'A,B'"), ([], "at least 2")])
def test_unknown_or_too_few_class_names(classes, problem):
    message = error(changed(split__classes=classes))
    assert "'split.classes'" in message and problem in message
    assert all(name in message for name in ALL_CLASSES)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_image_size_below_the_backbones_minimum(backbone):
    minimum = BACKBONES[backbone].min_image_size
    message = error(changed(model__backbone=backbone, model__image_size=minimum - 1))
    assert "'model.image_size'" in message and repr(minimum - 1) in message
    assert str(minimum) in message and backbone in message
    accepted = parse_params(changed(model__backbone=backbone, model__image_size=minimum))
    assert [model.image_size for model in each_variant(accepted, "model")] == [minimum] * len(BASE["variants"])


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.7, 0.4), (0.25, 0.75)])
def test_fractions_summing_to_one_or_more(val, test):
    message = error(changed(split__val_fraction=val, split__test_fraction=test))
    assert "'split.val_fraction'" in message and "'split.test_fraction'" in message
    assert str(val) in message and str(test) in message and "below 1" in message
    just_below = changed(split__val_fraction=val, split__test_fraction=round(1 - val - 0.01, 6))
    assert parse_params(just_below).split.val_fraction == val


@pytest.mark.parametrize("name, value", [
    ("train.epochs", 1), ("train.hidden_units", 0), ("train.dropout", 0), ("train.dropout", 0.99),
    ("split.val_fraction", 0), ("split.test_fraction", 0.0), ("split.per_class", "all"), ("split.per_class", 1),
    ("split.near_duplicate_similarity", 1), ("split.classes", ["B", "A"]), ("split.classes", "all"),
    ("evaluate.top_k", 1), ("explain.alpha", 0), ("explain.alpha", 1), ("explain.per_class", 0),
    ("train.learning_rate", 1), ("featurize.augment_copies", 0), ("hands.min_detection_confidence", 0),
    ("hands.min_presence_confidence", 1), ("hands.border", 0), ("hands.border", 2), ("hands.fallback_min_presence", 1),
    ("train.svm_c", 1e-6), ("evaluate.extra_sets", [])])
def test_values_on_the_boundary_are_accepted(name, value):
    section, key = name.split(".")
    for parsed in each_variant(parse_params(changed(**{f"{section}__{key}": value})), section):
        got = getattr(parsed, key)
        if name == "evaluate.extra_sets":
            assert got == tuple(value)
        elif name == "split.classes":
            assert got == (ALL_CLASSES if value == "all" else tuple(sorted(value, key=ALL_CLASSES.index)))
        elif name == "split.per_class":
            assert got == (None if value == "all" else value)
        else:
            assert got == value and type(got) is type(BASE[section][key])


def test_fallback_min_presence_null_turns_the_fallback_off():
    assert parse_params(changed(hands__fallback_min_presence=None)).hands.fallback_min_presence is None
    assert parse_params(changed(hands__fallback_min_presence=0.7)).hands.fallback_min_presence == 0.7


def test_second_look_gamma_null_turns_the_second_look_off():
    assert parse_params(changed(hands__second_look_gamma=None)).hands.second_look_gamma is None
    assert parse_params(changed(hands__second_look_gamma=1)).hands.second_look_gamma == 1.0


def test_extra_train_entries_and_kaggle_datasets_are_read_as_given():
    data = parse_params(changed(data__extra_train={"my-hand": "data/my-hand", "two.zip": "x/two.zip"},
                                data__extra_kaggle=["owner/name"])).data
    assert data.extra_train == {"my-hand": "data/my-hand", "two.zip": "x/two.zip"}
    assert data.extra_kaggle == ("owner/name",)
    assert parse_params(changed(data__extra_train={})).data.extra_train == {}


@pytest.mark.parametrize("key, names", [("model.featurizers", FEATURIZERS), ("hands.features", HAND_FEATURE_GROUPS)])
def test_feature_lists_come_back_in_their_fixed_order(key, names):
    """The order of the feature blocks is the order of the head's input columns: it must not follow the
    order someone happened to write the list in."""
    section, name = key.split(".")
    for subset in ([names[-1], names[0]], list(reversed(names)), [names[1]]):
        raw = changed(**{f"{section}__{name}": subset}, featurize__crop_to_hand=False, train__landmark_copies=0)
        for parsed in each_variant(parse_params(raw), section):
            assert getattr(parsed, name) == tuple(n for n in names if n in subset)


@pytest.mark.parametrize("changes, named, fragments", [
    (dict(model__featurizers=["hand_landmarks"], featurize__crop_to_hand=True),
     "'featurize.crop_to_hand'", ["'model.featurizers'", "backbone", "crop_to_hand: false"]),
    (dict(model__featurizers=["hand_landmarks"], train__head="mlp", train__fine_tune_epochs=2),
     "'train.fine_tune_epochs'", ["'model.featurizers'", "backbone", "fine_tune_epochs: 0"]),
    (dict(model__featurizers=["backbone", "hand_landmarks"], train__head="svm", train__fine_tune_epochs=1,
          train__landmark_copies=0),
     "'train.fine_tune_epochs'", ["train.head: mlp", "'svm'", "fine_tune_epochs: 0"]),
    (dict(model__featurizers=["backbone", "hand_landmarks"], train__landmark_copies=2),
     "'train.landmark_copies'", ["'model.featurizers'", "backbone", "landmark_copies: 0"]),
    (dict(hands__features=["distances", "angles"], train__landmark_copies=2),
     "'train.landmark_copies'", ["keypoints", "hands.features", "landmark_copies: 0"]),
], ids=["crop without backbone", "fine-tuning without backbone", "fine-tuning an svm head",
        "reshaped hands beside a backbone", "reshaped hands without keypoints"])
def test_params_that_contradict_each_other_name_both_and_the_fix(changes, named, fragments):
    message = error(changed(**changes))
    assert named in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("changes", [
    dict(model__featurizers=["backbone"], featurize__crop_to_hand=True, train__landmark_copies=0),
    dict(model__featurizers=["backbone", "hand_landmarks"], featurize__crop_to_hand=True, train__landmark_copies=0),
    dict(model__featurizers=["backbone", "hand_landmarks"], train__head="mlp", train__fine_tune_epochs=1,
         train__landmark_copies=0),
    dict(model__featurizers=["hand_landmarks"], train__head="svm", train__fine_tune_epochs=0),
])
def test_consistent_combinations_are_accepted(changes):
    parse_params(changed(**changes))


def test_yaml_1_2_floats_written_by_dvc_set_are_accepted(tmp_path):
    """`dvc exp run -S train.learning_rate=1e-5` writes `1e-05`, which PyYAML (YAML 1.1) reads as a string."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    new = {"learning_rate": "1e-05", "fine_tune_learning_rate": "3E-6", "dropout": "5e-1"}
    lines = []
    for line in text.splitlines():
        key = line.strip().split(":")[0]
        lines.append(f"  {key}: {new[key]}" if line.startswith("  ") and key in new else line)
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(raw["train"]["learning_rate"], str)  # the trap this test is about
    for train in each_variant(load_params(path), "train"):
        assert (train.learning_rate, train.fine_tune_learning_rate, train.dropout) == (1e-5, 3e-6, 0.5)
        assert all(type(v) is float for v in (train.learning_rate, train.fine_tune_learning_rate, train.dropout))


def test_missing_params_file_names_it(tmp_path):
    with pytest.raises(PipelineError, match="params.yaml not found"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("text, where", [
    ("split:\n  seed: [1, 2\ntrain: {}\n", "line 3"),
    ("split:\n\tseed: 1\n", "line 2"),
    ("split:\n  seed: 1\n seed: 2\n", "line 3")])
def test_invalid_yaml_is_one_line_naming_file_and_line(tmp_path, text, where):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    message = str(caught.value)
    assert str(path) in message and where in message and "\n" not in message


def test_params_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("split:\n  classes: [Ä, B]\n".encode("latin-1"))
    with pytest.raises(PipelineError, match="UTF-8"):
        load_params(path)


@pytest.mark.parametrize("edit", ["bad value", "invalid yaml"])
def test_stage_with_bad_params_exits_1_with_one_line_and_keeps_outputs(stage_project, edit):
    previous = stage_project.root / "data" / "split" / "train.csv"
    previous.parent.mkdir(parents=True)
    previous.write_text("path,label\nprevious,A\n", encoding="utf-8")
    stage_project.add_noise_images(("A", "B"), 4)
    if edit == "bad value":
        stage_project.set(split={"val_fraction": 1.5})
        expected = ["'split.val_fraction'", "1.5", "[0.0, 1.0)"]
    else:
        stage_project.write_params("split:\n  seed: [1, 2\n")
        expected = ["params.yaml", "line"]
    result = stage_project.run("split")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert all(fragment in result.stderr for fragment in expected)
    assert previous.read_text(encoding="utf-8") == "path,label\nprevious,A\n"
    assert not (stage_project.root / "metrics").exists()
