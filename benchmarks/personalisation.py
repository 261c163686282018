"""Teach it your hand, measured: k photos per letter of each other signer in training, that signer's other
photos scored (asl_pipeline/personalisation.py). Part of `make bench`; alone:

    python benchmarks/personalisation.py [--draws 3] [--extra-weight 1 5 20]

Needs the pipeline's train features (`dvc repro featurize`) and ../shared's asl-other-dev and asl-webcam-dev.
Prints a table; benchmarks/run.py writes the figures into benchmarks/results.json.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asl_pipeline import dataset, features, hand_model, images, progress, training  # noqa: E402
from asl_pipeline.config import input_path, load_params, project_paths  # noqa: E402
from asl_pipeline.featurizers import Featurizer, FeatureSpec  # noqa: E402
from asl_pipeline.personalisation import personalisation, signer_of  # noqa: E402
from asl_pipeline.atomic import read_json  # noqa: E402

KS = (0, 1, 2)


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


def measure(draws: int = 3, extra_weights=None) -> dict:
    """{"personalisation": {set: {signer: {k: accuracy}}}, ...} for results.json; extra_weights: also measure
    k = 1 with these train.extra_weight values."""
    paths = project_paths(REPO)
    params = load_params(paths.params)
    spec = FeatureSpec.from_dict(read_json(paths.features / "meta.json", "featurize")["spec"])
    if spec.featurizers != ("hand_landmarks",):
        raise SystemExit(f"personalisation measures the hand-landmark model; the features are {spec.featurizers}")
    classes = params.split.classes
    train = features.load_features(paths.features_file("train"), spec)
    y_train = training.class_indices(train["labels"], classes)
    featurizer = Featurizer(spec, hand_model.verified_bundle(paths.model_files.hand_model))
    sets = signer_sets(featurizer, [input_path(paths.root, f) for f in params.evaluate.extra_sets], classes)
    results, started = {}, time.perf_counter()
    for weight in [params.train.extra_weight] + list(extra_weights or []):
        train_params = dataclasses.replace(params.train, extra_weight=weight)
        ks = KS if weight == params.train.extra_weight else (1,)
        scores = personalisation(train, y_train, sets, spec, train_params,
                                 len(classes), ks, draws)
        for score in scores:
            (set_name, signer), k = score.signer, score.k
            results.setdefault(weight, {}).setdefault(set_name, {}).setdefault(signer, {})[k] = {
                "accuracy": round(score.accuracy, 3), "spread": round(score.spread, 3), "scored": score.scored}
    default = results[params.train.extra_weight]
    summary = {f"personalisation_k{k}_{set_name}": round(float(np.mean(
        [signers[s][k]["accuracy"] for s in signers])), 3) for set_name, signers in default.items() for k in KS}
    return {"personalisation": {str(w): r for w, r in results.items()}, **summary,
            "personalisation_extra_weight": params.train.extra_weight, "personalisation_draws": draws,
            "personalisation_seconds": round(time.perf_counter() - started, 1)}


def table(figures: dict) -> str:
    lines = ["extra_weight  set             signer  " + "  ".join(f"k={k}" for k in KS)]
    for weight, sets in figures["personalisation"].items():
        for set_name, signers in sets.items():
            for signer, by_k in signers.items():
                cells = "  ".join(f"{by_k[k]['accuracy']:.3f}" if k in by_k else "  -  " for k in KS)
                lines.append(f"{weight:>12}  {set_name:<15} {signer:<7} {cells}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3, help="draws of the k photos per signer and k")
    parser.add_argument("--extra-weight", type=int, nargs="*", default=[],
                        help="also measure k=1 with these train.extra_weight values")
    args = parser.parse_args()
    figures = measure(args.draws, args.extra_weight)
    print(table(figures))
    print({key: value for key, value in figures.items() if key != "personalisation"})


if __name__ == "__main__":
    main()
