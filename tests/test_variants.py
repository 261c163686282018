"""Model variants: params.yaml `variants` (each sets model, featurize and train keys over the top-level sections),
`serve.model`, the per-variant stages' one argument, the params record in run.json, and the compare stage's
accuracy table."""
import copy
import dataclasses
import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from asl_pipeline import evaluation
from asl_pipeline.config import (SECTIONS, VARIANT_SECTIONS, Params, Paths, load_params, params_from_record,
                                 parse_params, variant_stage)
from asl_pipeline.errors import PipelineError
from test_params import BASE, error

REPO = Path(__file__).resolve().parents[1]
SHARED_SECTIONS = tuple(s for s in SECTIONS if s not in VARIANT_SECTIONS)
PER_VARIANT_STAGES = ("featurize", "train", "evaluate", "explain")


def raw_params(**variants) -> dict:
    """The repo's params with `variants` replaced by the given ones (name -> overrides); serve.model names the
    first."""
    raw = copy.deepcopy(BASE)
    raw["variants"] = copy.deepcopy(variants)
    raw["serve"] = {"model": next(iter(variants))}
    return raw


def reader(**train) -> dict:
    return {"model": {"featurizers": ["hand_landmarks"]}, "train": {"head": "svm", **train}}


def resnet(**train) -> dict:
    return {"model": {"featurizers": ["backbone"]}, "train": {"head": "mlp", **train}}


# ---------------------------------------------------------------- overrides

def test_a_variant_overrides_top_level_keys_for_itself_only():
    raw = raw_params(reader=reader(landmark_copies=3), resnet50=resnet(epochs=3))
    raw["variants"]["reader"]["featurize"] = {"batch_size": 7}
    raw["train"].update(epochs=20, landmark_copies=0)
    before = copy.deepcopy(raw)
    params = parse_params(raw)
    assert raw == before  # the merge leaves the raw params alone
    first, second = params.variant("reader"), params.variant("resnet50")
    assert (first.train.epochs, second.train.epochs) == (20, 3)
    assert (first.train.landmark_copies, second.train.landmark_copies) == (3, 0)
    assert (first.featurize.batch_size, second.featurize.batch_size) == (7, BASE["featurize"]["batch_size"])
    assert (first.model.featurizers, second.model.featurizers) == (("hand_landmarks",), ("backbone",))
    assert (first.train.head, second.train.head) == ("svm", "mlp")
    # The keys a variant does not set come from the top-level section.
    for variant in (first, second):
        assert variant.train.learning_rate == BASE["train"]["learning_rate"]
        assert variant.model.backbone == BASE["model"]["backbone"]
        assert variant.model.image_size == BASE["model"]["image_size"]


def test_variants_keep_the_order_of_params_yaml_and_serve_names_one():
    params = parse_params(raw_params(resnet50=resnet(), reader=reader()) | {"serve": {"model": "reader"}})
    assert list(params.variants) == ["resnet50", "reader"]
    assert params.served == "reader"
    assert all(isinstance(variant, Params) for variant in params.variants.values())


def test_a_variant_that_sets_nothing_takes_the_top_level_sections():
    raw = raw_params(plain=None, reader=reader())
    raw["model"]["featurizers"] = ["backbone"]
    raw["train"]["head"] = "mlp"
    params = parse_params(raw)
    assert params.variant("plain").model.featurizers == ("backbone",)
    assert params.variant("plain").train.head == "mlp"
    assert params.variant("reader").model.featurizers == ("hand_landmarks",)  # its own keys still win


def test_shared_sections_are_alike_in_every_variant():
    raw = raw_params(reader=reader(), resnet50=resnet())
    raw["split"]["seed"], raw["explain"]["per_class"] = 7, 3
    params = parse_params(raw)
    for section in SHARED_SECTIONS:
        values = [getattr(variant, section) for variant in params.variants.values()]
        assert all(value == getattr(params, section) for value in values), section
    assert params.split.seed == 7 and params.explain.per_class == 3
    assert all(variant.split.seed == 7 for variant in params.variants.values())


def test_an_unknown_variant_names_the_known_ones():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(PipelineError) as caught:
        params.variant("nope")
    message = str(caught.value)
    assert "'nope'" in message and all(f"'{name}'" in message for name in BASE["variants"])


def test_the_repo_params_serve_a_variant_they_declare():
    params = load_params(REPO / "params.yaml")
    assert params.variant(params.served) is params.variants[params.served]


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("variants", [None, {}, [], "reader", "delete"])
def test_missing_or_empty_variants(variants):
    raw = raw_params(reader=reader())
    if variants == "delete":
        del raw["variants"]
    else:
        raw["variants"] = variants
    message = error(raw)
    assert "'variants'" in message and "missing or empty" in message


@pytest.mark.parametrize("name", ["Reader", "RESNET", "res/net", "../up", "1st", "_x", "my variant", "", "a" * 33,
                                  "ünicode", 3, True])
def test_a_variant_name_that_cannot_name_folders_and_stages(name):
    raw = raw_params(reader=reader())
    raw["variants"][name] = resnet()
    message = error(raw)
    assert repr(name) in message and "lower-case" in message and "'variants'" in message


@pytest.mark.parametrize("name", ["a", "resnet50-ft", "svm_c10", "x" * 32])
def test_lower_case_names_with_digits_dashes_and_underscores_are_accepted(name):
    params = parse_params(raw_params(**{name: resnet()}))
    assert list(params.variants) == [name] and params.served == name


@pytest.mark.parametrize("section", [*SHARED_SECTIONS, "serve", "variants", "trian"])
def test_a_variant_sets_only_model_featurize_and_train(section):
    raw = raw_params(reader=reader(), resnet50=resnet())
    raw["variants"]["resnet50"][section] = {"seed": 1}
    message = error(raw)
    assert "'variants.resnet50'" in message and repr([section]) in message
    assert all(name in message for name in VARIANT_SECTIONS)


@pytest.mark.parametrize("value", ["svm", ["model"], 3, {"model": "backbone"}, {"train": None},
                                   {"model": ["backbone"]}])
def test_a_variant_that_is_not_a_mapping_of_sections(value):
    raw = raw_params(reader=reader(), resnet50=resnet())
    raw["variants"]["resnet50"] = value
    message = error(raw)
    assert "'variants.resnet50'" in message and "mapping" in message and repr(value) in message


@pytest.mark.parametrize("serve, fragments", [
    ({"model": "resnet"}, ["'serve.model'", "'resnet'", "reader", "resnet50"]),
    ({"model": None}, ["'serve.model'", "None", "reader", "resnet50"]),
    ({}, ["missing 'serve.model'", "reader", "resnet50"]),
    (None, ["'serve'", "missing"]),
    ({"model": "reader", "port": 8501}, ["serve.port", "model"]),
])
def test_serve_model_must_name_a_variant(serve, fragments):
    raw = raw_params(reader=reader(), resnet50=resnet())
    raw["serve"] = serve
    message = error(raw)
    assert all(fragment in message for fragment in fragments), (fragments, message)


@pytest.mark.parametrize("variant, section, key, value, allowed", [
    ("resnet50", "train", "head", "knn", "['kernel', 'svm', 'mlp']"),
    ("resnet50", "model", "featurizers", ["hands"], "backbone"),
    ("reader", "model", "image_size", 10, ">= 32"),
    ("reader", "featurize", "precision", "fp16", "float32"),
    ("reader", "train", "epochs", 0, ">= 1"),
])
def test_a_bad_value_inside_a_variant_names_the_param_and_the_variant(variant, section, key, value, allowed):
    raw = raw_params(reader=reader(), resnet50=resnet())
    raw["variants"][variant].setdefault(section, {})[key] = value
    message = error(raw)
    assert f"'{section}.{key}'" in message and repr(value) in message and allowed in message, message
    assert f"variant '{variant}'" in message and f"variants.{variant}" in message, message
    other = next(name for name in ("reader", "resnet50") if name != variant)
    assert f"variant '{other}'" not in message


def test_a_misspelt_key_inside_a_variant_names_the_variant():
    raw = raw_params(reader=reader(), resnet50=resnet(lerning_rate=0.1))
    message = error(raw)
    assert "train.lerning_rate" in message and "learning_rate" in message and "variant 'resnet50'" in message


def test_a_variant_without_featurizers_or_head_names_what_it_lacks():
    raw = raw_params(reader=reader(), resnet50={"train": {"head": "mlp"}})
    message = error(raw)
    assert "missing 'model.featurizers'" in message and "variant 'resnet50'" in message


@pytest.mark.parametrize("where", ["in the variant", "at the top level"])
def test_a_contradiction_inside_one_variant_names_that_variant(where):
    """Reshaped hands beside a backbone: set in resnet50 itself (reader takes the top level's 0), or at the top
    level where reader sets its own."""
    if where == "in the variant":
        raw = raw_params(reader=reader(), resnet50=resnet(landmark_copies=2))
    else:
        raw = raw_params(reader=reader(landmark_copies=4), resnet50=resnet())
        raw["train"]["landmark_copies"] = 2
    message = error(raw)
    assert "'train.landmark_copies'" in message and "landmark_copies: 0" in message
    assert "variant 'resnet50'" in message and "variant 'reader'" not in message


def test_a_contradiction_with_a_shared_section_names_the_variant_it_breaks():
    raw = raw_params(resnet50=resnet(), reader=reader(landmark_copies=2))
    raw["hands"]["features"] = ["distances", "angles"]  # no keypoints to reshape, which only reader needs
    message = error(raw)
    assert "'train.landmark_copies'" in message and "keypoints" in message and "variant 'reader'" in message


# ---------------------------------------------------------------- the stages' one argument

def test_variant_stage_reads_the_one_argument_and_that_variants_params_and_paths(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    paths, name, params, variant = variant_stage(["/repo/stages/train.py", "resnet50"], tmp_path)
    assert name == "resnet50" and paths.root == tmp_path and variant.model_dir == tmp_path / "models" / "resnet50"
    assert params.train.head == "mlp" and params.model.featurizers == ("backbone",)
    for argv in (["/repo/stages/train.py"], ["/repo/stages/train.py", "reader", "resnet50"]):
        with pytest.raises(PipelineError) as caught:
            variant_stage(argv, tmp_path)
        message = str(caught.value)
        assert message.startswith("usage: python -m stages.train VARIANT") and "'variants'" in message
    with pytest.raises(PipelineError, match="no variant 'vgg'"):
        variant_stage(["/repo/stages/train.py", "vgg"], tmp_path)


def listing(root: Path) -> list:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("stage", PER_VARIANT_STAGES)
@pytest.mark.parametrize("args, expected", [((), "usage: python -m stages.{stage} VARIANT"),
                                            (("nope",), "no variant 'nope'")],
                         ids=["no argument", "unknown variant"])
def test_a_per_variant_stage_needs_a_declared_variant_and_writes_nothing_without(stage_project, monkeypatch, capsys,
                                                                                 stage, args, expected):
    """In this process (the stage scripts as dvc.yaml runs them: test_a_per_variant_stage_run_without_its_argument)."""
    before = listing(stage_project.root)
    script = str(REPO / "stages" / f"{stage}.py")
    monkeypatch.chdir(stage_project.root)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(script, run_name="__main__")
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expected.format(stage=stage) in err
    if args:
        assert "'resnet50'" in err  # the variants params.yaml has
    assert listing(stage_project.root) == before


@pytest.mark.slow
def test_a_per_variant_stage_run_without_its_argument_exits_1_with_the_usage_line(stage_project):
    before = listing(stage_project.root)
    for stage in ("train",):  # one real process (TensorFlow loads in each); the others run in-process above
        result = stage_project.run(stage)
        assert result.returncode == 1, (stage, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: usage: python -m stages.{stage} VARIANT"), (stage, result.stderr[-2000:])
        assert "Traceback" not in result.stderr + result.stdout
    assert listing(stage_project.root) == before


# ---------------------------------------------------------------- the params record in run.json

def test_params_from_record_rebuilds_the_params():
    for name in BASE["variants"]:
        params = load_params(REPO / "params.yaml").variant(name)
        assert params_from_record(dataclasses.asdict(params), Path("models") / name / "run.json") == params


def test_params_from_record_after_json_keeps_every_value():
    """run.json is JSON: lists come back where the params have tuples, and the values are the same."""
    params = load_params(REPO / "params.yaml").variant("reader")
    rebuilt = params_from_record(json.loads(json.dumps(dataclasses.asdict(params))), Path("run.json"))
    for section in dataclasses.fields(Params):
        original, got = getattr(params, section.name), getattr(rebuilt, section.name)
        for field in dataclasses.fields(original):
            value = getattr(original, field.name)
            assert (tuple(getattr(got, field.name)) if isinstance(value, tuple) else getattr(got, field.name)) == value


def test_params_from_record_after_json_equals_the_params():
    params = load_params(REPO / "params.yaml").variant("reader")
    assert params_from_record(json.loads(json.dumps(dataclasses.asdict(params))), Path("run.json")) == params


def incomplete(record: dict, change: str) -> dict:
    record = copy.deepcopy(record)
    if change == "section missing":
        del record["train"]
    elif change == "key missing":
        del record["model"]["featurizers"]
    elif change == "unknown key":
        record["train"]["lerning_rate"] = 1
    elif change == "section not a mapping":
        record["split"] = None
    elif change == "empty":
        record = {}
    else:
        record = None
    return record


@pytest.mark.parametrize("change", ["section missing", "key missing", "unknown key", "section not a mapping", "empty",
                                    "not a mapping"])
def test_params_from_record_names_the_file_of_an_incomplete_record(change):
    record = dataclasses.asdict(load_params(REPO / "params.yaml").variant("reader"))
    source = Path("models") / "reader" / "run.json"
    with pytest.raises(PipelineError) as caught:
        params_from_record(incomplete(record, change), source)
    message = str(caught.value)
    assert str(source) in message and "dvc repro" in message and "\n" not in message


# ---------------------------------------------------------------- the accuracy table and the compare stage

def evaluate_details(accuracy: dict) -> dict:
    """A variant's evaluate_details.json as the evaluate stage writes it: per set, its scalars."""
    return {name: {"n": 10, "accuracy": value, "macro_f1": 0.5, "mirror_consistency": 1.0}
            for name, value in accuracy.items()}


def signer_scores(accuracies: dict, mean, standard_error) -> dict:
    """A variant's signers.json as the signers stage writes it."""
    return {"signers": {name: {"accuracy": value, "n": 9, "fold": 0} for name, value in accuracies.items()},
            "mean": mean, "standard_error": standard_error,
            "worst": sorted(accuracies, key=accuracies.get)[:3], "folds": 2}


SCORES = {
    "resnet50": evaluate_details({"test": 0.23414, "kaggle_test": 0.5, "asl-other-dev": 0.02308}),
    "reader": evaluate_details({"test": 0.956149, "kaggle_test": 0.89286, "asl-other-dev": 0.76154}),
}
SIGNER_SCORES = {"resnet50": signer_scores({"kaggle": 0.03, "cam01": 0.2114}, 0.1207, 0.0907),
                 "reader": signer_scores({"kaggle": 0.5, "cam01": 0.9778}, 0.7389, 0.2389)}
TABLE = {"resnet50": {"test": 0.2341, "asl-other-dev": 0.0231, "signers_left_out": 0.1207, "signers_left_out_se": 0.0907,
                      "worst_signer": 0.03, "kaggle_test": 0.5},
         "reader": {"test": 0.9561, "asl-other-dev": 0.7615, "signers_left_out": 0.7389, "signers_left_out_se": 0.2389,
                    "worst_signer": 0.5, "kaggle_test": 0.8929}}


def test_accuracy_table_keeps_the_order_and_rounds_to_4_places():
    table = evaluation.accuracy_table(SCORES, SIGNER_SCORES)
    assert table == TABLE
    assert list(table) == ["resnet50", "reader"]  # the variants' order, not sorted
    # The sets' order, the signer-grouped mean with its noise and worst signer beside the other people's sets,
    # Kaggle's few photos last.
    assert all(list(row) == ["test", "asl-other-dev", "signers_left_out", "signers_left_out_se", "worst_signer",
                             "kaggle_test"] for row in table.values())


def test_accuracy_table_of_a_single_signer_has_no_left_out_mean():
    one_signer = {name: {"signers": {}, "mean": None, "standard_error": None, "worst": [], "folds": 0}
                  for name in SCORES}
    table = evaluation.accuracy_table(SCORES, one_signer)
    assert all(row["signers_left_out"] is row["worst_signer"] is None for row in table.values())
    assert "  -  " in evaluation.format_accuracy_table(table)


@pytest.mark.parametrize("result", [{"test": {"n": 3}}, {"test": 0.9}, None, [], {"test": {"accuracy": None}}],
                         ids=["no accuracy", "accuracy not per set", "null", "a list", "no number"])
def test_accuracy_table_of_evaluate_details_without_accuracy_per_set_names_the_fix(result):
    with pytest.raises(PipelineError) as caught:
        evaluation.accuracy_table({"reader": SCORES["reader"], "resnet50": result}, SIGNER_SCORES)
    message = str(caught.value)
    assert "evaluate_details.json" in message and "dvc repro evaluate" in message and "\n" not in message


def test_format_accuracy_table_has_a_row_per_variant_and_a_column_per_set():
    table = {"reader": {"test": 0.9561, "asl-other-dev": 0.7616},
             "resnet50-long": {"test": 0.2341, "kaggle_test": 0.5}}
    lines = evaluation.format_accuracy_table(table).splitlines()
    assert [line.split() for line in lines] == [["variant", "test", "asl-other-dev", "kaggle_test"],
                                                 ["reader", "0.956", "0.762", "-"],  # 3 places; a set it lacks: -
                                                 ["resnet50-long", "0.234", "-", "0.500"]]
    assert all(line.startswith(name.ljust(len("resnet50-long")) + "  ")
               for line, name in zip(lines, ["variant", "reader", "resnet50-long"]))


def test_format_accuracy_table_puts_every_value_under_its_set_name():
    text = evaluation.format_accuracy_table(TABLE)
    header, *rows = [[match.span() for match in re.finditer(r"\S+", line)] for line in text.splitlines()]
    assert len({len(line) for line in text.splitlines()}) == 1, text  # columns of one width in every line
    for row in rows:
        for (name_start, name_end), (start, end) in zip(header[1:], row[1:]):
            # The value and its set's name share a column: one lies within the other.
            assert start <= name_start < name_end <= end or name_start <= start < end <= name_end, text


def write_compare_project(stage_project, scores: dict) -> Paths:
    """params.yaml with the variants resnet50 then reader, and each variant's evaluate_details.json from `scores`
    and signers.json from SIGNER_SCORES."""
    stage_project.set(variants={"resnet50": resnet(), "reader": reader()}, serve={"model": "reader"})
    paths = Paths(stage_project.root)
    for name, result in scores.items():
        folder = paths.variant(name).metrics
        folder.mkdir(parents=True)
        (folder / "evaluate_details.json").write_text(json.dumps(result), encoding="utf-8")
        (folder / "signers.json").write_text(json.dumps(SIGNER_SCORES.get(name, signer_scores({}, None, None))),
                                             encoding="utf-8")
    return paths


def test_compare_stage_writes_every_variants_accuracy_per_set(stage_project):
    # A variant no longer in params.yaml leaves its metrics behind; compare reads only the declared ones.
    paths = write_compare_project(stage_project, {**SCORES, "old": evaluate_details({"test": 1.0})})
    result = stage_project.run("compare")
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = json.loads((paths.metrics / "accuracy.json").read_text(encoding="utf-8"))
    assert accuracy == TABLE and list(accuracy) == ["resnet50", "reader"]  # params.yaml's order
    assert result.stdout == evaluation.format_accuracy_table(TABLE) + "\n"


@pytest.mark.parametrize("problem", ["missing", "damaged"])
def test_compare_stage_without_a_variants_evaluate_details_exits_1_naming_it(stage_project, problem):
    paths = write_compare_project(stage_project, SCORES)
    missing = paths.variant("reader").metrics / "evaluate_details.json"
    if problem == "missing":
        missing.unlink()
    else:
        missing.write_text("{not json", encoding="utf-8")
    (paths.metrics / "accuracy.json").write_text('{"previous": true}', encoding="utf-8")
    result = stage_project.run("compare")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "metrics/variants/reader/evaluate_details.json" in result.stderr and "dvc repro evaluate@reader" in result.stderr
    assert (paths.metrics / "accuracy.json").read_text(encoding="utf-8") == '{"previous": true}'


def test_compare_stage_with_evaluate_details_lacking_accuracy_exits_1(stage_project):
    paths = write_compare_project(stage_project, {**SCORES, "reader": {"pretrained": None}})
    result = stage_project.run("compare")
    assert result.returncode == 1 and "dvc repro evaluate" in result.stderr, result.stderr
    assert not (paths.metrics / "accuracy.json").exists()



# ---------------------------------------------------------------- what `dvc exp show` shows

MAX_METRIC_VALUES = 40  # `dvc exp show` stays a table a person can read


def declared_metric_files() -> list:
    """Every metrics file dvc.yaml declares, its foreach stages expanded over params.yaml's variants, in
    dvc.yaml's order (the order of `dvc exp show`'s columns)."""
    import yaml

    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    variants = list(load_params(REPO / "params.yaml").variants)
    files = []
    for stage in pipeline["stages"].values():
        body, keys = (stage["do"], variants) if "foreach" in stage else (stage, [None])
        for key in keys:
            for entry in body.get("metrics", []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                files.append(path.replace("${key}", key) if key else path)
    return files


def metric_values(value) -> int:
    """The scalars of a metrics file: the columns it adds to `dvc exp show`."""
    if isinstance(value, dict):
        return sum(metric_values(v) for v in value.values())
    if isinstance(value, list):
        return sum(metric_values(v) for v in value)
    return 1


def test_dvc_exp_show_has_at_most_40_metric_values_the_accuracy_table_first():
    files = declared_metric_files()
    assert files[0] == "metrics/accuracy.json"
    counts = {path: metric_values(json.loads((REPO / path).read_text(encoding="utf-8"))) for path in files}
    assert sum(counts.values()) <= MAX_METRIC_VALUES, counts
    # Per-signer, per-class and per-set details are files and plots, not metrics: their count grows with the data.
    assert not any(Path(path).name in ("signers.json", "evaluate_details.json", "hands_per_class.json")
                   for path in files)
    table = json.loads((REPO / "metrics/accuracy.json").read_text(encoding="utf-8"))
    assert all({"signers_left_out", "signers_left_out_se", "worst_signer"} <= set(row) for row in table.values())
