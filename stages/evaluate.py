"""Stage evaluate VARIANT: score the variant's saved model, photo in, class out, on test, Kaggle's test photos
and the extra sets."""
import sys
from pathlib import Path

from asl_pipeline import dataset, evaluation, inference, model_card, training
from asl_pipeline.atomic import atomic_dir, atomic_files, read_json, write_json, write_text
from asl_pipeline.config import KAGGLE_TEST, input_path, params_from_record, variant_stage
from asl_pipeline.errors import PipelineError, exit_on_pipeline_error

PER_CLASS_COLUMNS = ["class", "images", "precision", "recall", "f1", "no_hand"]


def evaluation_sets(paths, extra_sets, classes) -> dict:
    """{set name: (image paths, labels)}: test, kaggle_test (if split wrote it), then each extra folder."""
    sets = {"test": dataset.read_manifest(paths.manifest("test"), classes)}
    if paths.manifest(KAGGLE_TEST).is_file():
        sets[KAGGLE_TEST] = dataset.read_manifest(paths.manifest(KAGGLE_TEST), classes)
    for folder in extra_sets:
        name = Path(folder).name
        if name in sets:
            raise PipelineError(f"evaluate.extra_sets: {folder} would be called {name!r}, which is taken; "
                                "rename the folder")
        sets[name] = dataset.read_labelled_folder(input_path(paths.root, folder), classes, paths.root)
    return sets


@exit_on_pipeline_error
def main():
    paths, name, params, variant = variant_stage(sys.argv)
    classifier = inference.load_classifier(variant.model_files.model)
    trained_with = params_from_record(classifier.run.get("params", {}), variant.model_files.run)  # before scoring
    classes = classifier.classes
    # evaluate.json holds the few scalars `dvc exp show` compares; the rest of each set's scores go to
    # evaluate_details.json, the model card and the per-class plots.
    details, reports, per_class, confusions = {}, [], {}, {}
    for set_name, (image_paths, labels) in evaluation_sets(paths, params.evaluate.extra_sets, classes).items():
        scored = evaluation.score(classifier, [paths.root / p for p in image_paths], image_paths,
                                  training.class_indices(labels, classes), params.evaluate.top_k,
                                  f"evaluate {name} {set_name}")
        for path, reason in scored.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        details[set_name] = scored.metrics
        reports.append(f"== {set_name} ({scored.metrics['n']} images)\n" + scored.report)
        per_class[set_name], confusions[set_name] = scored.per_class_rows, scored.confusion
        if set_name == "test":
            confusion, misclassified = scored.confusion, scored.misclassified
        found = f", hand found {scored.metrics['hand_found']:.3f}" if "hand_found" in scored.metrics else ""
        print(f"evaluate {name} {set_name}: accuracy {scored.metrics['accuracy']:.4f}, macro F1 "
              f"{scored.metrics['macro_f1']:.4f}, mirror consistency {scored.metrics['mirror_consistency']:.4f} "
              f"on {scored.metrics['n']} images{found}")
    # Accuracy first, and the sets unlike the training photos right after `test`: a narrow terminal's
    # `dvc exp show` keeps its leftmost metric columns.
    order = sorted(details, key=lambda set_name: {"test": 0, KAGGLE_TEST: 2}.get(set_name, 1))
    # Accuracy is compared in metrics/accuracy.json (the compare stage), beside the other variants.
    compared = {metric: {set_name: round(details[set_name][metric], 4) for set_name in order}
                for metric in ("mirror_consistency", "macro_f1")}
    card = model_card.model_card(name, trained_with, classifier.spec, classifier.run,
                                 read_json(paths.metrics / "split.json", "split")["counts"], details, confusions)
    outputs = (variant.metrics / "evaluate.json", variant.metrics / "evaluate_details.json",
               variant.metrics / "classification_report.txt",
               variant.plots / "confusion.csv", variant.eval / "misclassified.csv", variant.model_card)
    # Per-class scores are a plot per set, not metrics: `dvc exp show` stays a few columns wide.
    with atomic_dir(variant.plots / "per_class") as per_class_dir, \
            atomic_files(*outputs) as (metrics_tmp, details_tmp, report_tmp, confusion_tmp, misclassified_tmp,
                                       card_tmp):
        for set_name, rows in per_class.items():
            write_text(per_class_dir / f"{set_name}.csv", dataset.csv_text(PER_CLASS_COLUMNS, rows))
        write_json(metrics_tmp, compared)
        write_json(details_tmp, details)
        write_text(report_tmp, "\n".join(reports))
        write_text(confusion_tmp, dataset.csv_text(["actual", "predicted"], confusion))
        write_text(card_tmp, card)
        write_text(misclassified_tmp,
                   dataset.csv_text(["path", "label", "predicted", "probability"], misclassified))


if __name__ == "__main__":
    main()
