"""Stage featurize: embed every manifest's images once with the frozen backbone."""
import keras

from asl_pipeline import backbones, dataset, features
from asl_pipeline.atomic import atomic_dir, atomic_files, write_json
from asl_pipeline.config import KAGGLE_TEST, SPLITS, load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    params = load_params(paths.params)
    m, f = params.model, params.featurize
    keras.utils.set_random_seed(params.split.seed)
    keras.config.set_dtype_policy(f.precision)
    backbone_model, weights_used, pretrained = backbones.resolve_weights(m.backbone, m.weights, m.image_size)
    embedding_model = features.embedder(backbone_model, m.backbone, m.image_size)
    augment = features.augmentation(f.horizontal_flip, params.split.seed) if f.augment_copies else None
    names = [s for s in SPLITS + (KAGGLE_TEST,) if s in SPLITS or paths.manifest(s).is_file()]
    counts, seconds = {}, 0.0
    # Features and their metrics are replaced together or not at all.
    with atomic_dir(paths.features) as tmp, atomic_files(paths.metrics / "featurize.json") as (metrics_tmp,):
        for name in names:
            image_paths, labels = dataset.read_manifest(paths.manifest(name), params.split.classes)
            copies = f.augment_copies if name == "train" else 0
            feats, labels, image_paths, views, took = features.featurize_split(
                embedding_model, image_paths, labels, paths.root, m.image_size, f.batch_size, augment, copies)
            features.save_features(tmp / f"{name}.npz", feats, labels, image_paths, views)
            counts[name], seconds = len(feats), seconds + took
            print(f"featurize {name}: {len(feats)} images -> {feats.shape[1]} features in {took:.1f} s")
        backbone_model.save_weights(tmp / "backbone.weights.h5")
        write_json(tmp / "meta.json", {"backbone": m.backbone, "image_size": m.image_size,
                                       "weights": weights_used, "pretrained": pretrained})
        total = sum(counts.values())
        write_json(metrics_tmp, {
            "pretrained": pretrained, "images": total, "seconds": round(seconds, 1),
            "images_per_second": round(total / seconds, 1) if seconds else None,
        })
    print(f"featurize: {total} images at {total / seconds:.1f} images/s; weights: {weights_used}")


if __name__ == "__main__":
    main()
