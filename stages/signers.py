"""Stage signers VARIANT: signer-grouped scores from the variant's cached features: each training signer is read
by the variant's head trained without their fold of signers (asl_pipeline/signers.py). Writes the per-signer
details (metrics/variants/VARIANT/signers.json, not a DVC metric: compare puts the mean, its standard error and
the worst signer in metrics/accuracy.json) and the per-signer plot (plots/variants/VARIANT/signers.csv)."""
import sys
import time

from asl_pipeline import dataset, features, signers, training
from asl_pipeline.atomic import atomic_files, read_json, write_json, write_text
from asl_pipeline.config import INPUTS_DIGEST, SPLITS, variant_stage
from asl_pipeline.errors import exit_on_pipeline_error
from asl_pipeline.featurizers import FeatureSpec


@exit_on_pipeline_error
def main():
    paths, name, params, variant = variant_stage(sys.argv)
    details, plot = variant.metrics / "signers.json", variant.plots / "signers.csv"
    folds = params.evaluate.signer_folds
    # The folds fit heads on features alone: the digest covers all they read, fine-tuning params excepted.
    # `dvc exp run -S train.epochs=30` re-runs this stage for the reader, which keeps its folds.
    digest = training.inputs_digest(params, variant.features, __file__, also={"signer_folds": folds},
                                    unread=training.FINE_TUNE_PARAMS)
    if training.digest_is_current(details, digest, [details, plot]):
        print(f"signers {name}: nothing the {params.train.head} head's folds read has changed; {details} kept")
        return
    spec = FeatureSpec.from_dict(read_json(variant.features / "meta.json", f"featurize@{name}")["spec"])
    training.seed_everything(params.train.seed)
    splits = {split: features.load_features(variant.features_file(split), spec) for split in SPLITS}
    started = time.perf_counter()
    scores = signers.grouped_signer_scores(splits, params.split.classes, spec, params.train, folds)
    rows = [(signer, row["accuracy"], row["n"], row["fold"]) for signer, row in scores["signers"].items()]
    with atomic_files(details, plot) as (details_tmp, plot_tmp):
        write_json(details_tmp, scores | {INPUTS_DIGEST: digest})
        write_text(plot_tmp, dataset.csv_text(["signer", "accuracy", "n", "fold"], rows))
    worst = ", ".join(f"{signer} {scores['signers'][signer]['accuracy']:.3f}" for signer in scores["worst"])
    print(f"signers {name}: {len(rows)} signers in {scores['folds']} folds, mean {scores['mean']} "
          f"(standard error {scores['standard_error']}); worst: {worst}; "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
