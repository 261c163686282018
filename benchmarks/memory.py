"""Memory: the peak RSS of featurize ([backbone, hand_landmarks]) on N photos and on 4N, each in a child
process of its own (this script, run by measure()), so that each peak is featurize's alone.

Keys:
  rss_growth              peak RSS of featurize ([backbone, hand_landmarks]) on 4N images over N images
                          (rss_peak_n_mib, rss_peak_4n_mib: the two peaks; rss_n_images: N, --memory-images)
  rss_growth_net          the same above the RSS before featurize starts
"""
import argparse
import json
import resource
import subprocess
import sys

from common import BUNDLE, TRAIN_DIR, log, reset_peak_rss, rss_mib, sample_photos, spec_for

KEYS = ("rss_growth", "rss_peak_n_mib", "rss_peak_4n_mib", "rss_n_images", "rss_growth_net")
ABOUT = {"rss_growth": "[backbone, hand_landmarks] featurize in a child process: whole-process peak RSS "
                       "while it runs (peak reset after the model is built); rss_growth_net: above the RSS "
                       "before it"}


def probe(images: int, image_size: int, batch_size: int) -> None:
    """Child process: featurize `images` photos with [backbone, hand_landmarks]; print peak RSS (MiB)."""
    from asl_pipeline import backbones, features, hand_model
    from asl_pipeline.featurizers import Featurizer

    paths, labels = sample_photos(images)
    spec = spec_for(["backbone", "hand_landmarks"], image_size)
    embedder = features.embedder(backbones.build_backbone("resnet50", image_size, None), "resnet50", image_size)
    featurizer = Featurizer(spec, hand_model.verified_bundle(BUNDLE))
    blocks = features.block_function(spec, embedder)
    before = rss_mib("VmRSS")
    whole_process_peak = reset_peak_rss()  # building the model peaks higher than featurize: count featurize only
    arrays, seconds = features.featurize_split(featurizer, blocks, paths, labels, TRAIN_DIR, batch_size,
                                               description="bench memory")
    peak = (rss_mib("VmHWM") if whole_process_peak is not None
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"images": len(paths), "peak_mib": peak, "before_mib": before, "seconds": seconds,
                      "peak_reset": whole_process_peak is not None, "peak_before_reset_mib": whole_process_peak}))


def measure(args) -> dict:
    """rss_growth and its parts: probe() on --memory-images photos and on 4 times as many, in child processes."""
    peaks = {}
    for label, count in (("n", args.memory_images), ("4n", 4 * args.memory_images)):
        log(f"memory: featurize [backbone, hand_landmarks] on {count} photos in a child process")
        result = subprocess.run([sys.executable, __file__, "--images", str(count),
                                 "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)],
                                capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"memory probe failed:\n{result.stderr[-3000:]}")
        peaks[label] = json.loads(result.stdout.strip().splitlines()[-1])
    n, big = peaks["n"], peaks["4n"]
    return {"rss_growth": big["peak_mib"] / n["peak_mib"], "rss_peak_n_mib": n["peak_mib"],
            "rss_peak_4n_mib": big["peak_mib"], "rss_n_images": n["images"],
            "rss_growth_net": (big["peak_mib"] - big["before_mib"]) / max(n["peak_mib"] - n["before_mib"], 1.0)}


def main():
    parser = argparse.ArgumentParser(description="the child process of measure(): " + probe.__doc__)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args()
    probe(args.images, args.image_size, args.batch_size)


if __name__ == "__main__":
    main()
