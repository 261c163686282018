"""Stage split: validate every image once, drop duplicates, write leakage-free manifests."""
from asl_pipeline import atomic, dataset, extra
from asl_pipeline.config import input_path, load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    all_params = load_params(paths.params)
    params = all_params.split
    scored_elsewhere = dataset.folder_hashes(input_path(paths.root, folder)
                                             for folder in all_params.evaluate.extra_sets)
    manifests, report = dataset.make_split(paths.raw, paths.root, params,
                                           extra.read_manifests(paths.extra, all_params.data), scored_elsewhere)
    metrics = dataset.split_metrics(manifests, report)
    # Manifests and their counts are replaced together or not at all.
    with atomic.atomic_dir(paths.split) as tmp, atomic.atomic_files(paths.metrics / "split.json") as (metrics_tmp,):
        for name, items in manifests.items():
            (tmp / f"{name}.csv").write_text(dataset.manifest_csv(items), encoding="utf-8")
        (tmp / "skipped.csv").write_text(dataset.skipped_csv(report), encoding="utf-8")
        atomic.write_json(metrics_tmp, metrics)
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    if report.unknown_class_folders:
        print(f"ignored unknown class folders: {', '.join(report.unknown_class_folders)}")
    print(f"split ({params.strategy}): " + ", ".join(f"{k} {v}" for k, v in metrics["counts"].items())
          + f"; skipped {metrics['skipped_files']}, duplicates dropped {metrics['duplicates_dropped']}, "
          f"conflicting labels dropped {metrics['conflicting_labels_dropped']}, "
          f"Kaggle-test overlap dropped {metrics['kaggle_test_overlap_dropped']}, more signers' photos of "
          f"{', '.join(params.extra_exclude) or 'no class'} left out (split.extra_exclude) {metrics['extra_excluded']}")


if __name__ == "__main__":
    main()
