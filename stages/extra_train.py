"""Stage extra_train: data.extra_train's photos (more signers, training only) gathered into data/extra."""
from asl_pipeline import extra
from asl_pipeline.config import load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    sources = load_params(paths.params).data.extra_train
    report = extra.gather(sources, paths.root, paths.extra)
    counts = ", ".join(f"{origin} {n}" for origin, n in report["photos"].items()) or "none"
    print(f"extra_train: {'rebuilt' if report['changed'] else 'unchanged'} ({len(sources)} sources); photos: {counts}")


if __name__ == "__main__":
    main()
