"""Computing every manifest's feature blocks once, streaming, into cached feature files."""
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from asl_pipeline import model, progress
from asl_pipeline.config import DATASET_ORIGIN
from asl_pipeline.errors import PipelineError
from asl_pipeline.featurizers import Featurizer, FeatureSpec, ordered_blocks

# Feature-file keys: one per block the spec computes, then the bookkeeping of every row.
BLOCK_KEYS = {"backbone": "backbone", "hand_landmarks": "hand"}
ROW_KEYS = ("labels", "paths", "views", "origins")


def embedder(backbone_model: keras.Model, backbone: str, image_size: int) -> keras.Model:
    images_in = keras.Input((image_size, image_size, 3))
    x = model.BackbonePreprocess(backbone, name="preprocess")(images_in)
    return keras.Model(images_in, backbone_model(x, training=False), name="embedder")


def block_function(spec: FeatureSpec, embedding_model: keras.Model | None):
    """A compiled function: a dataset batch in, {"backbone": pooled CNN features, "hand": hand vectors} out
    (the blocks the spec uses). Hand vectors are computed in the dataset and only pass through."""
    def blocks(batch):
        outputs = {}
        if spec.uses_backbone:
            outputs["backbone"] = tf.cast(embedding_model(batch["images"], training=False), tf.float32)
        if spec.uses_hands:
            outputs["hand"] = batch["hand"]
        return outputs
    return tf.function(blocks, reduce_retracing=True)


def embed(blocks, data: tf.data.Dataset, count: int, description: str) -> dict:
    """Run `blocks` (block_function) over every batch of `data` ({count} images), with a progress bar."""
    # One trace for every batch size (the last batch is smaller) and every split: a traced ResNet costs
    # seconds, and a tf.function would trace again for the first odd-sized batch.
    run = blocks.get_concrete_function(data.element_spec)
    outputs, done = {}, 0
    try:
        with progress.bar(count, description) as bar:
            for batch in data:
                rows = 0
                for name, value in run(batch).items():
                    value = value.numpy()
                    if name not in outputs:  # filled in place: memory holds the features once, not twice
                        outputs[name] = np.empty((max(count, len(value)),) + value.shape[1:], np.float32)
                    elif done + len(value) > len(outputs[name]):  # more rows than `count` said
                        more = np.empty((done + len(value),) + value.shape[1:], np.float32)
                        outputs[name] = np.concatenate([outputs[name][:done], more])
                    outputs[name][done:done + len(value)] = value
                    rows = len(value)
                done += rows
                bar.update(rows)
    except tf.errors.OpError as error:
        raise PipelineError(f"featurize failed while reading images: {error.message.splitlines()[0]}; "
                            "re-run `dvc repro split` if data/raw changed") from None
    for name, tensor in run.structured_outputs.items():  # no batch (an empty split): no rows, same widths
        outputs.setdefault(name, np.empty((0,) + tuple(tensor.shape[1:]), np.float32))
    return {name: values[:done] for name, values in outputs.items()}


def featurize_split(featurizer: Featurizer, blocks, paths, labels, root: Path, batch_size: int,
                    copies: int = 0, seed: int = 0, horizontal_flip: bool = False, description: str = "featurize",
                    origins=None):
    """Every block of every image, then of `copies` augmented views of each; arrays and seconds taken.

    blocks: block_function(...). origins: each image's manifest origin (None: all from the dataset).
    """
    start = time.perf_counter()
    views = [embed(blocks, featurizer.dataset(paths, root, batch_size, view=view, seed=seed,
                                              horizontal_flip=horizontal_flip), len(paths),
                   f"{description}{f' view {view}' if view else ''}")
             for view in range(copies + 1)]
    arrays = views[0] if len(views) == 1 else {name: np.concatenate([v[name] for v in views]) for name in views[0]}
    arrays |= {"labels": np.array(list(labels) * (copies + 1), dtype=str),
               "paths": np.array(list(paths) * (copies + 1), dtype=str),
               "views": np.repeat(np.arange(copies + 1), len(paths)).astype(np.int16),
               "origins": np.array(list(origins or [DATASET_ORIGIN] * len(paths)) * (copies + 1), dtype=str)}
    return arrays, time.perf_counter() - start


def save_features(path: Path, arrays: dict) -> None:
    # Plain numpy arrays (float32, unicode, int): loadable with allow_pickle=False.
    np.savez(path, **arrays)


def load_features(path: Path, spec: FeatureSpec | None = None) -> dict:
    """A feature file; with `spec`, an error if it lacks a block the spec needs."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise PipelineError(f"features {path} not found: run `dvc repro featurize`") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise PipelineError(f"features {path} are unreadable ({error}): re-run `dvc repro featurize`") from None
    needed = list(ROW_KEYS) + ([BLOCK_KEYS[name] for name in spec.featurizers] if spec else [])
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise PipelineError(f"features {path} lack {missing}: they come from another featurize run; "
                            "re-run `dvc repro featurize`")
    return arrays


def head_input(arrays: dict, spec: FeatureSpec) -> np.ndarray:
    """The head's input rows: the spec's blocks side by side, in the order model.assemble joins them."""
    blocks = ordered_blocks({name: arrays[BLOCK_KEYS[name]] for name in spec.featurizers})
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
