"""Stage signers VARIANT: leave-one-signer-out scores from the variant's cached features: for each training
signer, the variant's head trained without them reads their photos (asl_pipeline/signers.py)."""
import sys
import time

from asl_pipeline import features, signers, training
from asl_pipeline.atomic import read_json, write_json
from asl_pipeline.config import SPLITS, variant_stage
from asl_pipeline.errors import exit_on_pipeline_error
from asl_pipeline.featurizers import FeatureSpec


@exit_on_pipeline_error
def main():
    paths, name, params, variant = variant_stage(sys.argv)
    spec = FeatureSpec.from_dict(read_json(variant.features / "meta.json", f"featurize@{name}")["spec"])
    training.seed_everything(params.train.seed)
    splits = {split: features.load_features(variant.features_file(split), spec) for split in SPLITS}
    started = time.perf_counter()
    scores = signers.leave_one_signer_out(splits, params.split.classes, spec, params.train)
    write_json(variant.metrics / "signers.json", scores)
    print(f"signers {name}: " + ", ".join(f"{signer} {row['accuracy']:.3f} ({row['n']})"
                                          for signer, row in scores["signers"].items())
          + f"; mean {scores['mean']}; {len(scores['signers'])} heads in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
