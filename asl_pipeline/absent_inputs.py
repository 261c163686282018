"""params.yaml for a clone that lacks folders outside the repository: `python -m asl_pipeline drop-absent`.

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
from asl_pipeline.config import input_path, input_root, load_params


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
