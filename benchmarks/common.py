"""What the benchmark families share: the sample photos and paths, the params helpers, the machine's
description, quiet output and logging, and the Bench (photos, embedders, featurizers) with the Meter and
quiet waits that make throughput fair on a shared machine. Imports no family module.

Import it before asl_pipeline and bench_variants: it puts this checkout first on sys.path (the venv's editable
install of asl_pipeline may be another checkout's)."""
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench_variants import variant_reading  # noqa: E402  (benchmarks/, this module's folder)

SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "asl-sample"
TRAIN_DIR = SAMPLE / "asl_alphabet_train"
BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "numpy", "opencv-python-headless",
            "pillow", "scikit-learn", "dvc")


@contextlib.contextmanager
def quiet():
    """Keras prints a line per epoch, scikit-learn warns about tiny folds: neither belongs in the table."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- memory

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


def served_model() -> Path | None:
    """The served variant's model that `dvc repro` trained here, for `spell` on the signer videos; None if absent."""
    from asl_pipeline.config import project_paths
    model_file = project_paths(REPO).variant(repo_params().served).model_files.model
    return model_file if model_file.is_file() else None


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


# ------------------------------------------------------------------------------- in-process measurements

class Bench:
    """The sample photos, the embedders and featurizers, shared by the in-process measurements."""

    def __init__(self, args):
        import numpy as np

        from asl_pipeline import backbones, features, hand_model, images
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
