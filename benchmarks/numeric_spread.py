"""How far the default model's scores move when the arithmetic underneath changes, as it does between machines.

The same commit and params gave different test accuracies on two x86 machines: TensorFlow and LiteRT pick
kernels by CPU (AVX2, AVX-512, ...), so features differ in their last bits and a model trained on them can
differ a little. No second machine is at hand here, so this swaps the kernels on this one:

- hand landmarks (the default featurizer): LiteRT with its default XNNPACK delegate at 1 and 2 threads,
  and TFLite's built-in kernels without XNNPACK (its reference kernels would take about half an hour);
- ResNet50 features (model.featurizers: [backbone]): TensorFlow with oneDNN on and off
  (TF_ENABLE_ONEDNN_OPTS), each in its own process (--backbone; slow).

For each kernel setting: how far the features move from the default's, and the scores of the head of the
params.yaml model variant that reads them (the reader's SVM for landmarks, the resnet50 variant's dense head
for ResNet50; benchmarks/bench_variants.py picks them by what they read) trained and tested on that
setting's features: the test split and ../shared/data/asl-other-dev. Features come from that variant's params
(hands, model); the head is trained on them as they are (no reshaped copies). Needs the split of a
`dvc repro` (data/split) and the hand_model stage's bundle (models/hand_landmarker.task) in the project root.

Run: python benchmarks/numeric_spread.py [--backbone]
"""
import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OTHER = REPO.parent / "shared" / "data" / "asl-other-dev"


def load_sets(project):
    """{split or set: (paths, labels)}; `project`: the ProjectParams (the split is shared by every variant)."""
    from asl_pipeline import dataset
    from asl_pipeline.config import project_paths

    paths, classes = project_paths(REPO), project.split.classes
    sets = {name: dataset.read_manifest(paths.manifest(name), classes) for name in ("train", "val", "test")}
    sets["asl-other-dev"] = dataset.read_labelled_folder(OTHER, classes, REPO)
    return sets


def hand_features(params, sets, resolver: str, threads: int) -> dict:
    """Hand vectors of every photo with LiteRT's kernels `resolver` at `threads` threads; `params`: the Params
    of the variant that reads hand landmarks alone."""
    from ai_edge_litert import interpreter as litert

    from asl_pipeline import hands, images
    from asl_pipeline.config import project_paths
    from asl_pipeline.featurizers import FeatureSpec, hand_vector

    hands.Interpreter = functools.partial(litert.Interpreter,
                                          experimental_op_resolver_type=litert.OpResolverType[resolver])
    spec = FeatureSpec.from_params(params)
    h = spec.hands
    landmarker = hands.HandLandmarker(project_paths(REPO).hand_model.read_bytes(),
                                      h.min_detection_confidence, h.min_presence_confidence, h.border,
                                      h.fallback_min_presence, num_threads=threads)
    return {name: np.stack([hand_vector(landmarker.detect(images.load_rgb(REPO / p)), spec) for p in paths])
            for name, (paths, _) in sets.items()}


def backbone_features(params, sets) -> dict:
    """ResNet50 features of every photo (random init, seeded as featurize does), in this process; `params`: the
    Params of the variant that reads the backbone alone."""
    import keras

    from asl_pipeline import backbones, features
    from asl_pipeline.featurizers import Featurizer, FeatureSpec

    spec = dataclasses.replace(FeatureSpec.from_params(params), featurizers=("backbone",), crop_to_hand=False)
    keras.utils.set_random_seed(params.split.seed)
    embedding = features.embedder(backbones.build_backbone(spec.backbone, spec.image_size, None), spec.backbone,
                                  spec.image_size)
    blocks = features.block_function(spec, embedding)
    featurizer = Featurizer(spec, None)
    return {name: features.featurize_split(featurizer, blocks, paths, labels, REPO, 32)[0]["backbone"]
            for name, (paths, labels) in sets.items()}


def scores(params, sets, feats) -> dict:
    """Test and asl-other-dev accuracy of the head of `params` (a variant's Params) trained on `feats`."""
    from asl_pipeline import training

    classes = params.split.classes
    y = {name: training.class_indices(labels, classes) for name, (_, labels) in sets.items()}
    training.seed_everything(params.train.seed)
    model, _ = training.train_head(feats["train"], y["train"], feats["val"], y["val"], len(classes), params.train)
    return {name: float((model.predict(feats[name], verbose=0).argmax(axis=1) == y[name]).mean())
            for name in ("test", "asl-other-dev")}


def spread(reference: dict, other: dict) -> dict:
    difference = np.concatenate([np.abs(reference[n] - other[n]).ravel() for n in reference])
    return {"max_abs_feature_difference": float(difference.max()),
            "identical_features": bool(difference.max() == 0)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", action="store_true", help="also ResNet50 with oneDNN on and off (slow)")
    parser.add_argument("--backbone-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from asl_pipeline.config import load_params
    from bench_variants import BACKBONE, LANDMARKS, variant_reading  # benchmarks/, the script's folder

    project = load_params(REPO / "params.yaml")
    sets = load_sets(project)
    reader = project.variant(variant_reading(project, LANDMARKS, "the hand-landmark figures"))
    if args.backbone or args.backbone_child:
        backbone = project.variant(variant_reading(project, BACKBONE, "the backbone figures (--backbone)"))
    if args.backbone_child:  # one oneDNN setting per process: TensorFlow reads it at import
        np.savez(args.backbone_child, **backbone_features(backbone, sets))
        return

    results = {}
    variants = [("XNNPACK, 1 thread (default)", "AUTO", 1), ("XNNPACK, 1 thread, again", "AUTO", 1),
                ("XNNPACK, 2 threads", "AUTO", 2), ("TFLite kernels, no XNNPACK", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", 1)]
    reference = None
    for name, resolver, threads in variants:
        feats = hand_features(reader, sets, resolver, threads)
        reference = reference or feats
        results[f"hand_landmarks: {name}"] = {**spread(reference, feats), **scores(reader, sets, feats)}
        print(name, results[f"hand_landmarks: {name}"], flush=True)
    if args.backbone:
        reference = None
        for onednn in ("1", "0"):
            out = Path(f"/tmp/numeric_spread_onednn{onednn}.npz")
            subprocess.run([sys.executable, __file__, "--backbone-child", str(out)], check=True,
                           env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn})
            with np.load(out) as data:
                feats = {key: data[key] for key in data.files}
            reference = reference or feats
            key = f"backbone: oneDNN {'on' if onednn == '1' else 'off'}"
            results[key] = {**spread(reference, feats), **scores(backbone, sets, feats)}
            print(key, results[key], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
