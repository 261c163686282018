"""Project paths and params.yaml: loaded and validated once, in one place, when a stage starts."""
import dataclasses
import math
import re
import string
from pathlib import Path

import yaml

from asl_pipeline.backbones import BACKBONES
from asl_pipeline.errors import PipelineError

# The one fixed class order; a model's outputs are indexed by this list filtered by split.classes.
ALL_CLASSES = tuple(string.ascii_uppercase) + ("del", "nothing", "space")
SPLITS = ("train", "val", "test")
KAGGLE_TEST = "kaggle_test"
# A manifest row's origin: the dataset of data.source, or the data.extra_train entry it came from.
DATASET_ORIGIN = "dataset"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# What the head reads: the CNN's pooled features (model.backbone) and MediaPipe's hand landmarks.
# This order is the order of the feature blocks wherever they are concatenated.
FEATURIZERS = ("backbone", "hand_landmarks")
HAND_MODEL_SOURCES = ("auto", "local", "download")
HAND_FEATURE_GROUPS = ("keypoints", "distances", "angles", "confidence")
HEADS = ("kernel", "svm", "mlp")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
# Photos of the user's own hand, as <CLASS>/<file>.jpg, relative to the project root: the demo's teach
# mode saves them here, and params.yaml's data.extra_train lists this folder by default.
MY_HAND_DIR = Path("data/my-hand")


# run.json's key for the sha256 of everything the train run read (training.inputs_digest): the same inputs give the
# same digest on any machine, so it names a model where a git commit cannot (training.provenance).
INPUTS_DIGEST = "inputs_sha256"


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A saved model and the files it is useless without, all in its folder: copying or `dvc pull`ing the
    folder brings everything predict needs."""

    model: Path

    labels = property(lambda self: self.model.with_name("labels.json"))  # class names, in output order
    spec = property(lambda self: self.model.with_name("featurizers.json"))  # how photos become inputs
    run = property(lambda self: self.model.with_name("run.json"))  # pretrained?, params, experiment, INPUTS_DIGEST
    hand_model = property(lambda self: self.model.with_name("hand_landmarker.task"))  # when hands are used


@dataclasses.dataclass(frozen=True)
class Paths:
    """Every file the pipeline reads or writes, relative to the project root (where dvc.yaml is). What one
    model variant writes is under its own folders: `variant(name)`."""

    root: Path

    params = property(lambda self: self.root / "params.yaml")
    raw = property(lambda self: self.root / "data" / "raw")
    extra = property(lambda self: self.root / "data" / "extra")  # data.extra_train's photos (extra.py)
    split = property(lambda self: self.root / "data" / "split")
    models = property(lambda self: self.root / "models")
    hand_model = property(lambda self: self.models / "hand_landmarker.task")  # the hand_model stage's copy
    metrics = property(lambda self: self.root / "metrics")
    plots = property(lambda self: self.root / "plots")

    def manifest(self, split: str) -> Path:
        return self.split / f"{split}.csv"

    def variant(self, name: str) -> "VariantPaths":
        return VariantPaths(self.root, name)


@dataclasses.dataclass(frozen=True)
class VariantPaths:
    """The files of one model variant (params.yaml `variants`): its features, model folder, metrics and plots."""

    root: Path
    name: str

    features = property(lambda self: self.root / "data" / "features" / self.name)
    eval = property(lambda self: self.root / "data" / "eval" / self.name)
    model_dir = property(lambda self: self.root / "models" / self.name)  # everything predict needs, one folder
    model_files = property(lambda self: ModelFiles(self.model_dir / "model.keras"))
    model_card = property(lambda self: self.root / "models" / f"MODEL_CARD_{self.name}.md")
    metrics = property(lambda self: self.root / "metrics" / "variants" / self.name)
    plots = property(lambda self: self.root / "plots" / "variants" / self.name)

    def features_file(self, split: str) -> Path:
        return self.features / f"{split}.npz"


# Queued and temporary experiments (`dvc exp run --queue`, `--temp`) run in a copy of the project at
# <project>/.dvc/tmp/exps/<name>/, where a path such as ../shared/... would point into .dvc/tmp.
EXPERIMENT_COPIES = (".dvc", "tmp", "exps")


def input_root(root: Path) -> Path:
    """The folder that relative paths to inputs outside the pipeline (data.local_dir, data.extra_train,
    hands.local_file, evaluate.extra_sets) are relative to: the project root, also when a stage runs in
    DVC's copy of it for a queued or temporary experiment.

    Resolving against the real project beats copying those inputs into each experiment: they are the
    user's own folders (the dataset, other people's photos, data/my-hand), and the experiment should read
    what the user sees there.
    """
    root = Path(root).absolute()
    parts = root.parts
    for start in range(len(parts) - len(EXPERIMENT_COPIES)):
        if parts[start:start + len(EXPERIMENT_COPIES)] == EXPERIMENT_COPIES:
            return Path(*parts[:start])
    return root


def input_path(root: Path, path: str | Path) -> Path:
    """An input path from params.yaml: absolute as given, relative to input_root(root) otherwise."""
    path = Path(path)
    return path if path.is_absolute() else input_root(root) / path


def project_paths(root: Path | None = None) -> Paths:
    """Paths of the project at `root` (default: the working directory, where `dvc repro` runs stages)."""
    root = Path.cwd() if root is None else Path(root)
    if not (root / "params.yaml").is_file():
        raise PipelineError(f"no params.yaml in {root.resolve()}: run stages from the project root")
    return Paths(root)


class _Section:
    """Reads one params.yaml section; every error names the param, the value and what is allowed."""

    def __init__(self, name: str, raw):
        if not isinstance(raw, dict):
            raise PipelineError(f"params.yaml: section '{name}' is missing or not a mapping")
        self.name, self.raw = name, raw

    def reject_unknown(self, fields_of) -> None:
        """A misspelt key (`-S train.lerning_rate=...`) would otherwise be ignored without a word."""
        known = [field.name for field in dataclasses.fields(fields_of)]
        unknown = sorted(set(self.raw) - set(known))
        if unknown:
            raise PipelineError(f"params.yaml: unknown param(s) {[f'{self.name}.{k}' for k in unknown]}; "
                                f"'{self.name}' takes {known}")

    def _fail(self, key, value, allowed):
        raise PipelineError(f"params.yaml: '{self.name}.{key}' is {value!r}; expected {allowed}")

    def get(self, key, kind, allowed, check=lambda v: True):
        if key not in self.raw:
            raise PipelineError(f"params.yaml: missing '{self.name}.{key}' ({allowed})")
        value = self.raw[key]
        # `dvc exp run -S x=1e-5` writes YAML 1.2 floats that PyYAML reads as strings.
        if kind is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self._fail(key, value, allowed)
        if kind is float and not math.isfinite(value):  # .inf and .nan pass a `v > 0` check
            self._fail(key, value, allowed)
        if not check(value):
            self._fail(key, value, allowed)
        return value

    def choice(self, key, choices):
        return self.get(key, str, f"one of {list(choices)}", lambda v: v in choices)

    def integer(self, key, minimum):
        return self.get(key, int, f"an integer >= {minimum}", lambda v: v >= minimum)

    def fraction(self, key, low=0.0, high=1.0):
        return self.get(key, float, f"a number in [{low}, {high})", lambda v: low <= v < high)

    def positive(self, key):
        return self.get(key, float, "a number > 0", lambda v: v > 0)


@dataclasses.dataclass(frozen=True)
class DataParams:
    source: str
    local_dir: str
    kaggle_dataset: str
    # More signers, training only. extra_train: {name: folder or .zip of <CLASS>/* photos}, each a DVC
    # dependency of its own extra_train@name stage; extra_kaggle: Kaggle datasets (owner/name) of that layout.
    extra_train: dict = dataclasses.field(default_factory=dict)
    extra_kaggle: tuple = ()


@dataclasses.dataclass(frozen=True)
class SplitParams:
    classes: tuple
    per_class: int | None  # None: every image
    val_fraction: float
    test_fraction: float
    strategy: str
    block_size: int
    near_duplicate_similarity: float
    seed: int
    extra_exclude: tuple = ()  # classes whose data.extra_train photos stay out of training


@dataclasses.dataclass(frozen=True)
class ModelParams:
    featurizers: tuple  # a subset of FEATURIZERS, in that order
    backbone: str
    weights: str
    image_size: int


@dataclasses.dataclass(frozen=True)
class HandsParams:
    source: str
    local_file: str
    min_detection_confidence: float
    min_presence_confidence: float
    border: float
    fallback_min_presence: float | None  # None: no landmark-model-only fallback
    mirror_left: bool
    features: tuple  # a subset of HAND_FEATURE_GROUPS, in that order
    # The detector's second look at a brightened copy when the first finds no hand. Defaults: what a model
    # saved before the second look existed was featurized with (none).
    second_look_gamma: float | None = None  # None: no second look
    second_look_border: float = 1.0


@dataclasses.dataclass(frozen=True)
class FeaturizeParams:
    batch_size: int
    precision: str
    crop_to_hand: bool
    augment_copies: int
    horizontal_flip: bool


@dataclasses.dataclass(frozen=True)
class TrainParams:
    head: str  # one of HEADS
    svm_c: float
    kernel_components: int  # kernel: landmark rows of the Nystroem approximation (its cost per photo)
    kernel_alpha: float  # kernel: strength of the ridge classifier's L2 penalty
    epochs: int
    batch_size: int
    learning_rate: float
    hidden_units: int
    dropout: float
    patience: int
    fine_tune_epochs: int
    fine_tune_from: str
    fine_tune_learning_rate: float
    seed: int
    distribute: str = "none"  # one of DISTRIBUTE
    landmark_copies: int = 0  # hand landmarks: reshaped copies of every training hand (augment.py)
    extra_weight: int = 1  # a data.extra_train photo counts this many times, a dataset photo once


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    top_k: int
    extra_sets: tuple  # folders of <CLASS>/*.jpg, relative to the project root or absolute
    signer_folds: int = 5  # grouped folds of the training signers: each signer is read by a head trained without them


@dataclasses.dataclass(frozen=True)
class ExplainParams:
    per_class: int
    max_misclassified: int
    alpha: float
    target: str


@dataclasses.dataclass(frozen=True)
class ServeParams:
    model: str


@dataclasses.dataclass(frozen=True)
class Params:
    """One model variant's view of params.yaml: the shared sections, with model, featurize and train as the
    variant sets them over the top-level ones."""

    data: DataParams
    split: SplitParams
    model: ModelParams
    hands: HandsParams
    featurize: FeaturizeParams
    train: TrainParams
    evaluate: EvaluateParams
    explain: ExplainParams


def _classes(section: _Section) -> tuple:
    allowed = f"'all' or a list of names from {list(ALL_CLASSES)}"
    if "classes" not in section.raw:
        raise PipelineError(f"params.yaml: missing 'split.classes' ({allowed})")
    value = section.raw["classes"]
    if value == "all":
        return ALL_CLASSES
    if not isinstance(value, list) or len(value) < 2:
        section._fail("classes", value, allowed + " (at least 2)")
    unknown = [c for c in value if c not in ALL_CLASSES]
    if unknown:
        section._fail("classes", value, f"{allowed}; unknown: {unknown}")
    if len(set(value)) != len(value):
        section._fail("classes", value, allowed + " without repeats")
    return tuple(c for c in ALL_CLASSES if c in value)


def _extra_exclude(section: _Section) -> tuple:
    """split.extra_exclude: class names, maybe none, in the fixed class order."""
    allowed = f"a list of class names from {list(ALL_CLASSES)}, without repeats, maybe empty: []"
    if "extra_exclude" not in section.raw:
        raise PipelineError(f"params.yaml: missing 'split.extra_exclude' ({allowed})")
    value = section.raw["extra_exclude"]
    if not isinstance(value, list) or len(set(value)) != len(value) or not set(value) <= set(ALL_CLASSES):
        section._fail("extra_exclude", value, allowed)
    return tuple(c for c in ALL_CLASSES if c in value)


def _subset(section: _Section, key: str, names: tuple) -> tuple:
    """A non-empty list of `names` without repeats, returned in the order of `names`."""
    allowed = f"a non-empty list of names from {list(names)}, without repeats"
    if key not in section.raw:
        raise PipelineError(f"params.yaml: missing '{section.name}.{key}' ({allowed})")
    value = section.raw[key]
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value)
            or len(set(value)) != len(value) or not set(value) <= set(names)):
        section._fail(key, value, allowed)
    return tuple(name for name in names if name in value)


def _paths(section: _Section, key: str, allowed: str = "a list of folder paths, maybe empty: []") -> tuple:
    value = section.raw.get(key)
    if key not in section.raw:
        raise PipelineError(f"params.yaml: missing '{section.name}.{key}' ({allowed})")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        section._fail(key, value, allowed)
    return tuple(value)


# A data.extra_train entry's name: a folder of data/extra and a stage name (extra_train@signers).
EXTRA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# data/extra/kaggle holds data.extra_kaggle's photos, so no data.extra_train entry may take that name.
EXTRA_KAGGLE_NAME = "kaggle"


def _extra_sources(section: _Section) -> dict:
    """data.extra_train: {name: folder or .zip path}."""
    allowed = ("a mapping of names (letters, digits, '.', '_', '-') to folders or .zip files, maybe empty: {}; "
               "e.g. {my-hand: data/my-hand}")
    if "extra_train" not in section.raw:
        raise PipelineError(f"params.yaml: missing 'data.extra_train' ({allowed})")
    value = section.raw["extra_train"]
    if value is None:
        value = {}
    if (not isinstance(value, dict) or not all(isinstance(k, str) and EXTRA_NAME.fullmatch(k) for k in value)
            or not all(isinstance(v, str) and v for v in value.values())):
        section._fail("extra_train", value, allowed)
    if EXTRA_KAGGLE_NAME in value:
        section._fail("extra_train", value, f"{allowed}; '{EXTRA_KAGGLE_NAME}' is taken by data.extra_kaggle")
    return dict(value)


def _kaggle_datasets(section: _Section) -> tuple:
    """data.extra_kaggle: Kaggle datasets (owner/name), without repeats."""
    allowed = "a list of Kaggle datasets (owner/name), without repeats, maybe empty: []"
    datasets = _paths(section, "extra_kaggle", allowed)
    if len(set(datasets)) != len(datasets) or any(name.count("/") != 1 for name in datasets):
        section._fail("extra_kaggle", list(datasets), allowed)
    return datasets


def _probability(section: _Section, key: str):
    return section.get(key, float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def _parse_variant(raw: dict) -> Params:
    s = {name: _Section(name, raw.get(name)) for name in SECTIONS}

    data = DataParams(
        source=s["data"].choice("source", ("auto", "kaggle", "local")),
        local_dir=s["data"].get("local_dir", str, "a directory or .zip path"),
        kaggle_dataset=s["data"].get("kaggle_dataset", str, "owner/dataset",
                                     lambda v: v.count("/") == 1),
        extra_train=_extra_sources(s["data"]),
        extra_kaggle=_kaggle_datasets(s["data"]),
    )

    sp = s["split"]
    per_class = sp.raw.get("per_class")
    if per_class != "all":
        per_class = sp.get("per_class", int, "an integer >= 1, or all", lambda v: v >= 1)
    val = sp.fraction("val_fraction")
    test = sp.fraction("test_fraction")
    if val + test >= 1:
        raise PipelineError(
            f"params.yaml: 'split.val_fraction' + 'split.test_fraction' is {val} + {test} = {val + test};"
            " expected a sum below 1 (the rest is training data)")
    split = SplitParams(
        classes=_classes(sp),
        per_class=None if per_class == "all" else per_class,
        val_fraction=val,
        test_fraction=test,
        strategy=sp.choice("strategy", ("block", "random")),
        block_size=sp.integer("block_size", 1),
        near_duplicate_similarity=sp.get("near_duplicate_similarity", float, "a number in (0, 1]",
                                         lambda v: 0 < v <= 1),
        seed=sp.integer("seed", 0),
        extra_exclude=_extra_exclude(sp),
    )

    m = s["model"]
    backbone = m.choice("backbone", tuple(BACKBONES))
    minimum = BACKBONES[backbone].min_image_size
    model = ModelParams(
        featurizers=_subset(m, "featurizers", FEATURIZERS),
        backbone=backbone,
        weights=m.get("weights", str, "auto, imagenet, none, or a path to a weights file"),
        image_size=m.get("image_size", int, f"an integer >= {minimum} (the minimum for {backbone})",
                         lambda v: v >= minimum),
    )

    h = s["hands"]
    if "fallback_min_presence" not in h.raw:
        raise PipelineError("params.yaml: missing 'hands.fallback_min_presence' (a number in [0, 1], or null "
                            "for no fallback)")
    fallback = h.raw["fallback_min_presence"]
    if "second_look_gamma" not in h.raw:
        raise PipelineError("params.yaml: missing 'hands.second_look_gamma' (a number in (0, 1], or null for no "
                            "second look)")
    second_look = h.raw["second_look_gamma"]
    hands = HandsParams(
        source=h.choice("source", HAND_MODEL_SOURCES),
        local_file=h.get("local_file", str, "the path of a hand_landmarker.task bundle"),
        min_detection_confidence=_probability(h, "min_detection_confidence"),
        min_presence_confidence=_probability(h, "min_presence_confidence"),
        border=h.get("border", float, "a number in [0, 2]", lambda v: 0 <= v <= 2),
        fallback_min_presence=None if fallback is None else _probability(h, "fallback_min_presence"),
        mirror_left=h.get("mirror_left", bool, "true or false"),
        features=_subset(h, "features", HAND_FEATURE_GROUPS),
        second_look_gamma=None if second_look is None else h.get("second_look_gamma", float, "a number in (0, 1]",
                                                                 lambda v: 0 < v <= 1),
        second_look_border=h.get("second_look_border", float, "a number in [0, 2]", lambda v: 0 <= v <= 2),
    )

    f = s["featurize"]
    featurize = FeaturizeParams(
        batch_size=f.integer("batch_size", 1),
        precision=f.choice("precision", PRECISIONS),
        crop_to_hand=f.get("crop_to_hand", bool, "true or false"),
        augment_copies=f.integer("augment_copies", 0),
        horizontal_flip=f.get("horizontal_flip", bool, "true or false"),
    )

    t = s["train"]
    train = TrainParams(
        head=t.choice("head", HEADS),
        svm_c=t.positive("svm_c"),
        kernel_components=t.integer("kernel_components", 1),
        kernel_alpha=t.positive("kernel_alpha"),
        epochs=t.integer("epochs", 1),
        batch_size=t.integer("batch_size", 1),
        learning_rate=t.positive("learning_rate"),
        hidden_units=t.integer("hidden_units", 0),
        dropout=t.fraction("dropout"),
        patience=t.integer("patience", 1),
        fine_tune_epochs=t.integer("fine_tune_epochs", 0),
        fine_tune_from=t.get("fine_tune_from", str, "the name of a backbone layer"),
        fine_tune_learning_rate=t.positive("fine_tune_learning_rate"),
        seed=t.integer("seed", 0),
        distribute=t.choice("distribute", DISTRIBUTE),
        landmark_copies=t.integer("landmark_copies", 0),
        extra_weight=t.integer("extra_weight", 1),
    )
    if train.landmark_copies and model.featurizers != ("hand_landmarks",):
        raise PipelineError(f"params.yaml: 'train.landmark_copies' is {train.landmark_copies}, but reshaped hands "
                            f"have no photo for a backbone, and 'model.featurizers' is {list(model.featurizers)}: "
                            "set train.landmark_copies: 0 (featurize.augment_copies augments photos)")
    if train.landmark_copies and "keypoints" not in hands.features:
        raise PipelineError(f"params.yaml: 'train.landmark_copies' is {train.landmark_copies}, but reshaping a "
                            f"hand needs its keypoints: add 'keypoints' to hands.features {list(hands.features)}, "
                            "or set landmark_copies: 0")

    if featurize.crop_to_hand and "backbone" not in model.featurizers:
        raise PipelineError("params.yaml: 'featurize.crop_to_hand' is true, but 'model.featurizers' "
                            f"{list(model.featurizers)} has no 'backbone' to feed the crop to; add it or set "
                            "crop_to_hand: false")

    if train.fine_tune_epochs and train.head != "mlp":
        raise PipelineError(f"params.yaml: 'train.fine_tune_epochs' is {train.fine_tune_epochs}, but fine-tuning "
                            f"trains through the head by gradient descent: set train.head: mlp (it is "
                            f"{train.head!r}), or fine_tune_epochs: 0")
    if train.fine_tune_epochs and "backbone" not in model.featurizers:
        raise PipelineError(f"params.yaml: 'train.fine_tune_epochs' is {train.fine_tune_epochs}, but "
                            f"'model.featurizers' {list(model.featurizers)} has no 'backbone' to fine-tune; "
                            "add it or set fine_tune_epochs: 0")

    evaluate = EvaluateParams(top_k=s["evaluate"].integer("top_k", 1),
                              extra_sets=_paths(s["evaluate"], "extra_sets"),
                              signer_folds=s["evaluate"].integer("signer_folds", 2))

    e = s["explain"]
    explain = ExplainParams(
        per_class=e.integer("per_class", 0),
        max_misclassified=e.integer("max_misclassified", 0),
        alpha=e.get("alpha", float, "a number in [0, 1]", lambda v: 0 <= v <= 1),
        target=e.choice("target", ("predicted", "true")),
    )
    for section in s.values():
        section.reject_unknown(Params.__dataclass_fields__[section.name].type)
    return Params(data, split, model, hands, featurize, train, evaluate, explain)


SECTIONS = ("data", "split", "model", "hands", "featurize", "train", "evaluate", "explain")
# The sections a variant may set keys of; the others are shared by every variant.
VARIANT_SECTIONS = ("model", "featurize", "train")
# A variant's name is part of stage names (train@reader), folders and metric keys.
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclasses.dataclass(frozen=True)
class ProjectParams:
    """params.yaml: the shared sections, each model variant's Params, and which variant serves."""

    variants: dict  # name -> Params, in params.yaml's order
    served: str  # serve.model: the variant predict, serve and spell use by default

    data = property(lambda self: self._any.data)
    split = property(lambda self: self._any.split)
    hands = property(lambda self: self._any.hands)
    evaluate = property(lambda self: self._any.evaluate)
    explain = property(lambda self: self._any.explain)
    _any = property(lambda self: next(iter(self.variants.values())))  # shared sections are alike in all

    def variant(self, name: str) -> Params:
        if name not in self.variants:
            raise PipelineError(f"params.yaml: no variant {name!r} under 'variants' (it has {list(self.variants)})")
        return self.variants[name]


def _variant_overrides(name, overrides) -> dict:
    if not VARIANT_NAME.fullmatch(str(name)):
        raise PipelineError(f"params.yaml: variant name {name!r} under 'variants' must be lower-case letters, digits, "
                            "'_' or '-', starting with a letter (it names folders and stages)")
    if overrides is None:
        return {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise PipelineError(f"params.yaml: 'variants.{name}' is {overrides!r}; expected a mapping of sections "
                            f"{list(VARIANT_SECTIONS)} to the keys this variant sets")
    unknown = sorted(set(overrides) - set(VARIANT_SECTIONS))
    if unknown:
        raise PipelineError(f"params.yaml: 'variants.{name}' sets sections {unknown}; a variant sets keys of "
                            f"{list(VARIANT_SECTIONS)} only (the others are shared)")
    return overrides


def parse_params(raw) -> ProjectParams:
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: expected a mapping of sections (data, split, model, ...)")
    unknown_sections = sorted(set(raw) - set(SECTIONS) - {"variants", "serve"})
    if unknown_sections:
        raise PipelineError(f"params.yaml: unknown section(s) {unknown_sections}; expected "
                            f"{sorted(SECTIONS + ('serve', 'variants'))}")
    declared = raw.get("variants")
    if not isinstance(declared, dict) or not declared:
        raise PipelineError("params.yaml: 'variants' is missing or empty; expected a mapping of variant names "
                            "(e.g. reader, resnet50) to the model, featurize and train keys each sets")
    overrides_of = {name: _variant_overrides(name, overrides) for name, overrides in declared.items()}
    for section in VARIANT_SECTIONS:
        top = raw.get(section) if isinstance(raw.get(section), dict) else {}
        # `dvc exp run -S train.head=mlp` would otherwise change nothing without a word.
        shadowed = sorted(key for key in top if all(key in o.get(section, {}) for o in overrides_of.values()))
        if shadowed:
            raise PipelineError(f"params.yaml: {[f'{section}.{key}' for key in shadowed]} at the top level is set by "
                                f"every variant, so it would change nothing: set it per variant "
                                f"({', '.join(f'variants.{name}.{section}.{shadowed[0]}' for name in overrides_of)})")
    variants = {}
    for name, overrides in overrides_of.items():
        merged = {section: ({**raw[section], **overrides.get(section, {})}
                            if isinstance(raw.get(section), dict) else raw.get(section)) for section in SECTIONS}
        try:
            variants[name] = _parse_variant(merged)
        except PipelineError as error:
            raise PipelineError(f"{error} (variant {name!r}: model, featurize and train keys are set under "
                                f"variants.{name} or in the top-level sections)") from None
    serve = _Section("serve", raw.get("serve"))
    served = serve.get("model", str, f"the name of a variant: one of {list(variants)}", lambda v: v in variants)
    serve.reject_unknown(ServeParams)
    return ProjectParams(variants, served)


def load_params(path: Path) -> ProjectParams:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the project root") from None
    except UnicodeDecodeError as error:
        raise PipelineError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except yaml.YAMLError as error:
        # PyYAML's own message spans several lines; a stage error is one line.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise PipelineError(f"{path} is not valid YAML{where}: {problem}; fix the syntax there") from None
    return parse_params(raw)


def params_from_record(record: dict, source: Path) -> Params:
    """The Params a model was trained with, from the `params` that train writes into its run.json (`source`)."""
    def section(kind, values: dict):  # JSON has no tuples: the list fields come back as lists
        return kind(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

    try:
        return Params(**{field.name: section(field.type, record[field.name]) for field in dataclasses.fields(Params)})
    except (KeyError, TypeError, AttributeError) as error:
        raise PipelineError(f"{source} has no complete record of the params the model was trained with ({error}): "
                            "it comes from an older run; re-run `dvc repro`") from None


def variant_stage(argv: list, root: Path | None = None) -> tuple:
    """What a per-variant stage starts from (dvc.yaml: `python -m stages.X ${key}`): the project's Paths, the
    variant's name (the stage's one argument), its Params and its VariantPaths."""
    if len(argv) != 2:
        raise PipelineError(f"usage: python -m stages.{Path(argv[0]).stem} VARIANT (a name under params.yaml "
                            "'variants'); `dvc repro` passes it")
    paths = project_paths(root)
    name = argv[1]
    return paths, name, load_params(paths.params).variant(name), paths.variant(name)
