"""Stage download: the Kaggle dataset (or a local copy) normalized into data/raw."""
from asl_pipeline import download
from asl_pipeline.atomic import write_json
from asl_pipeline.config import input_path, load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    params = load_params(paths.params).data
    report = download.fetch_dataset(params.source, input_path(paths.root, params.local_dir), params.kaggle_dataset,
                                    paths.raw)
    counts = report["images_per_class"]
    print(f"download: source {report['source']} ({report['origin']}): {sum(counts.values())} images "
          f"in {len(counts)} classes, {report['test_images']} test images")
    print("  " + ", ".join(f"{label} {n}" for label, n in counts.items()))
    write_json(paths.metrics / "download.json", {
        "source": report["source"], "train_images": sum(counts.values()), "classes": len(counts),
        "test_images": report["test_images"], "skipped_symlinks": len(report["skipped_symlinks"])})


if __name__ == "__main__":
    main()
