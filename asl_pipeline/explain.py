"""The explain stage: Grad-CAM overlays and hand skeletons of typical and misclassified test images; for a
landmarks-only model the skeleton's joints are coloured by their weight in the decision."""
import csv
import dataclasses
import re
import sys
from pathlib import Path

import numpy as np

from asl_pipeline import dataset
from asl_pipeline.atomic import atomic_dir
from asl_pipeline.config import ExplainParams, Paths, VariantPaths
from asl_pipeline.drawing import explanation
from asl_pipeline.errors import PipelineError
from asl_pipeline.inference import BATCH_SIZE, analyse_images, load_classifier
from asl_pipeline.plots import save_grid, save_titled_overlay

GRID_COLUMNS = 6
MISCLASSIFIED_COLUMNS = ("path", "label", "predicted", "probability")


def safe_name(text: str) -> str:
    """A file-name part from a class name or stem: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def unique_names(names) -> list[str]:
    """The names in order, with repeats suffixed _2, _3, ... (skipping suffixes already taken)."""
    originals, used, result = set(names), set(), []
    for name in names:
        candidate, counter = name, 1
        # A suffixed name must not take an original name either, wherever that appears in the list.
        while candidate in used or (counter > 1 and candidate in originals):
            counter += 1
            candidate = f"{name}_{counter}"
        used.add(candidate)
        result.append(candidate)
    return result


@dataclasses.dataclass(frozen=True)
class Choice:
    path: str  # relative to the project root, as in the manifests
    label: str
    misclassified_as: str | None = None  # the evaluate stage's prediction, for a misclassified image

    @property
    def name(self) -> str:
        """Output file name without the .png suffix, before de-duplication."""
        stem = safe_name(Path(self.path).stem)
        if self.misclassified_as is None:
            return f"{safe_name(self.label)}_{stem}"
        return f"misclassified_{safe_name(self.label)}_as_{safe_name(self.misclassified_as)}_{stem}"


def read_misclassified(path: Path, classes) -> list[tuple[str, str, str]]:
    """(path, label, predicted) rows of the evaluate stage's misclassified.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run `dvc repro evaluate`") from None
    missing = [column for column in MISCLASSIFIED_COLUMNS if column not in columns]
    if missing:
        raise PipelineError(f"{path} lacks the columns {missing} ({','.join(MISCLASSIFIED_COLUMNS)} "
                            "expected): re-run `dvc repro evaluate`")
    unknown = sorted({row[key] for row in rows for key in ("label", "predicted")} - set(classes))
    if unknown:
        raise PipelineError(f"{path} names classes {unknown} the model does not know: it comes from another "
                            "run; re-run `dvc repro evaluate`")
    return [(row["path"], row["label"], row["predicted"]) for row in rows]


def choose_images(test_paths, test_labels, misclassified, per_class: int, max_misclassified: int):
    """The first `per_class` test images of each class, then up to `max_misclassified` misclassified ones.

    An image in both lists is shown once, as misclassified, which says more about it.
    """
    wrong = [Choice(path, label, predicted) for path, label, predicted in misclassified[:max_misclassified]]
    wrong_paths = {choice.path for choice in wrong}
    taken, typical = {}, []
    for path, label in zip(test_paths, test_labels):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            if path not in wrong_paths:
                typical.append(Choice(path, label))
    return typical + wrong


@dataclasses.dataclass(frozen=True)
class ExplainSummary:
    out_dir: Path
    written: int  # overlays, not counting grid.png
    misclassified: int
    skipped: int  # unreadable images


def explain_test_set(paths: Paths, variant: VariantPaths, params: ExplainParams,
                     batch_size: int = BATCH_SIZE) -> ExplainSummary:
    """Write the variant's explain/ plots: one titled picture per chosen test image and grid.png, all or nothing.

    The picture explains the model by its explainer (explainers.py): Grad-CAM beside the skeleton for a
    model with a backbone, the skeleton with weighted joints for a landmarks-only model.
    """
    classifier = load_classifier(variant.model_files.model)
    classes = classifier.classes
    test_paths, test_labels = dataset.read_manifest(paths.manifest("test"), classes)
    misclassified = read_misclassified(variant.eval / "misclassified.csv", classes)
    choices = choose_images(test_paths, test_labels, misclassified, params.per_class, params.max_misclassified)
    targets = [classes.index(c.label) for c in choices] if params.target == "true" else None
    names = unique_names([choice.name for choice in choices])
    out_dir = variant.plots / "explain"
    grid, skipped, wrong = [], 0, 0
    with atomic_dir(out_dir) as tmp:
        results = analyse_images(classifier, [paths.root / c.path for c in choices], targets, batch_size)
        for choice, name, result in zip(choices, names, results):
            if result.error is not None:
                print(f"skipped {result.error}", file=sys.stderr)
                skipped += 1
                continue
            predicted = int(np.argmax(result.probabilities))
            title = (f"true {choice.label} / pred {classes[predicted]} "
                     f"(p={result.probabilities[predicted]:.2f})")
            image = explanation(result.image, result.heatmap, result.hand, classifier.spec.uses_hands,
                                params.alpha, result.keypoint_weights)
            save_titled_overlay(tmp / f"{name}.png", image, title)
            grid.append((image, title))
            wrong += choice.misclassified_as is not None
        save_grid(tmp / "grid.png", grid, GRID_COLUMNS)
    return ExplainSummary(out_dir, len(grid), wrong, skipped)
