"""Stage evaluate: run the saved model on the test images (and Kaggle's own test photos)."""
from asl_pipeline import dataset, evaluation, features, model, training
from asl_pipeline.atomic import atomic_files, read_json, write_json, write_text
from asl_pipeline.config import KAGGLE_TEST, load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error

BATCH_SIZE = 32


@exit_on_pipeline_error
def main():
    paths = project_paths()
    params = load_params(paths.params)
    classifier, classes = model.load_model(paths.model_file, paths.labels_file)
    image_size = model.image_size_of(classifier)
    pretrained = read_json(paths.metrics / "train.json", "train")["pretrained"]
    results, reports = {"pretrained": pretrained}, []
    for name in ("test", KAGGLE_TEST):
        if name == KAGGLE_TEST and not paths.manifest(name).is_file():
            continue
        image_paths, labels = dataset.read_manifest(paths.manifest(name), classes)
        probabilities = classifier.predict(
            features.image_dataset(image_paths, paths.root, image_size, BATCH_SIZE), verbose=0)
        y_true = training.class_indices(labels, classes)
        results[name] = evaluation.classification_metrics(y_true, probabilities, classes, params.evaluate.top_k)
        reports.append(f"== {name} ({len(labels)} images)\n" + evaluation.report_text(y_true, probabilities, classes))
        if name == "test":
            predicted = probabilities.argmax(axis=1)
            confusion = [(classes[t], classes[p]) for t, p in zip(y_true, predicted)]
            misclassified = evaluation.misclassified_rows(image_paths, y_true, probabilities, classes)
        print(f"evaluate {name}: accuracy {results[name]['accuracy']:.4f}, "
              f"macro F1 {results[name]['macro_f1']:.4f} on {len(labels)} images")
    outputs = (paths.metrics / "evaluate.json", paths.metrics / "classification_report.txt",
               paths.plots / "confusion.csv", paths.eval / "misclassified.csv")
    with atomic_files(*outputs) as (metrics_tmp, report_tmp, confusion_tmp, misclassified_tmp):
        write_json(metrics_tmp, results)
        write_text(report_tmp, "\n".join(reports))
        write_text(confusion_tmp, dataset.csv_text(["actual", "predicted"], confusion))
        write_text(misclassified_tmp,
                   dataset.csv_text(["path", "label", "predicted", "probability"], misclassified))


if __name__ == "__main__":
    main()
