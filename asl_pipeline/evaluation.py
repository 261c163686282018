"""Scoring a set of photos: metrics, the classification report, confusion data and hand-detection counts."""
import dataclasses

import numpy as np
from sklearn import metrics as skm

from asl_pipeline import progress
from asl_pipeline.config import KAGGLE_TEST
from asl_pipeline.errors import PipelineError


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes, top_k: int) -> dict:
    """Accuracy, macro F1 and top-k accuracy with the model's full output, and per-class scores.

    Macro F1 and the per-class scores cover the classes the set holds: a set of letters alone is not
    marked down for `del`, but a `del` predicted for a photo of A still counts against A.
    """
    present = np.unique(y_true)
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0)
    k = min(top_k, len(classes))
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        f"top_{k}_accuracy": float(np.mean(np.any(top_k_indices(probabilities, k) == y_true[:, None], axis=1))),
        "per_class": {classes[i]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for i, p, r, f, s in zip(present, precision, recall, f1, support)},
    }


def top_k_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k highest probabilities, best first (ties: lower index first)."""
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


def top_k(probabilities: np.ndarray, classes, k: int):
    """Per row, the k most probable (class, probability) pairs, best first."""
    return [[(classes[i], float(row[i])) for i in idx]
            for row, idx in zip(probabilities, top_k_indices(probabilities, k))]


def report_text(y_true, probabilities, classes) -> str:
    present = np.unique(y_true)
    return skm.classification_report(y_true, probabilities.argmax(axis=1), labels=present,
                                     target_names=[classes[i] for i in present], zero_division=0, digits=3)


def misclassified_rows(paths, y_true, probabilities, classes):
    """(path, label, predicted, probability) for each wrong prediction, most confident first."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-probabilities[wrong, y_pred[wrong]], kind="stable")]
    return [(paths[i], classes[y_true[i]], classes[y_pred[i]], f"{probabilities[i, y_pred[i]]:.4f}")
            for i in wrong]


def hand_counts(labels, found) -> dict:
    """Per class: {"images": n, "no_hand": photos where no hand was found}, classes in first-seen order."""
    counts = {}
    for label, was_found in zip(labels, found):
        row = counts.setdefault(str(label), {"images": 0, "no_hand": 0})
        row["images"] += 1
        row["no_hand"] += int(not was_found)
    return counts


def hand_found_rates(counts_by_set: dict) -> dict:
    """Share of photos with a hand found: per set, and over all sets outside and inside `nothing`.

    `nothing` photos show no hand, so they are kept apart: there a found hand is a false alarm.
    """
    def rate(rows):
        images = sum(row["images"] for row in rows)
        return round(1 - sum(row["no_hand"] for row in rows) / images, 4) if images else None

    rates = {name: rate([row for label, row in counts.items() if label != "nothing"])
             for name, counts in counts_by_set.items()}
    every = [(label, row) for counts in counts_by_set.values() for label, row in counts.items()]
    rates["all_outside_nothing"] = rate([row for label, row in every if label != "nothing"])
    rates["nothing_false_hands"] = rate([row for label, row in every if label == "nothing"])
    return rates


@dataclasses.dataclass(frozen=True)
class Scored:
    metrics: dict  # the scalars a user compares: n, accuracy, macro_f1, top_k_accuracy, mirror_consistency, hand_found
    report: str
    per_class_rows: list  # [class, images, precision, recall, f1, no_hand ("" without hands)]
    confusion: list  # (actual, predicted) per photo
    misclassified: list  # misclassified_rows
    skipped: list  # (name, reason) of unreadable files


def score(classifier, files, names, y_true: np.ndarray, top_k: int, description: str = "evaluate") -> Scored:
    """Run `classifier` (an inference.Classifier) on the photo `files` and score it against `y_true`.

    `names` name the files in the outputs; unreadable files are skipped and listed, not fatal. Every photo is
    also read mirrored: mirror_consistency is the share whose mirror image gets the same class.
    """
    from asl_pipeline.inference import analyse_images  # TensorFlow: only when something is scored

    if not files:
        raise PipelineError(f"{description}: there are no photos to score")

    kept, probabilities, found, skipped = [], [], [], []
    results = progress.bar(len(files), description, iterable=analyse_images(classifier, files, with_heatmaps=False))
    for index, result in enumerate(results):
        if result.error is not None:
            skipped.append((names[index], result.error.reason))
            continue
        kept.append(index)
        probabilities.append(result.probabilities)
        found.append(result.hand_found)
    if not kept:
        raise PipelineError(f"none of the {len(files)} images could be read (first: {skipped[0][0]}: "
                            f"{skipped[0][1]})")
    classes, y_true, probabilities = classifier.classes, np.asarray(y_true)[kept], np.stack(probabilities)
    mirrored = progress.bar(len(kept), f"{description} mirrored", iterable=analyse_images(
        classifier, [files[i] for i in kept], with_heatmaps=False, mirrored=True))
    mirrored_classes = np.array([result.probabilities.argmax() for result in mirrored])
    full = classification_metrics(y_true, probabilities, classes, top_k)
    metrics = {key: value for key, value in full.items() if key != "per_class"}
    metrics["mirror_consistency"] = float(np.mean(mirrored_classes == probabilities.argmax(axis=1)))
    uses_hands = found[0] is not None
    counts = hand_counts([classes[i] for i in y_true], found) if uses_hands else {}
    if uses_hands:
        metrics["hand_found"] = hand_found_rates({"set": counts})["set"]  # outside `nothing`
    rows = [[name, row["support"], row["precision"], row["recall"], row["f1"],
             counts[name]["no_hand"] if uses_hands else ""] for name, row in full["per_class"].items()]
    kept_names = [names[i] for i in kept]
    return Scored(metrics, report_text(y_true, probabilities, classes), rows,
                  [(classes[t], classes[p]) for t, p in zip(y_true, probabilities.argmax(axis=1))],
                  misclassified_rows(kept_names, y_true, probabilities, classes), skipped)


SIGNERS_LEFT_OUT = "signers_left_out"  # accuracy.json's column of the signer-grouped mean
SIGNERS_LEFT_OUT_SE = "signers_left_out_se"  # ... its standard error across signers: the noise to read it by
WORST_SIGNER = "worst_signer"  # ... the accuracy of the signer read worst


def accuracy_table(details: dict, signer_scores: dict) -> dict:
    """{variant: {column: accuracy}} from each variant's evaluate_details.json and signers.json ({variant:
    contents}): test, the other people's sets, the signer-grouped mean, its standard error and the worst
    signer, kaggle_test."""
    try:
        table = {}
        for name, sets in details.items():
            signers = signer_scores[name]
            row = {set_name: round(scores["accuracy"], 4) for set_name, scores in sets.items()
                   if set_name != KAGGLE_TEST}
            row[SIGNERS_LEFT_OUT] = signers["mean"]
            row[SIGNERS_LEFT_OUT_SE] = signers["standard_error"]
            row[WORST_SIGNER] = signers["signers"][signers["worst"][0]]["accuracy"] if signers["worst"] else None
            if KAGGLE_TEST in sets:
                row[KAGGLE_TEST] = round(sets[KAGGLE_TEST]["accuracy"], 4)
            table[name] = row
        return table
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise PipelineError(f"an evaluate_details.json or signers.json lacks its scores ({error!r}): re-run "
                            "`dvc repro evaluate signers`") from None


def format_accuracy_table(table: dict) -> str:
    """The accuracy table as aligned text: a row per variant, a column per set."""
    sets = list(dict.fromkeys(set_name for row in table.values() for set_name in row))
    width = max(len(name) for name in ["variant", *table])
    widths = [max(len(s), len("0.000")) for s in sets]
    lines = ["  ".join(["variant".ljust(width), *(s.rjust(w) for s, w in zip(sets, widths))])]
    for name, row in table.items():
        cells = [(f"{row[s]:.3f}" if row.get(s) is not None else "-").rjust(w) for s, w in zip(sets, widths)]
        lines.append("  ".join([name.ljust(width), *cells]))
    return "\n".join(lines)
