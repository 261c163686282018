"""Stage featurize VARIANT: every manifest's feature blocks (backbone, hand landmarks) for one model variant,
computed once."""
import sys

import keras

from asl_pipeline import backbones, dataset, evaluation, features, hand_model
from asl_pipeline.atomic import atomic_dir, atomic_files, write_json
from asl_pipeline.config import KAGGLE_TEST, SPLITS, variant_stage
from asl_pipeline.errors import exit_on_pipeline_error
from asl_pipeline.featurizers import Featurizer, FeatureSpec, hand_found


@exit_on_pipeline_error
def main():
    paths, name, params, variant = variant_stage(sys.argv)
    m, f = params.model, params.featurize
    spec = FeatureSpec.from_params(params)
    keras.utils.set_random_seed(params.split.seed)
    keras.config.set_dtype_policy(f.precision)
    embedding_model, weights_used, pretrained = None, "not used", None
    if spec.uses_backbone:
        backbone_model, weights_used, pretrained = backbones.resolve_weights(m.backbone, m.weights, m.image_size)
        embedding_model = features.embedder(backbone_model, m.backbone, m.image_size)
    bundle = hand_model.verified_bundle(paths.hand_model) if spec.uses_hands else None
    featurizer = Featurizer(spec, bundle)
    blocks = features.block_function(spec, embedding_model)
    split_names = [s for s in SPLITS + (KAGGLE_TEST,) if s in SPLITS or paths.manifest(s).is_file()]
    counts, seconds, found = {}, 0.0, {}
    # Features and their metrics are replaced together or not at all.
    outputs = (variant.metrics / "featurize.json", variant.metrics / "hands.json",
               variant.metrics / "hands_per_class.json")
    with atomic_dir(variant.features) as tmp, atomic_files(*outputs) as (metrics_tmp, hands_tmp, per_class_tmp):
        for split_name in split_names:
            image_paths, labels, origins = dataset.read_manifest(paths.manifest(split_name), params.split.classes,
                                                                 with_origins=True)
            copies = f.augment_copies if split_name == "train" else 0
            arrays, took = features.featurize_split(featurizer, blocks, image_paths, labels, paths.root,
                                                    f.batch_size, copies, params.split.seed, f.horizontal_flip,
                                                    f"featurize {name} {split_name}", origins)
            features.save_features(tmp / f"{split_name}.npz", arrays)
            counts[split_name], seconds = len(arrays["labels"]), seconds + took
            widths = ", ".join(f"{key} {arrays[key].shape[1]}" for key in ("backbone", "hand") if key in arrays)
            print(f"featurize {name} {split_name}: {counts[split_name]} images -> {widths} features in {took:.1f} s")
            if spec.uses_hands:
                originals = arrays["views"] == 0
                found[split_name] = evaluation.hand_counts(arrays["labels"][originals],
                                                     hand_found(arrays["hand"][originals]))
        if spec.uses_backbone:
            backbone_model.save_weights(tmp / "backbone.weights.h5")
        write_json(tmp / "meta.json", {"spec": spec.to_dict(), "weights": weights_used, "pretrained": pretrained})
        total = sum(counts.values())
        # What describes the features, not the machine: the speed is printed below (and measured by make bench),
        # so a run on another machine leaves this file as it was.
        metrics = {"pretrained": pretrained, "images": total}
        if spec.uses_hands:
            metrics["hand_found"] = evaluation.hand_found_rates(found)
        write_json(metrics_tmp, metrics)
        # The one hand-detection figure `dvc exp show` compares: the whole sample, outside `nothing`.
        write_json(hands_tmp, {"hand_found": metrics["hand_found"]["all_outside_nothing"] if found else None})
        write_json(per_class_tmp, found)
    print(f"featurize {name}: {total} images at {total / seconds:.1f} images/s; backbone weights: {weights_used}")
    if spec.uses_hands:
        rates = metrics["hand_found"]
        print(f"featurize {name}: hand found in " + ", ".join(f"{k} {v}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
