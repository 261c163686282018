"""Training: the dense head on cached features, then optional end-to-end fine-tuning on images."""
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from asl_pipeline import backbones, model
from asl_pipeline.config import DATASET_ORIGIN, INPUTS_DIGEST, Params, TrainParams
from asl_pipeline.errors import PipelineError


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """train.distribute: 'none' (TensorFlow's default, one device), 'mirrored' (every local GPU, or the
    CPU when there is none) or 'multi_worker' (the workers TF_CONFIG names). Build the models inside
    its scope(); create it before any other TensorFlow work, as multi-worker training requires."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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


# The `train` params a head does not read. DVC's foreach declares the `train` section for every variant's train
# stage, so `dvc exp run -S train.epochs=30` re-runs the kernel variant's train too; its inputs digest leaves out
# these params, finds nothing it reads changed, and keeps the model, so nothing after it re-runs.
FINE_TUNE_PARAMS = ("fine_tune_epochs", "fine_tune_from", "fine_tune_learning_rate")
_EPOCH_PARAMS = ("epochs", "batch_size", "learning_rate", "hidden_units", "dropout", "patience", *FINE_TUNE_PARAMS,
                 "distribute")
UNREAD_BY_HEAD = {
    "kernel": ("svm_c", *_EPOCH_PARAMS),
    "svm": ("kernel_components", "kernel_alpha", *_EPOCH_PARAMS),
    "mlp": ("svm_c", "kernel_components", "kernel_alpha"),
}


def inputs_digest(params: Params, features_dir: Path, stage_file, also=None, unread=()) -> str:
    """sha256 of everything a head fit reads: the train params its head reads (less `unread`, those the caller
    does not read either), the classes, the cached features, the code (this package and the stage's script,
    `stage_file`) and `also` (JSON: what else the caller reads). Photos are not in it: a caller that fine-tunes
    (reads photos) must not keep its outputs by it."""
    read = dataclasses.asdict(params.train)
    for key in {*UNREAD_BY_HEAD[params.train.head], *unread}:
        read.pop(key)
    digest = hashlib.sha256(json.dumps([read, list(params.split.classes), also], sort_keys=True).encode())
    code = [*Path(__file__).parent.glob("*.py"), Path(stage_file)]
    for path in sorted(Path(features_dir).iterdir()) + sorted(code):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def digest_is_current(record: Path, digest: str, outputs) -> bool:
    """True when the JSON file `record` holds this inputs digest and every one of `outputs` exists: a stage
    that finds its inputs unchanged keeps what it wrote."""
    if not all(Path(p).exists() for p in outputs):
        return False
    try:
        return json.loads(Path(record).read_text(encoding="utf-8")).get(INPUTS_DIGEST) == digest
    except (OSError, ValueError):
        return False


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


def training_rows(arrays: dict, y: np.ndarray, spec, params: TrainParams):
    """(x, y) the head learns from: a train feature file's rows and params.landmark_copies reshaped copies of
    each (augment.py); a data.extra_train photo counts params.extra_weight times, each time with copies of
    its own.

    Counting, not a loss weight: with the SVM head a per-photo weight scales its C, which changed nothing at
    C=100 (1, 5 and 20 gave identical personalisation figures), while more reshaped copies of a new signer's
    few photos cover more of the ways they can look.
    """
    from asl_pipeline import augment, features

    x = features.head_input(arrays, spec)
    extra = arrays["origins"] != DATASET_ORIGIN
    repeats = np.where(extra, params.extra_weight, 1)
    x, y = np.repeat(x, repeats, axis=0), np.repeat(y, repeats)
    if params.landmark_copies:
        x = np.concatenate([x, augment.augmented_copies(x, spec, params.landmark_copies, params.seed)])
        y = np.tile(y, params.landmark_copies + 1)
    return x, y


def train_head(train_x, train_y, val_x, val_y, num_classes: int, params: TrainParams, callbacks=()):
    """Fit the head that `params.head` names on features; returns it with a summary of its scores."""
    fit = {"svm": _train_svm_head, "kernel": _train_kernel_head, "mlp": _train_mlp_head}[params.head]
    return fit(train_x, train_y, val_x, val_y, num_classes, params, callbacks)


def _standardize(x, mean, variance):
    """The same standardization as the Keras layer in front of the kernel heads (it floors the deviation too)."""
    return (x - mean) / np.maximum(np.sqrt(variance), keras.config.epsilon())


def _standardized(train_x):
    """(mean, variance, the rows standardized by them)."""
    mean, variance = train_x.mean(axis=0), train_x.var(axis=0)
    return mean, variance, _standardize(train_x, mean, variance)


def _temperature(decisions: np.ndarray, labels: np.ndarray) -> float:
    """The factor t for which softmax(t * decisions) gives `labels` the highest likelihood (temperature scaling)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    picked = decisions[np.arange(len(labels)), labels]

    def loss(log_t):
        t = np.exp(log_t)
        return float(np.mean(logsumexp(t * decisions, axis=1) - t * picked))

    return float(np.exp(minimize_scalar(loss, bounds=(-3.0, 7.0), method="bounded").x))


def _scored(head, train_x, train_y, val_x, val_y, callbacks):
    """The one "epoch" of a head fitted in one step, so its curves and metrics have the mlp's shape."""
    head.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logs = dict(zip(("loss", "accuracy"), head.evaluate(train_x, train_y, verbose=0)))
    if len(val_y):
        logs |= dict(zip(("val_loss", "val_accuracy"), head.evaluate(val_x, val_y, verbose=0)))
    for callback in callbacks:
        callback.on_epoch_end(0, logs)
    return head, {key: float(value) for key, value in logs.items()} | {"best_epoch": 1, "epochs_run": 1}


def _train_svm_head(train_x, train_y, val_x, val_y, num_classes: int, params: TrainParams, callbacks=()):
    """An RBF SVM (scikit-learn, deterministic) on the standardized features, in one step.

    Its fit grows faster than the rows (libsvm solves one problem per pair of classes) and its support vectors,
    and with them the time of every prediction, grow with the rows: the `kernel` head scales, this one is
    kept to compare with (docs/results.md, "Choosing the defaults").
    """
    from sklearn.svm import SVC

    mean, variance, standardized = _standardized(train_x)
    svc = SVC(C=params.svm_c, kernel="rbf", gamma="scale").fit(standardized, train_y)
    return _scored(model.svm_head(svc, num_classes, mean, variance), train_x, train_y, val_x, val_y, callbacks)


def _train_kernel_head(train_x, train_y, val_x, val_y, num_classes: int, params: TrainParams, callbacks=()):
    """An RBF kernel approximated on `kernel_components` landmark rows (scikit-learn's Nystroem) and a ridge
    classifier on it, in one step: its cost grows linearly with the rows (one pass to map them, one m x m
    solve), and reading a photo costs the same however many rows it learnt from.

    The landmarks are drawn from the distinct rows: a data.extra_train photo counts extra_weight times, and
    landmarks drawn from repeats would cover its people several times and the others less. gamma is the SVM's
    "scale" (1 / (features x variance)), so the two approximate the same kernel. Ridge, not logistic regression:
    as accurate here (docs/results.md, "Choosing the defaults") and 30 to 50 times faster to fit.
    """
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import RidgeClassifier

    missing = sorted(set(range(num_classes)) - set(np.unique(train_y).tolist()))
    if missing:
        raise PipelineError(f"the kernel head saw no training rows of classes {missing}; every one of the "
                            f"{num_classes} classes needs training images")
    mean, variance, standardized = _standardized(train_x)
    gamma = 1.0 / (standardized.shape[1] * standardized.var())
    distinct = np.unique(standardized, axis=0)
    nystroem = Nystroem(gamma=gamma, n_components=min(params.kernel_components, len(distinct)),
                        random_state=params.seed).fit(distinct)
    linear = RidgeClassifier(alpha=params.kernel_alpha).fit(nystroem.transform(standardized), train_y)
    coef, bias = np.atleast_2d(linear.coef_), np.ravel(linear.intercept_)
    if num_classes == 2:  # one decision, positive for the second class: as two class scores
        coef, bias = np.vstack([-coef, coef]) / 2, np.concatenate([-bias, bias]) / 2
    # Ridge decisions lie near [-1, 1], so their softmax is nearly flat: a temperature fitted on rows the ridge
    # did not learn from (val; without val, its own rows) makes the probabilities that spell, the live page and
    # predict show mean what they say.
    calibrate_x, calibrate_y = (val_x, val_y) if len(val_y) else (train_x, train_y)
    decisions = nystroem.transform(_standardize(calibrate_x, mean, variance)) @ coef.T + bias
    temperature = _temperature(decisions, calibrate_y)
    head = model.kernel_head(nystroem.components_, gamma, temperature * (nystroem.normalization_.T @ coef.T),
                             temperature * bias, mean, variance)
    return _scored(head, train_x, train_y, val_x, val_y, callbacks)


def _train_mlp_head(train_x, train_y, val_x, val_y, num_classes: int, params: TrainParams, callbacks=()):
    """Dense layers by Adam; keeps the weights of the epoch with the lowest val loss."""
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


def fine_tune(classifier: keras.Model, featurizer, root, train: dict, y_train, val: dict, y_val,
              params: TrainParams, callbacks=()):
    """Train the assembled model end to end on photos from `fine_tune_from` on, at a low learning rate.

    train, val: feature files (their paths and views); augmented views are left out, the photos are read.
    """
    unfreeze_from(model.find_backbone(classifier), params.fine_tune_from)
    originals = train["views"] == 0
    train_data = input_dataset(classifier, featurizer, train["paths"][originals], root, y_train[originals],
                               params.batch_size, shuffle_seed=params.seed)
    val_data = input_dataset(classifier, featurizer, val["paths"], root, y_val, params.batch_size) if len(y_val) else None
    return _fit(classifier, params.fine_tune_learning_rate, train_data, val_data, params.fine_tune_epochs,
                params.patience, params.batch_size, callbacks)


def input_dataset(classifier: keras.Model, featurizer, paths, root, labels, batch_size: int,
                  shuffle_seed: int | None = None):
    """(inputs, label) batches of photos for end-to-end training, with only the inputs the model takes."""
    names = model.input_names(classifier)
    data = featurizer.dataset(paths, root, batch_size, labels=labels, shuffle_seed=shuffle_seed)
    return data.map(lambda inputs, label: ({name: inputs[name] for name in names}, label))


def build_backbone_from(weights_file, backbone: str, image_size: int) -> keras.Model:
    """The exact backbone featurize used, so the head sees the features it was trained on."""
    backbone_model = backbones.build_backbone(backbone, image_size, None)
    backbone_model.load_weights(weights_file)
    backbone_model.trainable = False
    return backbone_model


def provenance() -> dict:
    """Which run trained a model: under `dvc exp run`, the experiment's name; None under `dvc repro`.

    No git commit: a commit cannot hold its own name, so the model folder (and its dvc.lock entry) would name
    the commit before the one that holds it and change with every commit, on every machine. The commit whose
    dvc.lock lists the model is the one that made it (`git log -1 -- dvc.lock`)."""
    return {"dvc_experiment": os.environ.get("DVC_EXP_NAME")}
