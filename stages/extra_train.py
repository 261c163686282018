"""Stage extra_train NAME: data.extra_train's entry NAME (a folder or .zip of more signers' photos, training
only) copied into data/extra/NAME; `--kaggle`: data.extra_kaggle's datasets into data/extra/kaggle."""
import sys

from asl_pipeline import extra
from asl_pipeline.config import EXTRA_KAGGLE_NAME, load_params, project_paths
from asl_pipeline.errors import PipelineError, exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    data = load_params(paths.params).data
    if len(sys.argv) != 2:
        raise PipelineError("usage: python -m stages.extra_train NAME (an entry of data.extra_train) | --kaggle; "
                            "`dvc repro` passes it")
    if sys.argv[1] == "--kaggle":
        counts = extra.gather_kaggle(data.extra_kaggle, paths.root, paths.extra / EXTRA_KAGGLE_NAME)
        print("extra_kaggle: " + (", ".join(f"{origin} {n} photos" for origin, n in counts.items()) or "none"))
        return
    name = sys.argv[1]
    if name not in data.extra_train:
        raise PipelineError(f"data.extra_train has no entry {name!r} (it has {list(data.extra_train)})")
    count = extra.gather(name, data.extra_train[name], paths.root, paths.extra / name)
    print(f"extra_train {name}: {count} photos from {data.extra_train[name]}")


if __name__ == "__main__":
    main()
