"""Experiments on cached features: what `dvc exp run -S train.epochs=30` costs after featurize, against the
replaced design that pushed every photo through the backbone every epoch. Uses the throughput part's
quietest featurize pass (bench.best) and cached backbone features, so it runs after throughput.measure.

Keys:
  exp30_speedup           30 epochs that push every image through the backbone (one measured featurize
                          pass x 30) over 30 mlp-head epochs on the cached features
                          (exp30_backbone_every_epoch_s and exp30_cached_head_s: the two sides, in seconds)
  svm_head_train_s        the svm head trained on the same cached features
"""
import dataclasses
import time

from common import Bench, quiet, variant_params  # first: it puts this checkout on sys.path
from bench_variants import BACKBONE

KEYS = ("exp30_speedup", "exp30_backbone_every_epoch_s", "exp30_cached_head_s", "svm_head_train_s")


def exp30(bench: Bench) -> dict:
    """`dvc exp run -S train.epochs=30` after featurize: cached features against the backbone every epoch."""
    from asl_pipeline import training

    epochs = bench.args.epochs
    x = bench.cached["backbone"]["backbone"]
    classes = bench.classes
    y = training.class_indices(bench.labels, classes)
    params = dataclasses.replace(variant_params(BACKBONE, "the backbone figures (exp30)").train, head="mlp",
                                 epochs=epochs, patience=epochs)
    start = time.perf_counter()
    with quiet():
        training.train_head(x, y, x[:0], y[:0], len(classes), params)
    head = time.perf_counter() - start
    old_epoch = bench.best["featurize"]  # one epoch of the replaced design: every photo through the backbone
    old = epochs * old_epoch
    svm = dataclasses.replace(params, head="svm")
    start = time.perf_counter()
    with quiet():
        training.train_head(x, y, x[:0], y[:0], len(classes), svm)
    svm_seconds = time.perf_counter() - start
    return {"exp30_speedup": old / head, "exp30_backbone_every_epoch_s": old, "exp30_cached_head_s": head,
            "svm_head_train_s": svm_seconds}
