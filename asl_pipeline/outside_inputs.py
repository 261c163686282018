"""Folders outside the repository that params.yaml names (../shared): `python -m asl_pipeline drop-absent` fits
params.yaml to a clone that lacks them, `python -m asl_pipeline link-outside` lets DVC's experiment copies
reach the ones it has. `make pipeline` runs both before `dvc repro`.

params.yaml names the team's folders beside the repository (../shared: four more signers to train on, two dev
sets to score on). A clone of the public repository has none of them, and DVC stops at a dependency that does
not exist. Rather than skip an absent folder at run time, which would train a different model from the same
params.yaml and dvc.lock on each machine, this removes it from params.yaml, so the params say what the model
learned from and `git diff params.yaml` shows the change. A folder inside the repository is never removed:
there an absent one is a typo, and DVC's error naming it stays.
"""
import io
from pathlib import Path

from ruamel.yaml import YAML

from asl_pipeline.atomic import write_text
from asl_pipeline.config import EXPERIMENT_COPIES, input_path, input_root, load_params
from asl_pipeline.errors import PipelineError


def _outside_and_absent(root: Path, folder: str) -> bool:
    path = input_path(root, folder)
    return not path.exists() and not path.resolve().is_relative_to(input_root(root).resolve())


def absent_outside(root: Path) -> list:
    """(param, folder) of every data.extra_train entry and evaluate.extra_sets folder of root/params.yaml that
    lies outside the repository and does not exist."""
    params = load_params(Path(root) / "params.yaml")
    return ([(f"data.extra_train.{name}", folder) for name, folder in params.data.extra_train.items()
             if _outside_and_absent(root, folder)]
            + [("evaluate.extra_sets", folder) for folder in params.evaluate.extra_sets
               if _outside_and_absent(root, folder)])


def drop_absent(root: Path) -> list:
    """Remove absent_outside(root) from root/params.yaml, keeping its comments and layout; what was removed."""
    params_file = Path(root) / "params.yaml"
    absent = absent_outside(root)
    if not absent:
        return []
    yaml = YAML()  # round-trip: comments, order and flow lists stay as the user wrote them
    yaml.width = 4096
    raw = yaml.load(params_file.read_text(encoding="utf-8"))
    for param, folder in absent:
        if param == "evaluate.extra_sets":
            raw["evaluate"]["extra_sets"].remove(folder)
        else:
            del raw["data"]["extra_train"][param.rsplit(".", 1)[1]]
    text = io.StringIO()
    yaml.dump(raw, text)
    write_text(params_file, text.getvalue())
    return absent


def link_outside(root: Path) -> list:
    """Links under root/.dvc/tmp/exps/ so that each data.extra_train folder given relative to the project and
    outside it (../shared/data/asl-signers) is found from DVC's copies of the project; (link, target) of each
    link made or already there.

    A queued or temporary experiment runs in root/.dvc/tmp/exps/<copy>/, where DVC resolves a stage's
    dependency ../shared/... to root/.dvc/tmp/exps/shared/...: a link there to the real root/../shared makes
    the committed params work unchanged. (The stages themselves read inputs from the real project root,
    config.input_root.) The links are this machine's, in DVC's ignored tmp folder, like its cache.
    """
    root = Path(root).absolute()
    copies = root.joinpath(*EXPERIMENT_COPIES)
    links = {}
    for name, folder in load_params(root / "params.yaml").data.extra_train.items():
        parts = Path(folder).parts
        ups = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
        if ups == 0 or Path(folder).is_absolute():
            continue  # inside the project (copied with it), or absolute
        if ups > len(EXPERIMENT_COPIES):
            raise PipelineError(f"params.yaml: data.extra_train.{name} is {folder}, {ups} folders above the project: "
                                "DVC's experiment copies cannot reach it; give it as an absolute path")
        if not (root / folder).exists():
            continue  # drop-absent's to remove
        # From root/.dvc/tmp/exps/<copy>/, `ups` times `..` leads to this folder, where the path goes on.
        link = (copies / "copy").parents[ups - 1] / parts[ups]
        links[link] = (root.joinpath(*parts[:ups + 1])).resolve()
    for link, target in links.items():
        if link.is_symlink() and link.resolve() == target:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise PipelineError(f"{link} exists and is not a link: remove it so that `link-outside` can link it "
                                f"to {target}")
        link.symlink_to(target, target_is_directory=True)
    return list(links.items())
