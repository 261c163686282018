"""models/MODEL_CARD_<variant>.md: what a model variant is, what it was trained and scored on, and where it fails."""
import collections
from pathlib import Path

from asl_pipeline.config import INPUTS_DIGEST, Params, VariantPaths
from asl_pipeline.featurizers import FeatureSpec

CONFUSIONS_SHOWN = 5


def most_confused(confusion, count: int = CONFUSIONS_SHOWN) -> list:
    """The `count` most frequent (actual, predicted, times) mistakes of (actual, predicted) pairs."""
    mistakes = collections.Counter((a, p) for a, p in confusion if a != p)
    return [(a, p, n) for (a, p), n in mistakes.most_common(count)]


def _table(results: dict, names) -> list:
    k_key = next((k for k in results[names[0]] if k.startswith("top_")), None)
    lines = [f"| set | images | accuracy | macro F1 | {k_key or 'top-k'} | mirror consistency | hand found |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        row = results[name]
        found = f"{row['hand_found']:.3f}" if row.get("hand_found") is not None else "n/a"
        lines.append(f"| `{name}` | {row['n']} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | "
                     f"{row.get(k_key, float('nan')):.3f} | {row['mirror_consistency']:.3f} | {found} |")
    return lines


def letters_other_signers_miss(confusions: dict, names, below: float = 0.8) -> list:
    """Markdown table rows: each letter read right in fewer than `below` of some other-signer set's photos,
    with its accuracy per set and what it was read as instead."""
    rows = []
    letters = sorted({actual for name in names for actual, _ in confusions.get(name, [])})
    for letter in letters:
        cells, readings = [], collections.Counter()
        for name in names:
            pairs = [predicted for actual, predicted in confusions.get(name, []) if actual == letter]
            cells.append(f"{sum(p == letter for p in pairs)}/{len(pairs)}" if pairs else "-")
            readings.update(p for p in pairs if p != letter)
        shares = [sum(p == letter for p in pairs) / len(pairs) for name in names
                  if (pairs := [p for a, p in confusions.get(name, []) if a == letter])]
        if min(shares) < below:
            instead = ", ".join(f"{p} ({n})" for p, n in readings.most_common(3))
            rows.append(f"| {letter} | " + " | ".join(cells) + f" | {instead} |")
    header = ["| letter | " + " | ".join(f"`{n}`" for n in names) + " | read instead as |",
              "|---|" + "---|" * len(names) + "---|"]
    return header + rows if rows else []


def model_card(variant: str, params: Params, spec: FeatureSpec, run: dict, split_counts: dict, results: dict,
               confusions: dict) -> str:
    """The card's markdown. results: evaluate.json; confusions: {set: [(actual, predicted), ...]}."""
    names = [name for name in results if isinstance(results[name], dict)]
    extra = [name for name in names if name not in ("test", "kaggle_test")]
    h, t = params.hands, params.train
    head = (f"SVM, RBF kernel, C={t.svm_c}" if t.head == "svm"
            else f"dense head ({t.hidden_units} hidden units, dropout {t.dropout}), Adam lr {t.learning_rate}")
    pretrained = run.get("pretrained")
    backbone = (f"{spec.backbone} at {spec.image_size} px, backbone weights: {run.get('backbone_weights')} "
                f"({'pretrained' if pretrained else 'NOT pretrained'})" + (", fed the hand crop" if spec.crop_to_hand
                                                                         else ""))
    lines = [
        f"# Model card: ASL fingerspelling classifier, variant `{variant}`",
        "",
        f"Written by the evaluate stage (`dvc repro`); numbers are from this run. The model is in `models/{variant}/`; "
        "params.yaml's `serve.model` names the variant that predict, serve and spell use.",
        "",
        "## Model",
        f"- Classes ({len(params.split.classes)}): {', '.join(params.split.classes)}.",
        f"- Features: {', '.join(spec.featurizers)}."
        + (f" Hand landmarks: MediaPipe palm detector + 21-keypoint model (LiteRT), {', '.join(h.features)}; "
           f"black border {h.border}, detection/presence thresholds {h.min_detection_confidence}/"
           f"{h.min_presence_confidence}, second look at gamma {h.second_look_gamma} with border {h.second_look_border}, whole-photo "
           f"fallback at presence {h.fallback_min_presence}, "
           f"left hands read from the mirrored photo: {h.mirror_left}." if spec.uses_hands else ""),
        f"- Backbone: {backbone}." if spec.uses_backbone else "- Backbone: not used.",
        f"- Head: {head}; {t.landmark_copies} reshaped copies of every training hand; a data.extra_train photo "
        f"weighs {t.extra_weight}.",
        "",
        "## Data",
        f"- Training data: `{params.data.local_dir if params.data.source != 'kaggle' else params.data.kaggle_dataset}`"
        f" (data.source {params.data.source}), {params.split.per_class or 'all'} images per class drawn, "
        f"split `{params.split.strategy}` (frame blocks of {params.split.block_size}), seed {params.split.seed}.",
        "- Images: " + ", ".join(f"{name} {n}" for name, n in split_counts.items()) + ".",
        "- More signers in training (data.extra_train, training split only): "
        + (", ".join([f"`{source}` ({name})" for name, source in params.data.extra_train.items()]
                     + [f"Kaggle `{dataset}`" for dataset in params.data.extra_kaggle]) or "none") + ".",
        "- Extra evaluation sets, never trained on: " + (", ".join(f"`{n}`" for n in extra) or "none") + ".",
        "",
        "## Scores",
        "",
        *_table(results, names),
        "",
        "`test` holds frame blocks of the same videos as the training photos (same person, room and light); "
        "the extra sets are photos unlike the training set and are the better guide to new users' photos.",
        "",
        "## Known limits",
    ]
    for name in names:
        pairs = most_confused(confusions.get(name, []))
        if pairs:
            lines.append(f"- Most confused on `{name}`: " + ", ".join(f"{a} read as {p} ({n}x)" for a, p, n in pairs)
                         + ".")
    misses = letters_other_signers_miss(confusions, extra)
    if misses:
        lines += ["", "Letters other signers still lose (right / photos per set; fewer than 80% right in a set):",
                  "", *misses, ""]
    lines += [
        ("- Trained on the Kaggle signer's right hand in one room and the photos of data.extra_train (other "
         "people: `metrics/variants/<variant>/signers.json` scores each with a head that never saw them): "
         if params.data.extra_train or params.data.extra_kaggle else "- Trained on one signer's right hand in one room: ")
        + "other hands, skin tones, lighting and camera angles are covered only as far as the extra sets above "
        "show. The mistakes above are mostly the training signers' own ways of forming letters, which no "
        "augmentation changes.",
        "- **A new signer should teach it their hand: one photo per letter** (the demo page's teach mode, or "
        "photos in `data/my-hand/<LETTER>/`, then `dvc repro`; docs/demo-page.md, \"Teach it your hand\"). In the "
        "measurement of `make bench` (personalisation) that lifts a new signer's other photos far more than "
        "any change of model here.",
        "- J and Z are motion letters in ASL: this model reads still frames; `spell` and the live page read J and Z "
        "from the hand's motion (motion.py).",
        "",
        "## Reproduce",
        "- Trained by " + (f"DVC experiment `{run['dvc_experiment']}` (`dvc exp apply {run['dvc_experiment']}` brings "
                           "it back)" if run.get("dvc_experiment") else "`dvc repro`")
        + (f"; training inputs (cached features, the head's params, the code) sha256 `{run[INPUTS_DIGEST]}`."
           if run.get(INPUTS_DIGEST) else "; fine-tuned, so it also read the photos: no inputs digest."),
        "- The git commit that holds this card's dvc.lock entry made it: "
        f"`git log -1 -- {VariantPaths(Path(), variant).model_card.as_posix()}`; check it out, then "
        "`dvc pull && dvc repro` rebuilds it. Params are in params.yaml.",
        "",
    ]
    return "\n".join(lines)
