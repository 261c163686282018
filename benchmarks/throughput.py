"""Throughput: featurize against the bare forward pass, each featurizer alone, and bf16 against float32.

Measured on the same sample photos in one process (common.Bench), in interleaved rounds; each round first
waits (up to --quiet-wait s) for other processes to go quiet, every measurement records the cores they kept
busy meanwhile (`*_others_cores`), and the quietest round counts.

Keys:
  featurize_images_per_s  features.featurize_split, backbone only (ResNet50 at --image-size, batch
                          --batch-size): file read, decode, resize, preprocess, forward, as the stage runs it
  forward_images_per_s    the same embedder, a compiled tf.function, on in-memory float32 batches of the
                          same images at the same size and batch; featurize_vs_forward = the ratio
                          (featurize_vs_forward_cpu: the same in CPU seconds, which other load hardly moves)
  backbone_images_per_s, hand_landmarks_images_per_s   featurize_split with that featurizer alone
  bf16_vs_fp32, bf16_top1_agreement   mixed_bfloat16 against float32 backbone featurize: throughput
                          ratio, and the share of photos whose predicted class (an svm head, 2-fold) agrees
                          (bf16_vs_fp32_cpu, bf16_images_per_s, bf16_feature_max_rel_error beside them)
"""
import dataclasses
import statistics

from common import Bench, Meter, log, quiet, quietest, variant_params, wait_until_quiet  # first: sys.path
from bench_variants import BACKBONE

KEYS = ("featurize_images_per_s", "forward_images_per_s", "featurize_vs_forward", "featurize_vs_forward_cpu",
        "throughput_others_cores", "backbone_images_per_s", "hand_landmarks_images_per_s",
        "hand_landmarks_others_cores", "bf16_vs_fp32", "bf16_vs_fp32_cpu", "bf16_top1_agreement",
        "bf16_images_per_s", "bf16_feature_max_rel_error")
ABOUT = {"backbone": "resnet50, random init (no network here; speed does not depend on the weights)",
         "featurize_vs_forward": "features.featurize_split([backbone]) vs a compiled tf.function of the same "
                                 "embedder on in-memory float32 batches, batch and size alike; the quietest of "
                                 "--rounds interleaved rounds (about.throughput_rounds); _cpu: CPU seconds, forward "
                                 "over featurize, median of the rounds",
         "others_cores": "cores other processes kept busy during a measurement (shared machine); "
                         "throughput figures come from the quietest of the interleaved rounds"}


def measure(bench: Bench) -> dict:
    """featurize (backbone) vs the bare forward pass, and each featurizer alone, in interleaved rounds.

    Other processes share this machine: every measurement records the cores they used meanwhile, each round
    first waits (up to --quiet-wait s) for a quiet second, and the figures come from the quietest round.
    """
    args, n = bench.args, bench.n
    log(f"warm-up: tracing the forward pass and the featurize functions on {args.batch_size * 2} photos")
    bench.forward_seconds(batches=bench.batches[:2])
    for name in ("backbone", "hand_landmarks"):
        bench.featurize(name, count=args.batch_size * 2)
    rounds = []
    for round_ in range(args.rounds):
        wait_until_quiet(args.quiet_wait)
        run = {}
        with Meter() as run["featurize"]:
            bench.cached["backbone"], _ = bench.featurize("backbone")
        with Meter() as run["forward"]:
            bench.forward_seconds()
        with Meter() as run["hand_landmarks"]:
            bench.cached["hand_landmarks"], _ = bench.featurize("hand_landmarks")
        rounds.append(run)
        log(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{k} {n / m.wall:.1f}/s (others {m.foreign or 0:.2f} cores)" for k, m in run.items()))
    pair = quietest(rounds, "featurize", "forward")
    hand = quietest(rounds, "hand_landmarks")["hand_landmarks"]
    bench.best = {"featurize": pair["featurize"].wall}
    bench.rounds = [{k: {"images_per_s": round(n / m.wall, 2), "others_cores": round(m.foreign or 0, 2),
                         "cpu_s": round(m.cpu, 2)} for k, m in run.items()} for run in rounds]
    return {"featurize_images_per_s": n / pair["featurize"].wall, "forward_images_per_s": n / pair["forward"].wall,
            "featurize_vs_forward": pair["forward"].wall / pair["featurize"].wall,
            "featurize_vs_forward_cpu": statistics.median(r["forward"].cpu / r["featurize"].cpu for r in rounds),
            "throughput_others_cores": max(pair["featurize"].foreign or 0, pair["forward"].foreign or 0),
            "backbone_images_per_s": n / pair["featurize"].wall,
            "hand_landmarks_images_per_s": n / hand.wall,
            "hand_landmarks_others_cores": hand.foreign or 0.0}


def bf16(bench: Bench) -> dict:
    """mixed_bfloat16 against float32 featurize (backbone), same weights, same photos; class agreement."""
    import keras
    import numpy as np

    from asl_pipeline import backbones, features, training

    args = bench.args
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        backbone16 = backbones.build_backbone("resnet50", args.image_size, None)
        backbone16.set_weights(bench.backbone_model.get_weights())
        embedder16 = features.embedder(backbone16, "resnet50", args.image_size)
    finally:
        keras.config.set_dtype_policy("float32")
    blocks16 = features.block_function(bench.specs["backbone"], embedder16)
    bench.featurize("backbone", blocks16, count=args.batch_size)  # trace
    rounds = []
    for _ in range(args.bf16_rounds):
        wait_until_quiet(args.quiet_wait)
        run = {}
        with Meter() as run["bf16"]:
            arrays16, _ = bench.featurize("backbone", blocks16)
        with Meter() as run["fp32"]:
            arrays32, _ = bench.featurize("backbone")
        rounds.append(run)
        log(f"bf16 {bench.n / run['bf16'].wall:.1f}/s, fp32 {bench.n / run['fp32'].wall:.1f}/s (others "
            f"{max(m.foreign or 0 for m in run.values()):.2f} cores)")
    pair = quietest(rounds, "bf16", "fp32")
    x32, x16 = arrays32["backbone"], arrays16["backbone"]
    classes = bench.classes
    y = training.class_indices(bench.labels, classes)
    params = dataclasses.replace(variant_params(BACKBONE, "the backbone figures (bf16)").train, head="svm")
    # Two folds, stratified: every other photo of each class is held out; the svm head trained on the float32
    # features of the rest predicts the held-out photos from their float32 and from their bfloat16 features.
    rank = np.zeros(len(y), int)
    for label in range(len(classes)):
        members = np.flatnonzero(y == label)
        rank[members] = np.arange(len(members)) if len(members) > 1 else -1  # a lone photo always trains
    agree = []
    for fold in range(2):
        held = (rank >= 0) & (rank % 2 == fold)
        with quiet():
            head, _ = training.train_head(x32[~held], y[~held], x32[:0], y[:0], len(classes), params)
        p32 = np.asarray(head(x32[held])).argmax(axis=1)
        p16 = np.asarray(head(x16[held])).argmax(axis=1)
        agree.append(p32 == p16)
    return {"bf16_vs_fp32": pair["fp32"].wall / pair["bf16"].wall,
            "bf16_vs_fp32_cpu": statistics.median(r["fp32"].cpu / r["bf16"].cpu for r in rounds),
            "bf16_top1_agreement": float(np.concatenate(agree).mean()),
            "bf16_images_per_s": bench.n / pair["bf16"].wall,
            "bf16_feature_max_rel_error": float(np.abs(x16 - x32).max() / (np.abs(x32).max() + 1e-12))}
