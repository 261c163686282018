"""Stage train: fit the head on cached features, optionally fine-tune, save one self-contained model."""
import io

from dvclive import Live

from asl_pipeline import features, hand_model, model, plots, training
from asl_pipeline.atomic import atomic_dir, atomic_files, read_json, write_json, write_text
from asl_pipeline.config import load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error
from asl_pipeline.featurizers import Featurizer, FeatureSpec


def _summary(network) -> str:
    lines = io.StringIO()
    network.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
    return lines.getvalue()


@exit_on_pipeline_error
def main():
    paths = project_paths()
    params = load_params(paths.params)
    t, classes = params.train, params.split.classes
    strategy = training.distribution_strategy(t.distribute)
    training.seed_everything(t.seed)
    meta = read_json(paths.features / "meta.json", "featurize")
    spec = FeatureSpec.from_dict(meta["spec"])
    train = features.load_features(paths.features_file("train"), spec)
    val = features.load_features(paths.features_file("val"), spec)
    y_train = training.class_indices(train["labels"], classes)
    y_val = training.class_indices(val["labels"], classes)

    # Every output is written to a temporary sibling and all are renamed into place at the end, so a failed
    # run keeps the previous model, class names, curves and metrics together. dvclive empties its folder
    # when it starts, so it logs into a temporary one too.
    files = paths.model_files
    outputs = (files.model, files.labels, files.spec, files.run,
               paths.models / "model_summary.txt", paths.plots / "learning_curves.png", paths.metrics / "train.json")
    with atomic_dir(paths.plots / "train") as live_dir, atomic_files(*outputs) as tmp:
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live, strategy.scope():
            logger = training.LiveLogger(live)
            train_x, train_y = training.training_rows(train, y_train, spec, t)
            head, summary = training.train_head(train_x, train_y, features.head_input(val, spec), y_val,
                                                len(classes), t, [logger])
            backbone_model = None
            if spec.uses_backbone:
                backbone_model = training.build_backbone_from(paths.features / "backbone.weights.h5",
                                                              spec.backbone, spec.image_size)
            classifier = model.assemble(spec, backbone_model, head)
            head_epochs = len(logger.history)
            if t.fine_tune_epochs:
                bundle = hand_model.verified_bundle(files.hand_model) if spec.uses_hands else None
                summary = training.fine_tune(classifier, Featurizer(spec, bundle), paths.root, train, y_train,
                                             val, y_val, t, [logger])

        model_tmp, labels_tmp, spec_tmp, run_tmp, summary_tmp, curves_tmp, metrics_tmp = tmp
        model.save_model(classifier, classes, spec, model_tmp, labels_tmp, spec_tmp)
        write_json(run_tmp, {"pretrained": meta["pretrained"], "backbone_weights": meta["weights"],
                             **training.provenance(paths.root)})
        write_text(summary_tmp, _summary(classifier))
        plots.learning_curves(logger.history, curves_tmp, head_epochs if t.fine_tune_epochs else None)
        metrics = {"pretrained": meta["pretrained"], "fine_tuned": bool(t.fine_tune_epochs),
                   "best_epoch": summary["best_epoch"], "epochs_run": len(logger.history),
                   "train_loss": summary["loss"], "train_accuracy": summary["accuracy"]}
        if "val_loss" in summary:
            metrics |= {"val_loss": summary["val_loss"], "val_accuracy": summary["val_accuracy"]}
        write_json(metrics_tmp, metrics)
    print("train: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in metrics.items()))


if __name__ == "__main__":
    main()
