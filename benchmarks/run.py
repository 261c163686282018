"""Every speed, memory and scale figure of the pipeline, measured side by side in one run: `make bench`.

Throughput figures are measured on the same sample photos in one process, in interleaved rounds; each round
first waits (up to --quiet-wait s) for other processes to go quiet, every measurement records the cores they
kept busy meanwhile (`*_others_cores`), and the quietest round counts. Memory and scale run in child
processes. Prints a table and writes benchmarks/results.json (plain numbers, plus `machine` and `about`).
Never part of `make test`.

Keys (see benchmarks/README.md for the figures measured here):
  featurize_images_per_s  features.featurize_split, backbone only (ResNet50 at --image-size, batch
                          --batch-size): file read, decode, resize, preprocess, forward, as the stage runs it
  forward_images_per_s    the same embedder, a compiled tf.function, on in-memory float32 batches of the
                          same images at the same size and batch; featurize_vs_forward = the ratio
                          (featurize_vs_forward_cpu: the same in CPU seconds, which other load hardly moves)
  backbone_images_per_s, hand_landmarks_images_per_s   featurize_split with that featurizer alone
  exp30_speedup           30 epochs that push every image through the backbone (one measured featurize
                          pass x 30) over 30 mlp-head epochs on the cached features
  rss_growth              peak RSS of featurize ([backbone, hand_landmarks]) on 4N images over N images
  bf16_vs_fp32, bf16_top1_agreement   mixed_bfloat16 against float32 backbone featurize: throughput
                          ratio, and the share of photos whose predicted class (an svm head, 2-fold) agrees
  predict_ms_per_image    Classifier.analyse([photo]) warm, default model (hand_landmarks + svm head)
  predict_heatmap_ms_per_image   the same with Grad-CAM, fused model (backbone + hand_landmarks + svm)
  predict_ms_per_image_repo_model   predict_ms_per_image of the served variant's model that `dvc repro`
                          trained here (models/<serve.model>/model.keras: models/reader/), when there is one
  spell_fps               frames per second of `spell` (video.spell, hand tracked) on an MJPG video of the photos,
                          default model
  motion_loso_*, tracking_speedup, spell_fps_*_signer_videos, *_right_*   benchmarks/motion_letters.py: J and Z
                          from the motion, leaving one signer out; `spell` with and without tracking on the signer
                          videos and on words of held-out sample frames (--only motion runs this part alone)
  live_page_fps           frames per second through the demo page's live endpoint (asl_pipeline/live.py): the
                          same photos as JPEGs posted over HTTP one at a time, each answer awaited, default model
  personalisation_k<k>_<set>   accuracy on a new signer's other photos after k photos per letter of theirs
                          joined training (benchmarks/personalisation.py: the served variant, which must read
                          hand landmarks alone), mean over the set's signers
  flood_peak_rss_mib      peak RSS of the demo's server while 20 clients post 40 large images (49 megapixels) to
                          photo mode and 40 to the live frame endpoint at once (benchmarks/serving_flood.py, a child
                          process, the served variant's model); flood_unanswered: requests that got neither a
                          result nor a refusal saying why; flood_outcomes: how each was answered
  scale_linearity         wall time per image of `dvc repro` split..evaluate, every variant (--scale-variants:
                          some), on 4N images over N (the sample), in throwaway copies of the project
                          (--skip-scale leaves it out)

Params: the hand-landmark figures use the train params of the params.yaml variant that reads hand landmarks
alone (reader), the backbone figures (exp30, bf16) those of the one that reads the backbone alone (resnet50):
benchmarks/bench_variants.py picks them by what they read, the served variant first.

Run: make bench   (or: python benchmarks/run.py [--skip-scale] [--images 256]; --only flood|motion: one family alone)
"""
import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_variants import BACKBONE, LANDMARKS, variant_reading  # noqa: E402
import motion_letters  # noqa: E402  (benchmarks/motion_letters.py)
import serving_flood  # noqa: E402  (benchmarks/serving_flood.py)
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "asl-sample"
TRAIN_DIR = SAMPLE / "asl_alphabet_train"
BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
RESULTS = REPO / "benchmarks" / "results.json"
PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "numpy", "opencv-python-headless",
            "pillow", "scikit-learn", "dvc")
SCALE_STAGES = ("split", "featurize", "train", "evaluate")
SCALE_COPIES = 3  # the 4N dataset: every sample photo and 3 shifted re-encodings of it
FRAME_OFFSET = 3000  # Kaggle's frames are numbered 1..3000 per class: copy k of frame f is frame f + k * 3000
TARGETS = {  # key: (comparison, bound)
    "featurize_vs_forward": (">=", 0.95),
    "exp30_speedup": (">=", 20),
    "rss_growth": ("<=", 1.1),
    "scale_linearity": ("<=", 1.15),
    "predict_ms_per_image": ("<=", 100),
    "live_page_fps": (">=", 10),
    "flood_peak_rss_mib": ("<=", 2048),
    "flood_unanswered": ("<=", 0),
    "motion_loso_found": (">=", 6),
    "motion_loso_static_clean": (">=", 95),
    "tracking_speedup": (">=", 1.5),
    "personalisation_k1_asl-other-dev": (">=", 0.90),
    "personalisation_k1_asl-webcam-dev": (">=", 0.85),
}


@contextlib.contextmanager
def quiet():
    """Keras prints a line per epoch, scikit-learn warns about tiny folds: neither belongs in the table."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- inputs

def sample_photos(count: int):
    """(paths relative to TRAIN_DIR, labels): `count` photos spread evenly over the sample's sorted files."""
    paths = sorted(TRAIN_DIR.rglob("*.jpg"))
    if not paths:
        sys.exit(f"no images under {TRAIN_DIR}: the benchmark needs the shared sample")
    chosen = paths[::max(1, len(paths) // count)][:count]
    return [p.relative_to(TRAIN_DIR).as_posix() for p in chosen], [p.parent.name for p in chosen]


def repo_params():
    """params.yaml of this checkout: a ProjectParams (its shared sections, and each variant's Params)."""
    from asl_pipeline.config import load_params
    return load_params(REPO / "params.yaml")


def variant_params(featurizers, what: str):
    """The Params of the variant that reads `featurizers` alone (bench_variants.variant_reading: the served one
    first): LANDMARKS for the hand-landmark figures (the reader), BACKBONE for the backbone figures (resnet50)."""
    project = repo_params()
    return project.variant(variant_reading(project, featurizers, what))


def spec_for(featurizers, image_size: int):
    from asl_pipeline.featurizers import FeatureSpec
    params = repo_params()
    return FeatureSpec(tuple(featurizers), "resnet50", image_size, False, params.hands)


def machine() -> dict:
    cpu, info = platform.processor() or "unknown", {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = info.get("flags", "").split()
    if "model name" in info:
        cpu = f"{info['model name']} (family {info.get('cpu family')}, model {info.get('model')})"
    gpus = []
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True)
        gpus = [line.strip() for line in query.stdout.splitlines() if line.strip()]
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": ", ".join(gpus) or "none",
            "cpu_simd": " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx_vnni")
                                 if f in flags),
            "cpu_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(), "packages": versions}


# ------------------------------------------------------------------------------------------ throughput

class Bench:
    """The sample photos, the embedders and featurizers, shared by the in-process measurements."""

    def __init__(self, args):
        import numpy as np

        from asl_pipeline import backbones, features, hand_model, images, model
        from asl_pipeline.config import ALL_CLASSES
        from asl_pipeline.featurizers import Featurizer

        self.args = args
        self.paths, self.labels = sample_photos(args.images)
        self.n = len(self.paths)
        self.classes = [c for c in ALL_CLASSES if c in set(self.labels)]
        size, batch = args.image_size, args.batch_size
        self.bundle = hand_model.verified_bundle(BUNDLE)
        self.backbone_model = backbones.build_backbone("resnet50", size, None)  # random init: no network
        self.embedder = features.embedder(self.backbone_model, "resnet50", size)
        self.specs = {name: spec_for(featurizers, size) for name, featurizers in
                      {"backbone": ["backbone"], "hand_landmarks": ["hand_landmarks"],
                       "fused": ["backbone", "hand_landmarks"]}.items()}
        self.featurizers = {name: Featurizer(spec, self.bundle if spec.uses_hands else None)
                            for name, spec in self.specs.items()}
        self.blocks = {name: features.block_function(spec, self.embedder if spec.uses_backbone else None)
                       for name, spec in self.specs.items()}
        # The ceiling: the same embedder, compiled, on in-memory float32 batches of the same resized photos.
        import tensorflow as tf
        resize = backbones.resize_layer(size)
        resized = np.stack([np.asarray(resize(images.load_rgb(TRAIN_DIR / p).astype(np.float32)))
                            for p in self.paths])
        self.batches = [tf.constant(resized[i:i + batch]) for i in range(0, self.n, batch)]
        self.forward = tf.function(lambda x: self.embedder(x, training=False))
        self.cached = {}

    def featurize(self, name: str, blocks=None, count: int | None = None):
        """(arrays, seconds) of features.featurize_split on the sample photos with featurizer `name`."""
        from asl_pipeline import features
        count = count or self.n
        return features.featurize_split(self.featurizers[name], blocks or self.blocks[name], self.paths[:count],
                                        self.labels[:count], TRAIN_DIR, self.args.batch_size,
                                        description=f"bench {name}")

    def forward_seconds(self, forward=None, batches=None) -> float:
        forward, batches = forward or self.forward, batches or self.batches
        start = time.perf_counter()
        for batch in batches:
            forward(batch).numpy()
        return time.perf_counter() - start


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes (and the hypervisor's steal) have used since boot, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for (dvc in the scale run)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Meter:
    """Over a block: wall seconds, this process's CPU seconds, and `foreign`: the cores other processes kept
    busy meanwhile (None without /proc), the measure of how fair the figure is on a shared machine."""

    def __enter__(self):
        self._start = (time.perf_counter(), own_cpu_seconds(), machine_busy_seconds())
        return self

    def __exit__(self, *exc):
        wall, own, busy = self._start
        self.wall = time.perf_counter() - wall
        self.cpu = own_cpu_seconds() - own
        now = machine_busy_seconds()
        self.foreign = None if busy is None else max(0.0, now - busy - self.cpu) / max(self.wall, 1e-9)
        return False


def wait_until_quiet(max_seconds: float, cores: float = 0.25) -> float | None:
    """Wait (at most max_seconds) for a second in which other processes use under `cores` cores; their load."""
    deadline, foreign = time.monotonic() + max_seconds, None
    while True:
        with Meter() as meter:
            time.sleep(1.0)
        foreign = meter.foreign
        if foreign is None or foreign < cores or time.monotonic() > deadline:
            return foreign


def quietest(runs: list, *keys) -> dict:
    """The run whose measurements `keys` had the least foreign load (rounded to 0.1 core), then the fastest."""
    def load(run):
        return max((run[k].foreign or 0.0) for k in keys)
    return min(runs, key=lambda run: (round(load(run), 1), sum(run[k].wall for k in keys)))


def throughput(bench: Bench) -> dict:
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


def predict(bench: Bench, workdir: Path) -> dict:
    """Warm Classifier.analyse latency for one photo: default model, and the fused model with Grad-CAM; and the
    served variant's model that `dvc repro` last trained here (models/<serve.model>/model.keras), if any."""
    from asl_pipeline import features, images, inference, model, training
    from asl_pipeline.config import ModelFiles

    classes = bench.classes
    y = training.class_indices(bench.labels, classes)
    svm = dataclasses.replace(variant_params(LANDMARKS, "the hand-landmark figures (predict, spell, live)").train,
                              head="svm")
    if "hand_landmarks" not in bench.cached:
        bench.cached["hand_landmarks"] = bench.featurize("hand_landmarks")[0]
    arrays = {**bench.cached["hand_landmarks"], "backbone": bench.cached["backbone"]["backbone"]}
    classifiers = {}
    for name in ("hand_landmarks", "fused"):
        spec = bench.specs[name]
        x = features.head_input(arrays, spec)
        with quiet():
            head, _ = training.train_head(x, y, x[:0], y[:0], len(classes), svm)
        network = model.assemble(spec, bench.backbone_model if spec.uses_backbone else None, head)
        folder = workdir / f"model-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        files = ModelFiles(folder / "model.keras")
        model.save_model(network, classes, spec, files.model, files.labels, files.spec)
        shutil.copyfile(BUNDLE, files.hand_model)
        classifiers[name] = inference.load_classifier(files.model)
    photos = [images.load_rgb(TRAIN_DIR / p) for p in bench.paths[::max(1, bench.n // bench.args.predict_photos)]]
    photos = photos[:bench.args.predict_photos]

    def median_ms(classifier, with_heatmaps: bool) -> float:
        for photo in photos[:3]:  # warm: traces and interpreters
            classifier.analyse([photo], with_heatmaps=with_heatmaps)
        took = []
        for photo in photos:
            start = time.perf_counter()
            classifier.analyse([photo], with_heatmaps=with_heatmaps)
            took.append(time.perf_counter() - start)
        return 1000 * statistics.median(took)

    result = {"predict_ms_per_image": median_ms(classifiers["hand_landmarks"], False),
              "predict_ms_per_image_fused": median_ms(classifiers["fused"], False),
              "predict_heatmap_ms_per_image": median_ms(classifiers["fused"], True)}
    repo_model = served_model()
    if repo_model is not None:  # the model `dvc repro` last trained here (its svm has the sample's support vectors)
        try:
            classifier = inference.load_classifier(repo_model)
        except Exception as error:  # another session may be rewriting it: the figures above stand alone
            log(f"predict: skipped {repo_model} ({error})")
        else:
            bench.repo_model = (repo_model.relative_to(REPO).as_posix(), "+".join(classifier.spec.featurizers))
            result["predict_ms_per_image_repo_model"] = median_ms(classifier, False)
    return result


def spell_fps(bench: Bench, workdir: Path) -> dict:
    """Frames per second of `spell`'s loop (video.spell: read, decode, classify, speller) on an MJPG video of the
    sample photos, every frame read, with the default model that predict() saved in `workdir`."""
    import cv2

    from asl_pipeline import images, inference, video
    from asl_pipeline.stream import StreamReader

    clip = workdir / "spell.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (200, 200))
    for path in bench.paths:  # Kaggle's photos are 200 x 200
        writer.write(cv2.cvtColor(images.load_rgb(TRAIN_DIR / path), cv2.COLOR_RGB2BGR))
    writer.release()
    classifier = inference.load_classifier(workdir / "model-hand_landmarks" / "model.keras")
    classifier.analyse([images.load_rgb(TRAIN_DIR / bench.paths[0])], with_heatmaps=False)  # warm: traces
    capture = video.open_source(clip, None)
    try:
        start = time.perf_counter()
        frames = video.spell(classifier, capture, StreamReader(), fps=10, live=False)
        seconds = time.perf_counter() - start
    finally:
        capture.release()
    return {"spell_fps": frames / seconds, "spell_frames": frames}


def live_page_fps(bench: Bench, workdir: Path) -> dict:
    """Frames per second through the live page's endpoint, as the page sends them: one JPEG at a time over a
    keep-alive HTTP connection, the next posted once the answer (letter, landmarks, text) is read; the
    server decodes, reads on the demo's model thread and spells. Default model, saved in `workdir` by
    predict(). Leaves out only the browser's own part (drawing the frame into a canvas, JPEG encoding)."""
    import http.client
    import io

    from PIL import Image

    from asl_pipeline import inference, live, serve

    frames = []
    for path in bench.paths:  # Kaggle's photos are 200 x 200; the page sends at most 320 x 240
        buffer = io.BytesIO()
        Image.open(TRAIN_DIR / path).save(buffer, "JPEG", quality=round(100 * live.JPEG_QUALITY))
        frames.append(buffer.getvalue())
    demo = serve.Demo(inference.load_classifier(workdir / "model-hand_landmarks" / "model.keras"))
    demo.on_model_thread(serve.traced, demo.classifier)
    pages = live.PageSecrets(os.urandom(32))
    server = live.LiveServer(live.LiveSessions(demo, pages), "127.0.0.1", 0, serving_flood.PAGE_PORT)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    page = {"Origin": f"http://127.0.0.1:{serving_flood.PAGE_PORT}", live.PAGE_HEADER: pages.issue()}

    def post(path: str, body: bytes | None = None) -> dict:
        connection.request("POST", path, body=body, headers={**page, "Content-Type": "image/jpeg"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"live endpoint {path}: {response.status} {answer}")
        return answer

    try:
        session = post("/session")["session"]
        post(f"/frame?session={session}", frames[0])  # warm: the landmarker on the model thread
        start = time.perf_counter()
        for frame in frames:
            post(f"/frame?session={session}", frame)
        seconds = time.perf_counter() - start
    finally:
        connection.close()
        server.close()
    return {"live_page_fps": len(frames) / seconds, "live_page_frames": len(frames)}


# -------------------------------------------------------------------------------------------- memory

def memory_probe(args) -> None:
    """Child process: featurize `args.images` photos with [backbone, hand_landmarks]; print peak RSS (MiB)."""
    from asl_pipeline import backbones, features, hand_model
    from asl_pipeline.featurizers import Featurizer

    paths, labels = sample_photos(args.images)
    spec = spec_for(["backbone", "hand_landmarks"], args.image_size)
    embedder = features.embedder(backbones.build_backbone("resnet50", args.image_size, None), "resnet50",
                                 args.image_size)
    featurizer = Featurizer(spec, hand_model.verified_bundle(BUNDLE))
    blocks = features.block_function(spec, embedder)
    before = rss_mib("VmRSS")
    whole_process_peak = reset_peak_rss()  # building the model peaks higher than featurize: count featurize only
    arrays, seconds = features.featurize_split(featurizer, blocks, paths, labels, TRAIN_DIR, args.batch_size,
                                               description="bench memory")
    peak = (rss_mib("VmHWM") if whole_process_peak is not None
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"images": len(paths), "peak_mib": peak, "before_mib": before, "seconds": seconds,
                      "peak_reset": whole_process_peak is not None, "peak_before_reset_mib": whole_process_peak}))


def rss_mib(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak) of this process from /proc, in MiB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> float | None:
    """Reset this process's peak RSS (Linux: 5 > /proc/self/clear_refs); the peak before, or None if unsupported."""
    peak = rss_mib("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return peak


def memory(args) -> dict:
    peaks = {}
    for label, count in (("n", args.memory_images), ("4n", 4 * args.memory_images)):
        log(f"memory: featurize [backbone, hand_landmarks] on {count} photos in a child process")
        result = subprocess.run([sys.executable, __file__, "--memory-probe", "--images", str(count),
                                 "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)],
                                capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"memory probe failed:\n{result.stderr[-3000:]}")
        peaks[label] = json.loads(result.stdout.strip().splitlines()[-1])
    n, big = peaks["n"], peaks["4n"]
    return {"rss_growth": big["peak_mib"] / n["peak_mib"], "rss_peak_n_mib": n["peak_mib"],
            "rss_peak_4n_mib": big["peak_mib"], "rss_n_images": n["images"],
            "rss_growth_net": (big["peak_mib"] - big["before_mib"]) / max(n["peak_mib"] - n["before_mib"], 1.0)}


# --------------------------------------------------------------------------------------------- scale

def build_4n(source: Path, target: Path, copies: int = SCALE_COPIES) -> int:
    """The Kaggle-layout dataset `source` with `copies` more of each training photo, copy k shifted right by k
    pixels (edge column repeated) and re-encoded with the original's quantization tables and subsampling:
    other bytes, so de-duplication keeps them, at the original's size and quality; copy k of frame f is
    frame f + k * FRAME_OFFSET. Built once (reused while complete); returns the number of training photos."""
    from PIL import Image, JpegImagePlugin
    import numpy as np

    originals = sorted((source / "asl_alphabet_train").rglob("*.jpg"))
    expected = len(originals) * (copies + 1)
    done = target / ".complete"
    if done.is_file() and done.read_text() == f"{source} {expected}":
        return expected
    if target.exists():
        shutil.rmtree(target)
    log(f"scale: building the 4N dataset ({expected} photos) in {target}")
    if (source / "asl_alphabet_test").is_dir():
        shutil.copytree(source / "asl_alphabet_test", target / "asl_alphabet_test")
    for path in originals:
        out = target / "asl_alphabet_train" / path.parent.name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / path.name)
        stem = path.stem.rstrip("0123456789")
        frame = int(path.stem[len(stem):]) if stem != path.stem else None
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
            tables, sampling = image.quantization, JpegImagePlugin.get_sampling(image)
        for k in range(1, copies + 1):
            shifted = np.concatenate([np.repeat(rgb[:, :1], k, axis=1), rgb[:, :-k]], axis=1)
            name = f"{stem}{frame + k * FRAME_OFFSET}" if frame is not None else f"{path.stem}-copy{k}x"
            Image.fromarray(shifted).save(out / f"{name}.jpg", qtables=tables, subsampling=sampling)
    done.write_text(f"{source} {expected}")
    return expected


def scale_variants(params: dict, names=None) -> dict:
    """params.yaml (as read by yaml) with only the variants `names` (None: all of them, as `dvc repro` runs
    them); serve.model stays unless it is left out, then it is the first kept. SystemExit on an unknown name."""
    if not names:
        return params
    unknown = [name for name in names if name not in params["variants"]]
    if unknown:
        raise SystemExit(f"--scale-variants: no variant(s) {unknown} in params.yaml (it has "
                         f"{list(params['variants'])})")
    variants = {name: overrides for name, overrides in params["variants"].items() if name in names}
    served = params["serve"]["model"]
    return {**params, "variants": variants, "serve": {**params["serve"],
                                                      "model": served if served in variants else next(iter(variants))}}


def project_copy(root: Path, data_dir: Path, per_class: str, variants=None) -> Path:
    """The working tree as git lists it (tracked and untracked, not ignored) in `root`, a fresh git repo with
    params set for the measurement; `variants`: only these params.yaml variants (default: all)."""
    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import copy_working_tree  # the DVC tests' throwaway projects are made the same way

    copy_working_tree(root, skip=("metrics/", "plots/", "dvc.lock", "benchmarks/"))
    params = scale_variants(yaml.safe_load((root / "params.yaml").read_text()), variants)
    params["data"].update(source="local", local_dir=str(data_dir))
    params["hands"].update(source="local", local_file=str(BUNDLE))
    params["split"]["per_class"] = "all" if per_class == "all" else int(per_class)
    params["evaluate"]["extra_sets"] = []
    params["data"]["extra_train"] = {}  # the dataset alone, N or 4N photos of it
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    return root


def repro_seconds(root: Path) -> dict:
    """download, extra_kaggle and hand_model untimed, then each of SCALE_STAGES alone (`dvc repro -s`), timed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*stages):
        result = subprocess.run(["dvc", "repro", *stages], cwd=root, env=env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"dvc repro {' '.join(stages)} failed in {root}:\n"
                               f"{result.stdout[-3000:]}{result.stderr[-3000:]}")

    dvc("download", "extra_kaggle", "hand_model")
    seconds, others = {}, {}
    for stage in SCALE_STAGES:
        with Meter() as meter:
            dvc("-s", stage)
        seconds[stage], others[stage] = meter.wall, round(meter.foreign or 0.0, 2)
        log(f"scale: {root.name} {stage} {seconds[stage]:.1f} s (others {others[stage]:.2f} cores)")
    return seconds, others


def scale(args) -> dict:
    import yaml

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    n_photos = len(list(TRAIN_DIR.rglob("*.jpg")))
    big = work / "asl-sample-4x"
    big_photos = build_4n(SAMPLE, big)
    runs = {}
    for label, data_dir, photos in (("n", SAMPLE, n_photos), ("4n", big, big_photos)):
        root = Path(tempfile.mkdtemp(prefix=f"bench-project-{label}-", dir=work))
        try:
            log(f"scale: dvc repro on {photos} photos in {root}")
            project_copy(root, data_dir, args.scale_per_class, args.scale_variants)
            seconds, others = repro_seconds(root)
            counts = json.loads((root / "metrics" / "split.json").read_text())["counts"]
            variants = list(yaml.safe_load((root / "params.yaml").read_text())["variants"])
            runs[label] = {"photos": photos, "seconds": seconds, "others": others, "counts": counts,
                           "variants": variants}
        finally:
            if not args.keep_projects:
                shutil.rmtree(root, ignore_errors=True)
    n, big_run = runs["n"], runs["4n"]

    def per_image(run, stages=SCALE_STAGES):
        return sum(run["seconds"][s] for s in stages) / run["photos"]

    result = {"scale_linearity": per_image(big_run) / per_image(n), "scale_n_images": n["photos"],
              "scale_4n_images": big_run["photos"], "scale_n_seconds": sum(n["seconds"].values()),
              "scale_4n_seconds": sum(big_run["seconds"].values())}
    scale.details = {label: {"others_cores": run["others"], "counts": run["counts"], "variants": run["variants"]}
                     for label, run in runs.items()}
    for stage in SCALE_STAGES:
        result[f"scale_{stage}_n_s"] = n["seconds"][stage]
        result[f"scale_{stage}_4n_s"] = big_run["seconds"][stage]
        result[f"scale_{stage}_linearity"] = per_image(big_run, [stage]) / per_image(n, [stage])
    return result


def served_model() -> Path | None:
    """The served variant's model that `dvc repro` trained here, for `spell` on the signer videos; None if absent."""
    from asl_pipeline.config import project_paths
    model_file = project_paths(REPO).variant(repo_params().served).model_files.model
    return model_file if model_file.is_file() else None


# ----------------------------------------------------------------------------------------------- main

def table(results: dict, about: dict) -> str:
    lines = [f"{'figure':<34} {'value':>12}  target", "-" * 60]
    for key, value in results.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        target = TARGETS.get(key)
        mark = ""
        if target:
            holds = value >= target[1] if target[0] == ">=" else value <= target[1]
            mark = f"{target[0]} {target[1]}  {'ok' if holds else 'MISSED'}"
        lines.append(f"{key:<34} {value:>12.3f}  {mark}")
    if about.get("carried_over"):
        lines.append(f"(carried over from an earlier run: {', '.join(about['carried_over'])})")
    return "\n".join(lines)


FLOOD_ABOUT = ("benchmarks/serving_flood.py in a child process, the served variant's model: peak RSS (VmHWM, reset "
               "after the model is loaded) while 20 client threads send 40 images to Demo.classify (7000 x 7000 flat "
               "PNG and 49-megapixel JPEG) and 40 to the live frame endpoint over HTTP (the same PNG and a 1920 x 1080 "
               "JPEG); flood_rss_before_mib: RSS before the flood")


# --only NAME: one family of figures measured alone (from the served model `dvc repro` trained here, or None)
# and merged into the results file beside the others, which it leaves as they are.
PARTS = {"flood": serving_flood, "motion": motion_letters}  # each module's measure(model_file) -> figures
ABOUT = {"flood": FLOOD_ABOUT}


def only(name: str, args, previous: dict, started) -> None:
    from asl_pipeline.atomic import write_json

    log(f"{name} alone, merged into {args.output}")
    model_file = served_model()
    figures = {key: round(value, 4) if isinstance(value, float) else value
               for key, value in PARTS[name].measure(model_file).items()}
    about = {**previous.get("about", {}), f"{name}_measured": started.isoformat(timespec="seconds"),
             f"{name}_command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
             f"{name}_model": None if model_file is None else model_file.relative_to(REPO).as_posix(),
             f"{name}_load_average": os.getloadavg()}
    if name in ABOUT:
        about[name] = ABOUT[name]
    kept = {key: value for key, value in previous.items()
            if not key.startswith(f"{name}_") and key not in ("machine", "about")}
    write_json(args.output, {**kept, **figures, "machine": previous.get("machine", machine()), "about": about})
    print(table(figures, about))
    print(f"written: {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="sample photos for throughput, bf16, predict")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds; the best counts")
    parser.add_argument("--bf16-rounds", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="before each round, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--memory-images", type=int, default=256, help="N of rss_growth (4N photos: 1024)")
    parser.add_argument("--predict-photos", type=int, default=20)
    parser.add_argument("--skip-scale", action="store_true",
                        help="leave out the `dvc repro` scale run (~22 min here); keeps the last scale figures, marked")
    parser.add_argument("--scale-only", action="store_true", help="only the scale run, merged into the results")
    parser.add_argument("--scale-per-class", default="all")
    parser.add_argument("--scale-variants", nargs="+", metavar="NAME",
                        help="the scale run's `dvc repro` trains only these params.yaml variants (default: all of "
                             "them, as `dvc repro` does)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "asl-pipeline-bench"),
                        help="outside the repo: the 4N dataset (built once, reused) and the project copies")
    parser.add_argument("--keep-projects", action="store_true")
    parser.add_argument("--skip-personalisation", action="store_true",
                        help="leave out the personalisation run (~5 min here); keeps the last figures, marked")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=sorted(PARTS),
                        help="one family alone, merged into the results without touching the other figures: flood "
                             "(benchmarks/serving_flood.py, ~2 min here), motion (benchmarks/motion_letters.py: J/Z "
                             "leaving one signer out, spell with and without tracking)")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args)

    from asl_pipeline.atomic import write_json  # first asl_pipeline import: it quiets TensorFlow's logging

    started = datetime.datetime.now().astimezone()
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if args.only:
        return only(args.only, args, previous, started)
    about = {"date": started.isoformat(timespec="seconds"), "command": "python benchmarks/run.py " +
             " ".join(sys.argv[1:]), "load_average_start": os.getloadavg(),
             "images": args.images, "image_size": args.image_size, "batch_size": args.batch_size,
             "backbone": "resnet50, random init (no network here; speed does not depend on the weights)",
             "featurize_vs_forward": "features.featurize_split([backbone]) vs a compiled tf.function of the "
                                     "same embedder on in-memory float32 batches, batch and size alike; the quietest of --rounds "
                                     "interleaved rounds (about.throughput_rounds); _cpu: CPU seconds, forward over "
                                     "featurize, median of the rounds",
             "predict_ms_per_image": "default model: hand_landmarks + svm head, Classifier.analyse([photo]), "
                                     "warm, median",
             "predict_ms_per_image_fused": "backbone + hand_landmarks + svm head, no heatmap",
             "predict_heatmap_ms_per_image": "backbone + hand_landmarks + svm head, with Grad-CAM",
             "spell_fps": "video.spell (decode, hand landmarks, svm head, speller) on a 200 x 200 MJPG video of "
                          "the --images photos, every frame read; default model, warm",
             "live_page_fps": "the demo page's live endpoint over HTTP on 127.0.0.1, one JPEG (quality 80, "
                              "200 x 200) at a time, each answer awaited; default model, warm",
             "rss_growth": "[backbone, hand_landmarks] featurize in a child process: whole-process peak RSS "
                           "while it runs (peak reset after the model is built); rss_growth_net: above the RSS "
                           "before it",
             "others_cores": "cores other processes kept busy during a measurement (shared machine); "
                             "throughput figures come from the quietest of the interleaved rounds",
             "personalisation": "benchmarks/personalisation.py: per signer of evaluate.extra_sets, k photos per "
                                "letter of that signer added to the train features (counted train.extra_weight "
                                "times, reshaped copies as train makes), the svm head trained, that signer's other "
                                "photos scored; 3 draws of the k photos, mean; _k1_<set>: mean over the set's signers",
             "scale_linearity": "dvc repro -s split, featurize, train, evaluate (each stage of every variant "
                                "in params.yaml, or of --scale-variants: about.scale_runs.*.variants; split.per_class "
                                "--scale-per-class, no extra sets) on 4N photos over N, per photo"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="asl-bench-") as tmp:
        if not args.scale_only:
            log(f"throughput on {args.images} sample photos")
            bench = Bench(args)
            results |= throughput(bench)
            about["throughput_rounds"] = bench.rounds
            log("exp30: head epochs on cached features")
            results |= exp30(bench)
            log("bf16 against float32")
            results |= bf16(bench)
            log("predict latency")
            results |= predict(bench, Path(tmp))
            log("spell frames per second")
            results |= spell_fps(bench, Path(tmp))
            log("live page frames per second")
            results |= live_page_fps(bench, Path(tmp))
            log("J and Z from the motion; spell with and without tracking (long)")
            results |= motion_letters.measure(served_model())
            if getattr(bench, "repo_model", None):
                model_path, featurizers = bench.repo_model
                about["predict_ms_per_image_repo_model"] = (f"{model_path} of this checkout, the served variant "
                                                            f"(serve.model; {featurizers})")
            results |= memory(args)
            log("serving flood: 40 large images to each of the demo's paths from 20 clients")
            results |= serving_flood.measure(served_model())
            about["flood"] = FLOOD_ABOUT
    carried = []
    if args.skip_personalisation:
        for key, value in previous.items():
            if key.startswith("personalisation"):
                results[key] = value
                carried.append(key)
    elif not args.scale_only:
        import personalisation  # benchmarks/personalisation.py

        log("personalisation: k photos per letter of each other signer in training (long)")
        results |= personalisation.measure()
    if args.skip_scale:
        for key, value in previous.items():
            if key.startswith("scale_") and isinstance(value, (int, float)):
                results[key] = value
                carried.append(key)
        about["scale_measured"] = previous.get("about", {}).get("scale_measured")
    else:
        log("scale: dvc repro on N and 4N photos (long)")
        try:
            results |= scale(args)
            about["scale_measured"] = about["date"]
            about["scale_runs"] = scale.details
        except (RuntimeError, subprocess.CalledProcessError) as error:  # keep the other figures
            log(f"scale run failed: {error}")
            about["scale_error"] = str(error)[-2000:]
    if args.scale_only:
        keep = {k: v for k, v in previous.items() if not k.startswith("scale_") and k not in ("machine", "about")}
        results = keep | results
        about = {**previous.get("about", {}), "scale_measured": about["date"],
                 "scale_command": about["command"], "scale_runs": getattr(scale, "details", None)}
    if carried:
        about["carried_over"] = carried
    about["load_average_end"] = os.getloadavg()
    results = {key: round(value, 4) if isinstance(value, float) else value for key, value in results.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.output, {**results, "machine": machine(), "about": about})
    print(table(results, about))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
