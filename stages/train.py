"""Stage train: fit the head on cached features, optionally fine-tune, save one self-contained model."""
import io

from dvclive import Live

from asl_pipeline import features, model, plots, training
from asl_pipeline.atomic import atomic_dir, atomic_files, read_json, write_json, write_text
from asl_pipeline.config import load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


def _summary(network) -> str:
    lines = io.StringIO()
    network.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
    return lines.getvalue()


@exit_on_pipeline_error
def main():
    paths = project_paths()
    params = load_params(paths.params)
    t, classes = params.train, params.split.classes
    training.seed_everything(t.seed)
    meta = read_json(paths.features / "meta.json", "featurize")
    train = features.load_features(paths.features_file("train"))
    val = features.load_features(paths.features_file("val"))
    y_train = training.class_indices(train["labels"], classes)
    y_val = training.class_indices(val["labels"], classes)

    # Every output is written to a temporary sibling and all are renamed into place at the end, so a failed
    # run keeps the previous model, class names, curves and metrics together. dvclive empties its folder
    # when it starts, so it logs into a temporary one too.
    outputs = (paths.model_file, paths.labels_file, paths.models / "model_summary.txt",
               paths.plots / "learning_curves.png", paths.metrics / "train.json")
    with atomic_dir(paths.plots / "train") as live_dir, atomic_files(*outputs) as tmp:
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            logger = training.LiveLogger(live)
            head, summary = training.train_head(train["features"], y_train, val["features"], y_val,
                                                len(classes), t, [logger])
            backbone_model = training.build_backbone_from(paths.features / "backbone.weights.h5",
                                                          meta["backbone"], meta["image_size"])
            classifier = model.assemble(backbone_model, head, meta["backbone"], meta["image_size"])
            head_epochs = len(logger.history)
            if t.fine_tune_epochs:
                originals = train["views"] == 0
                train_ds = features.image_dataset(train["paths"][originals], paths.root, meta["image_size"],
                                                  t.batch_size, labels=y_train[originals], shuffle_seed=t.seed)
                val_ds = features.image_dataset(val["paths"], paths.root, meta["image_size"], t.batch_size,
                                                labels=y_val) if len(y_val) else None
                summary = training.fine_tune(classifier, train_ds, val_ds, t, [logger])

        model_tmp, labels_tmp, summary_tmp, curves_tmp, metrics_tmp = tmp
        model.save_model(classifier, classes, model_tmp, labels_tmp)
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
