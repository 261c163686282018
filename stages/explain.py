"""Stage explain VARIANT: Grad-CAM overlays, or for a landmarks-only model hand skeletons with joints coloured
by their weight, of typical and misclassified test images, in plots/variants/VARIANT/explain/."""
import sys

from asl_pipeline.config import variant_stage
from asl_pipeline.errors import exit_on_pipeline_error
from asl_pipeline.explain import explain_test_set


@exit_on_pipeline_error
def main():
    paths, name, params, variant = variant_stage(sys.argv)
    summary = explain_test_set(paths, variant, params.explain)
    print(f"explain {name}: {summary.written} explanations ({summary.misclassified} misclassified, target "
          f"{params.explain.target} class) and grid.png in {summary.out_dir}; "
          f"{summary.skipped} unreadable images skipped")


if __name__ == "__main__":
    main()
