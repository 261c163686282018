"""Stage compare: every variant's accuracy per evaluated set and its signer-grouped mean (with its standard
error and the worst signer) in one small metrics file, metrics/accuracy.json, so that `dvc exp show` and
`dvc metrics diff` show the variants side by side in their first columns."""
from asl_pipeline import evaluation
from asl_pipeline.atomic import read_json, write_json
from asl_pipeline.config import load_params, project_paths
from asl_pipeline.errors import exit_on_pipeline_error


@exit_on_pipeline_error
def main():
    paths = project_paths()
    names = list(load_params(paths.params).variants)
    details = {name: read_json(paths.variant(name).metrics / "evaluate_details.json", f"evaluate@{name}")
               for name in names}
    signer_scores = {name: read_json(paths.variant(name).metrics / "signers.json", f"signers@{name}") for name in names}
    table = evaluation.accuracy_table(details, signer_scores)
    write_json(paths.metrics / "accuracy.json", table)
    print(evaluation.format_accuracy_table(table))


if __name__ == "__main__":
    main()
