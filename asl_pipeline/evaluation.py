"""Test-set metrics, the classification report and confusion data, from predicted probabilities."""
import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes, top_k: int) -> dict:
    """Accuracy, macro F1, top-k accuracy and per-class precision/recall/F1/support.

    Every class of `classes` is scored, also one absent from this test set (support 0, scores 0),
    so that numbers from different subsets stay comparable.
    """
    labels = np.arange(len(classes))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    k = min(top_k, len(classes))
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        f"top_{k}_accuracy": float(np.mean(np.any(top_k_indices(probabilities, k) == y_true[:, None], axis=1))),
        "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(classes, precision, recall, f1, support)},
    }


def top_k_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k highest probabilities, best first (ties: lower index first)."""
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


def top_k(probabilities: np.ndarray, classes, k: int):
    """Per row, the k most probable (class, probability) pairs, best first."""
    return [[(classes[i], float(row[i])) for i in idx]
            for row, idx in zip(probabilities, top_k_indices(probabilities, k))]


def report_text(y_true, probabilities, classes) -> str:
    return skm.classification_report(y_true, probabilities.argmax(axis=1), labels=np.arange(len(classes)),
                                     target_names=list(classes), zero_division=0, digits=3)


def misclassified_rows(paths, y_true, probabilities, classes):
    """(path, label, predicted, probability) for each wrong prediction, most confident first."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-probabilities[wrong, y_pred[wrong]], kind="stable")]
    return [(paths[i], classes[y_true[i]], classes[y_pred[i]], f"{probabilities[i, y_pred[i]]:.4f}")
            for i in wrong]
