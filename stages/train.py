"""Stage train VARIANT: fit the variant's head on its cached features, optionally fine-tune, and save one
self-contained model folder, models/VARIANT/."""
import dataclasses
import io
import sys

from dvclive import Live

from asl_pipeline import features, hand_model, model, plots, training
from asl_pipeline.atomic import atomic_dir, atomic_files, read_json, write_json, write_text
from asl_pipeline.config import INPUTS_DIGEST, ModelFiles, variant_stage
from asl_pipeline.errors import exit_on_pipeline_error
from asl_pipeline.featurizers import Featurizer, FeatureSpec


def _summary(network) -> str:
    lines = io.StringIO()
    network.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
    return lines.getvalue()


@exit_on_pipeline_error
def main():
    paths, name, params, variant = variant_stage(sys.argv)
    t, classes = params.train, params.split.classes
    meta = read_json(variant.features / "meta.json", f"featurize@{name}")
    # Before any loading: a head whose inputs have not changed keeps its model.
    outputs = (variant.plots / "learning_curves.png", variant.metrics / "train.json")
    # Fine-tuning reads the photos, which the digest leaves out: a fine-tuned model is always trained again.
    digest = None if t.fine_tune_epochs else training.inputs_digest(params, variant.features, __file__)
    files = variant.model_files
    if digest and training.digest_is_current(files.run, digest, [files.model, files.labels, files.spec, *outputs,
                                                                 variant.plots / "train"]):
        print(f"train {name}: nothing this variant's {t.head} head reads has changed; {variant.model_dir} kept")
        return
    strategy = training.distribution_strategy(t.distribute)
    training.seed_everything(t.seed)
    spec = FeatureSpec.from_dict(meta["spec"])
    train = features.load_features(variant.features_file("train"), spec)
    val = features.load_features(variant.features_file("val"), spec)
    y_train = training.class_indices(train["labels"], classes)
    y_val = training.class_indices(val["labels"], classes)
    bundle = hand_model.verified_bundle(paths.hand_model) if spec.uses_hands else None

    # Every output is written to a temporary sibling and all are renamed into place at the end, so a failed
    # run keeps the previous model folder, curves and metrics together. dvclive empties its folder when it
    # starts, so it logs into a temporary one too.
    with atomic_dir(variant.plots / "train") as live_dir, atomic_dir(variant.model_dir) as model_dir, \
            atomic_files(*outputs) as (curves_tmp, metrics_tmp):
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live, strategy.scope():
            logger = training.LiveLogger(live)
            train_x, train_y = training.training_rows(train, y_train, spec, t)
            head, summary = training.train_head(train_x, train_y, features.head_input(val, spec), y_val,
                                                len(classes), t, [logger])
            backbone_model = None
            if spec.uses_backbone:
                backbone_model = training.build_backbone_from(variant.features / "backbone.weights.h5",
                                                              spec.backbone, spec.image_size)
            classifier = model.assemble(spec, backbone_model, head)
            head_epochs = len(logger.history)
            if t.fine_tune_epochs:
                summary = training.fine_tune(classifier, Featurizer(spec, bundle), paths.root, train, y_train,
                                             val, y_val, t, [logger])

        files = ModelFiles(model_dir / "model.keras")
        model.save_model(classifier, classes, spec, files.model, files.labels, files.spec)
        if bundle is not None:  # the folder alone is enough to read photos
            files.hand_model.write_bytes(bundle)
        # The params the model was trained with: its model card is written from them, not from params.yaml.
        write_json(files.run, {"variant": name, "pretrained": meta["pretrained"], "backbone_weights": meta["weights"],
                               **training.provenance(), "params": dataclasses.asdict(params),
                               INPUTS_DIGEST: digest})
        write_text(model_dir / "model_summary.txt", _summary(classifier))
        plots.learning_curves(logger.history, curves_tmp, head_epochs if t.fine_tune_epochs else None)
        metrics = {"pretrained": meta["pretrained"], "fine_tuned": bool(t.fine_tune_epochs),
                   "best_epoch": summary["best_epoch"], "epochs_run": len(logger.history),
                   "train_loss": summary["loss"], "train_accuracy": summary["accuracy"]}
        if "val_loss" in summary:
            metrics |= {"val_loss": summary["val_loss"], "val_accuracy": summary["val_accuracy"]}
        # Four places, as every accuracy in metrics/: the last bits of a float differ between CPUs and would
        # show in `dvc metrics diff` as a change of nothing.
        metrics = {key: round(value, 4) if isinstance(value, float) else value for key, value in metrics.items()}
        write_json(metrics_tmp, metrics)
    print(f"train {name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in metrics.items()))


if __name__ == "__main__":
    main()
