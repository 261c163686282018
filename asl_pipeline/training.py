"""Training: the dense head on cached features, then optional end-to-end fine-tuning on images."""
import keras
import numpy as np
import tensorflow as tf

from asl_pipeline import backbones, model
from asl_pipeline.config import TrainParams
from asl_pipeline.errors import PipelineError


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class LiveLogger(keras.callbacks.Callback):
    """Per-epoch train/val loss and accuracy to a dvclive.Live; steps continue across fit() calls."""

    def __init__(self, live):
        super().__init__()
        self.live = live
        self.history = []  # one {"train/loss": ..., "val/accuracy": ...} per epoch, for the PNG

    def on_epoch_end(self, epoch, logs=None):
        row = {}
        for name, value in (logs or {}).items():
            if name in ("loss", "accuracy"):
                row[f"train/{name}"] = float(value)
            elif name in ("val_loss", "val_accuracy"):
                row[f"val/{name[4:]}"] = float(value)
        for name, value in row.items():
            self.live.log_metric(name, value)
        self.history.append(row)
        self.live.next_step()


def class_indices(labels, classes) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def _fit(network, optimizer_lr, train, val, epochs, patience, batch_size, callbacks):
    network.compile(optimizer=keras.optimizers.Adam(optimizer_lr),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    monitor = "val_loss" if val is not None else "loss"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
    x, y = train if isinstance(train, tuple) else (train, None)
    arrays = y is not None  # a tf.data dataset comes batched and shuffled already
    history = network.fit(x, y, validation_data=val, epochs=epochs, shuffle=arrays, verbose=2,
                          batch_size=batch_size if arrays else None, callbacks=[stop, *callbacks])
    losses = history.history[monitor]
    best = int(np.argmin(losses))
    return {key: float(values[best]) for key, values in history.history.items()} | {
        "best_epoch": best + 1, "epochs_run": len(losses)}


def train_head(train_x, train_y, val_x, val_y, num_classes: int, params: TrainParams, callbacks=()):
    """Fit the head on features; keeps the weights of the epoch with the lowest val loss."""
    head = model.build_head(train_x.shape[1], num_classes, params.hidden_units, params.dropout,
                            train_x.mean(axis=0), train_x.var(axis=0))
    val = (val_x, val_y) if len(val_y) else None
    summary = _fit(head, params.learning_rate, (train_x, train_y), val, params.epochs, params.patience,
                   params.batch_size, callbacks)
    return head, summary


def unfreeze_from(backbone_model: keras.Model, first_layer: str) -> int:
    """Make layers from `first_layer` on trainable, BatchNorm excepted; returns how many were unfrozen."""
    names = [layer.name for layer in backbone_model.layers]
    if first_layer not in names:
        raise PipelineError(f"params.yaml: 'train.fine_tune_from' is {first_layer!r}, not a layer of "
                            f"{backbone_model.name}; e.g. one of {names[-40::8]}")
    start = names.index(first_layer)
    backbone_model.trainable = True
    for layer in backbone_model.layers[:start]:
        layer.trainable = False
    unfrozen = 0
    for layer in backbone_model.layers[start:]:
        # BatchNorm statistics tuned on ImageNet would be wrecked by small batches.
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        unfrozen += layer.trainable
    return unfrozen


def fine_tune(classifier: keras.Model, train_ds, val_ds, params: TrainParams, callbacks=()):
    """Train the assembled model end to end on images from `fine_tune_from` on, at a low learning rate."""
    unfreeze_from(model.find_backbone(classifier), params.fine_tune_from)
    return _fit(classifier, params.fine_tune_learning_rate, train_ds, val_ds, params.fine_tune_epochs,
                params.patience, params.batch_size, callbacks)


def build_backbone_from(weights_file, backbone: str, image_size: int) -> keras.Model:
    """The exact backbone featurize used, so the head sees the features it was trained on."""
    backbone_model = backbones.build_backbone(backbone, image_size, None)
    backbone_model.load_weights(weights_file)
    backbone_model.trainable = False
    return backbone_model
