"""Speed and memory of the feature cache, measured side by side in one run on the real sample.

1. Streaming tf.data embedding vs the same forward pass on images already in memory (pipeline overhead).
2. What `dvc exp run -S train.epochs=E` costs: the old design ran the backbone every epoch; the cached
   features run it once, then E cheap head epochs.
3. Peak memory: the old design loaded every image into one float64 array; streaming holds a few batches.

Run: `make bench` (or python benchmarks/featurize_throughput.py --images 256 --image-size 128).
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "asl-sample" / "asl_alphabet_train"


def sample_paths(count: int):
    paths = sorted(SAMPLE.rglob("*.jpg"))
    if not paths:
        sys.exit(f"no images under {SAMPLE}: the benchmark needs the shared sample")
    step = max(1, len(paths) // count)
    return [str(p) for p in paths[::step][:count]]


def memory_probe(mode: str, count: int, image_size: int, batch_size: int) -> None:
    """Child process: load and embed the images one way, print its peak RSS in MiB."""
    import numpy as np

    from asl_pipeline import backbones, features, images

    paths = sample_paths(count)
    embedding_model = features.embedder(backbones.build_backbone("resnet50", image_size, None),
                                        "resnet50", image_size)
    if mode == "float64-array":
        # The replaced project's way: every decoded image in one float64 array.
        from PIL import Image
        array = np.stack([np.asarray(Image.fromarray(images.load_rgb(p)).resize((image_size, image_size)),
                                     dtype=np.float64) for p in paths])
        embedding_model.predict(array.astype(np.float32), batch_size=batch_size, verbose=0)
    else:
        features.embed(embedding_model, features.image_dataset(paths, "/", image_size, batch_size))
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--memory-images", type=int, default=1024)
    parser.add_argument("--memory-probe", choices=["float64-array", "streaming"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args.memory_probe, args.images, args.image_size, args.batch_size)

    import numpy as np

    from asl_pipeline import backbones, features, images, model  # first: it quiets TensorFlow's logging
    from asl_pipeline.config import TrainParams
    import tensorflow as tf  # noqa: E402
    from asl_pipeline.training import train_head

    paths = sample_paths(args.images)
    n, size = len(paths), args.image_size
    embedding_model = features.embedder(backbones.build_backbone("resnet50", size, None), "resnet50", size)
    embedding_model.predict(np.zeros((args.batch_size, size, size, 3), np.float32), verbose=0)  # warm-up

    start = time.perf_counter()
    feats = features.embed(embedding_model, features.image_dataset(paths, "/", size, args.batch_size))
    streaming = time.perf_counter() - start

    # The ceiling: the same forward pass, compiled, on images already decoded and resized in memory.
    resize = model.resize_layer(size)
    in_memory = np.stack([np.asarray(resize(images.load_rgb(p).astype(np.float32))) for p in paths])
    forward = tf.function(lambda batch: embedding_model(batch, training=False), autograph=False)
    forward(in_memory[: args.batch_size])
    start = time.perf_counter()
    for first in range(0, n, args.batch_size):
        forward(in_memory[first:first + args.batch_size])
    forward_only = time.perf_counter() - start

    labels = np.arange(n) % 29
    params = TrainParams(epochs=args.epochs, batch_size=64, learning_rate=1e-3, hidden_units=256, dropout=0.3,
                         patience=args.epochs, fine_tune_epochs=0, fine_tune_from="", fine_tune_learning_rate=1e-5,
                         seed=0)
    start = time.perf_counter()
    train_head(feats, labels, feats[:0], labels[:0], 29, params)
    head_training = time.perf_counter() - start

    old_cost = args.epochs * forward_only  # a full forward pass every epoch, as the old project did
    new_cost = head_training  # features are cached by the featurize stage: zero backbone passes

    print(f"ResNet50 at {size} px on {n} sample images, batch {args.batch_size}")
    print(f"  streaming tf.data featurize : {n / streaming:7.1f} images/s")
    print(f"  compiled forward, in RAM    : {n / forward_only:7.1f} images/s")
    print(f"  ratio streaming / in-RAM    : {forward_only / streaming:7.2f}  (1.0 = decoding costs nothing)")
    print(f"`dvc exp run -S train.epochs={args.epochs}` after featurize, per {n} images:")
    print(f"  old: backbone every epoch   : {old_cost:7.1f} s")
    print(f"  new: head on cached features: {new_cost:7.1f} s")
    print(f"  speed-up                    : {old_cost / new_cost:7.1f}x")

    peaks = {}
    for mode in ("float64-array", "streaming"):
        result = subprocess.run([sys.executable, __file__, "--memory-probe", mode, "--images", str(args.memory_images),
                                 "--image-size", str(size), "--batch-size", str(args.batch_size)],
                                capture_output=True, text=True, check=True)
        peaks[mode] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
    m = len(sample_paths(args.memory_images))
    array_mib = m * size * size * 3 * 8 / 2**20
    print(f"Peak memory embedding {m} images (whole process, TensorFlow included):")
    print(f"  float64 array of all images : {peaks['float64-array']:7.0f} MiB (the array alone {array_mib:.0f} MiB)")
    print(f"  streaming tf.data           : {peaks['streaming']:7.0f} MiB")
    print(f"  ratio                       : {peaks['float64-array'] / peaks['streaming']:7.2f}")
    print(f"  the float64 array for 87,000 images at {size} px would need "
          f"{87000 * size * size * 3 * 8 / 2**30:.0f} GiB; streaming stays at the figure above")


if __name__ == "__main__":
    main()
