"""Streaming images through tf.data and the frozen backbone, once, into cached feature arrays."""
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from asl_pipeline import images, model
from asl_pipeline.errors import PipelineError


def _load_for_tf(path):
    return images.load_rgb(path.decode("utf-8"))


def image_dataset(paths, root: Path, image_size: int, batch_size: int, augment=None, labels=None,
                  shuffle_seed=None) -> tf.data.Dataset:
    """Batches of float32 RGB images (0-255) at `image_size`, in manifest order, or (image, label) pairs.

    Decoding runs in parallel but order is kept; memory holds a few batches, not the dataset.
    `augment` (a Keras layer) runs sequentially so its random draws are reproducible.
    """
    files = tf.constant([str(Path(root) / p) for p in paths], dtype=tf.string)
    resize = model.resize_layer(image_size)

    def load(path):
        image = tf.numpy_function(_load_for_tf, [path], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        image = resize(tf.cast(image, tf.float32))
        return augment(image, training=True) if augment is not None else image

    dataset = tf.data.Dataset.from_tensor_slices(files if labels is None else (files, np.asarray(labels)))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    parallel = {} if augment is not None else {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}
    if labels is None:
        dataset = dataset.map(load, **parallel)
    else:
        dataset = dataset.map(lambda path, label: (load(path), label), **parallel)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def augmentation(horizontal_flip: bool, seed: int) -> keras.Sequential:
    """Small geometric and lighting changes; flips only on request, since a mirrored hand is the other hand."""
    layers = [
        keras.layers.RandomRotation(0.05, fill_mode="nearest", seed=seed),
        keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 3),
    ]
    if horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 4))
    return keras.Sequential(layers, name="augment")


def embedder(backbone_model: keras.Model, backbone: str, image_size: int) -> keras.Model:
    images_in = keras.Input((image_size, image_size, 3))
    x = model.BackbonePreprocess(backbone, name="preprocess")(images_in)
    return keras.Model(images_in, backbone_model(x, training=False), name="embedder")


def embed(embedding_model: keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    try:
        features = embedding_model.predict(dataset, verbose=0)
    except tf.errors.OpError as error:
        raise PipelineError(f"featurize failed while reading images: {error.message.splitlines()[0]}; "
                            "re-run `dvc repro split` if data/raw changed") from None
    return np.asarray(features, dtype=np.float32)


def save_features(path: Path, features: np.ndarray, labels, paths, views) -> None:
    # Plain numpy arrays (float32, unicode, int): loadable with allow_pickle=False.
    np.savez(path, features=features, labels=np.array(labels, dtype=str),
             paths=np.array(paths, dtype=str), views=np.asarray(views, dtype=np.int16))


def load_features(path: Path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in ("features", "labels", "paths", "views")}
    except FileNotFoundError:
        raise PipelineError(f"features {path} not found: run `dvc repro featurize`") from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise PipelineError(f"features {path} are unreadable ({error}): re-run `dvc repro featurize`") from None


def featurize_split(embedding_model, paths, labels, root, image_size, batch_size, augment=None, copies=0):
    """Features of every image, then `copies` augmented views of each; returns arrays and timing."""
    start = time.perf_counter()
    blocks = [embed(embedding_model, image_dataset(paths, root, image_size, batch_size))]
    for _ in range(copies):
        blocks.append(embed(embedding_model, image_dataset(paths, root, image_size, batch_size, augment)))
    seconds = time.perf_counter() - start
    views = np.repeat(np.arange(copies + 1), len(paths))
    return np.concatenate(blocks), list(labels) * (copies + 1), list(paths) * (copies + 1), views, seconds
