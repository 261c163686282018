"""Teach it your hand, measured: k photos per letter of each other signer in training, that signer's other
photos scored (asl_pipeline/personalisation.py). Part of `make bench`; alone:

    python benchmarks/personalisation.py [--draws 3] [--extra-weight 1 5 20] [--variant NAME]

It measures the variant that reads hand landmarks alone and serves (params.yaml serve.model, `reader` by
default; --variant another one), with that variant's train params (head, svm_c, landmark_copies,
extra_weight). Needs that variant's train features (`dvc repro featurize@reader`: data/features/reader/), the
hand bundle of the hand_model stage (models/hand_landmarker.task) and ../shared's asl-other-dev and
asl-webcam-dev (evaluate.extra_sets). Prints a table; benchmarks/run.py writes the figures into
benchmarks/results.json.

Keys:
  personalisation_k<k>_<set>   accuracy on a new signer's other photos after k photos per letter of theirs
                          joined training, mean over the set's signers (SUMMARY, one per k of KS and extra set)
  personalisation         per extra_weight, set and signer: each k's accuracy, spread and photos scored
  personalisation_variant, _extra_weight, _landmark_copies, _draws, _seconds   what was measured, and how long
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from common import REPO  # first: it puts this checkout on sys.path

from asl_pipeline import dataset, features, hand_model, images, progress, training  # noqa: E402
from asl_pipeline.atomic import read_json  # noqa: E402
from asl_pipeline.config import input_path, load_params, project_paths  # noqa: E402
from asl_pipeline.errors import exit_on_pipeline_error  # noqa: E402
from asl_pipeline.featurizers import Featurizer, FeatureSpec  # noqa: E402
from asl_pipeline.personalisation import personalisation, signer_of  # noqa: E402
from bench_variants import LANDMARKS, served_reader  # noqa: E402  (benchmarks/, the script's folder)

KS = (0, 1, 2)
SUMMARY = "personalisation_k{k}_{set_name}"  # and these, one per k and extra set
KEYS = ("personalisation", "personalisation_variant", "personalisation_extra_weight",
        "personalisation_landmark_copies", "personalisation_draws", "personalisation_seconds")
ABOUT = {"personalisation": "benchmarks/personalisation.py: per signer of evaluate.extra_sets, k photos per "
                            "letter of that signer added to the train features (counted train.extra_weight "
                            "times, reshaped copies as train makes), the svm head trained, that signer's other "
                            "photos scored; 3 draws of the k photos, mean; _k1_<set>: mean over the set's signers"}


def signer_sets(featurizer: Featurizer, folders, classes) -> dict:
    """{(set name, signer): (hand vectors, class indices)} of every photo of the other-people sets."""
    by_signer = {}
    for folder in folders:
        paths, labels = dataset.read_labelled_folder(folder, classes, folder)
        bar = progress.bar(len(paths), f"landmarks {folder.name}", iterable=zip(paths, labels))
        for path, label in bar:
            vector = featurizer.prepare(images.load_rgb(folder / path)).hand_vector
            rows = by_signer.setdefault((folder.name, signer_of(path)), ([], []))
            rows[0].append(vector)
            rows[1].append(label)
    return {key: (np.stack(vectors), training.class_indices(labels, classes))
            for key, (vectors, labels) in by_signer.items()}


def variant_features(paths, name: str, params):
    """(spec, train arrays) of variant `name`'s train features; SystemExit unless they are hand landmarks alone.
    Features made with other params than params.yaml's now (no `dvc repro` since) are measured, with a warning."""
    variant = paths.variant(name)
    spec = FeatureSpec.from_dict(read_json(variant.features / "meta.json", f"featurize@{name}")["spec"])
    if spec.featurizers != LANDMARKS:
        raise SystemExit(f"personalisation measures hand landmarks alone; {variant.features} holds "
                         f"{list(spec.featurizers)} features: run `dvc repro featurize@{name}`")
    if spec != FeatureSpec.from_params(params):
        print(f"WARNING: {variant.features} was made with other params than params.yaml's variant {name!r} now; "
              f"run `dvc repro featurize@{name}` to measure the current ones", file=sys.stderr)
    return spec, features.load_features(variant.features_file("train"), spec)


def measure(draws: int = 3, extra_weights=None, variant: str | None = None, root: Path = REPO) -> dict:
    """{"personalisation": {set: {signer: {k: accuracy}}}, ...} for results.json; extra_weights: also measure
    k = 1 with these train.extra_weight values. variant: the variant measured (default: the served one, which
    must read hand landmarks alone); root: the project (default: this checkout)."""
    paths = project_paths(root)
    project = load_params(paths.params)
    name = served_reader(project, variant)
    params = project.variant(name)
    spec, train = variant_features(paths, name, params)
    classes = params.split.classes
    y_train = training.class_indices(train["labels"], classes)
    # The bundle featurize read the train features with (the reader's model folder holds a copy of it).
    featurizer = Featurizer(spec, hand_model.verified_bundle(paths.hand_model))
    sets = signer_sets(featurizer, [input_path(paths.root, f) for f in params.evaluate.extra_sets], classes)
    results, started = {}, time.perf_counter()
    default_weight = params.train.extra_weight
    for weight in [default_weight] + [w for w in extra_weights or [] if w != default_weight]:
        train_params = dataclasses.replace(params.train, extra_weight=weight)
        ks = KS if weight == default_weight else (1,)
        scores = personalisation(train, y_train, sets, spec, train_params,
                                 len(classes), ks, draws)
        for score in scores:
            (set_name, signer), k = score.signer, score.k
            results.setdefault(weight, {}).setdefault(set_name, {}).setdefault(signer, {})[k] = {
                "accuracy": round(score.accuracy, 3), "spread": round(score.spread, 3), "scored": score.scored}
    default = results[default_weight]
    summary = {SUMMARY.format(k=k, set_name=set_name): round(float(np.mean(
        [signers[s][k]["accuracy"] for s in signers])), 3) for set_name, signers in default.items() for k in KS}
    return {"personalisation": {str(w): r for w, r in results.items()}, **summary,
            "personalisation_variant": name, "personalisation_extra_weight": default_weight,
            "personalisation_landmark_copies": params.train.landmark_copies, "personalisation_draws": draws,
            "personalisation_seconds": round(time.perf_counter() - started, 1)}


def table(figures: dict) -> str:
    lines = ["extra_weight  set             signer  " + "  ".join(f"k={k}" for k in KS)]
    for weight, sets in figures["personalisation"].items():
        for set_name, signers in sets.items():
            for signer, by_k in signers.items():
                cells = "  ".join(f"{by_k[k]['accuracy']:.3f}" if k in by_k else "  -  " for k in KS)
                lines.append(f"{weight:>12}  {set_name:<15} {signer:<7} {cells}")
    return "\n".join(lines)


@exit_on_pipeline_error
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--draws", type=int, default=3, help="draws of the k photos per signer and k")
    parser.add_argument("--extra-weight", type=int, nargs="*", default=[],
                        help="also measure k=1 with these train.extra_weight values")
    parser.add_argument("--variant", help="the params.yaml variant measured; it must read hand landmarks alone "
                                          "(default: serve.model)")
    args = parser.parse_args()
    figures = measure(args.draws, args.extra_weight, args.variant)
    print(table(figures))
    print({key: value for key, value in figures.items() if key != "personalisation"})


if __name__ == "__main__":
    main()
