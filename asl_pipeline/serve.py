"""`python -m asl_pipeline serve`: a local web page to try the trained model on a photo or a webcam snapshot.

The request handler is plain functions on bytes (`Demo.classify`), testable without a server; the page
on top is a Streamlit script. Streamlit runs this very file as that script on every page interaction, in
the process that `serve` started, so the page finds the model `serve` loaded once (`running_demo`).

Streamlit rather than Gradio: every Gradio release (6.31 included) requires pillow<13, which conflicts
with the pinned pillow 13.0.0; Streamlit installs beside the pinned stack with `pip check` clean.
"""
import concurrent.futures
import dataclasses
import time
from pathlib import Path

import numpy as np
from PIL import Image

from asl_pipeline import drawing, images
from asl_pipeline.errors import PipelineError
from asl_pipeline.evaluation import top_k

MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # Streamlit's megabyte
# Streamlit refuses a file over its own limit in the browser, marking only the file name red; up to this
# size a file reaches read_photo instead, whose refusal says on the page what was wrong and what to do.
STREAMLIT_UPLOAD_LIMIT_MB = 5 * MAX_UPLOAD_MB
# Ten megabytes of JPEG or flat PNG can hold hundreds of megapixels; beyond this, decoding and drawing
# take seconds and gigabytes for no better prediction.
MAX_PIXELS = 50_000_000
TOP_K = 5
DISPLAY_SIDE = 512  # longest side of the pictures sent to the page
UPLOAD_TYPES = sorted(suffix.lstrip(".") for suffix in images.IMAGE_SUFFIXES)
DEMO_PACKAGES = "requirements-demo.txt"


class BadUpload(Exception):
    """An upload the page cannot classify; the message says what to do instead."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the page shows for a classified photo."""

    label: str
    ranked: list  # [(label, probability)] best first
    heatmap: np.ndarray | None  # Grad-CAM over the photo, RGB; None for a landmarks-only model
    skeleton: np.ndarray | None  # the hand the model saw (or "no hand found"), RGB; None without hands
    keypoints: np.ndarray | None  # the skeleton, joints coloured by weight, RGB; for a landmarks-only model
    hand_found: bool | None  # None when the model does not look for hands
    warning: str | None  # shown beside the result, e.g. when no hand was found


@dataclasses.dataclass(frozen=True)
class Rejection:
    """What the page shows instead of a result: why the upload was not classified, and what to do."""

    message: str


def read_photo(data: bytes) -> np.ndarray:
    """The uploaded bytes as an RGB uint8 photo, or BadUpload saying what is wrong with them."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadUpload(f"The file is {len(data) / 1024 / 1024:.1f} MB; the demo takes photos of up to "
                        f"{MAX_UPLOAD_MB} MB. Save it smaller (as a JPEG, or scaled down) and upload it again.")
    if not data:
        raise BadUpload("The upload is empty (0 bytes). Pick a photo file, or take the snapshot again.")
    try:
        photo = images.decode_rgb(data, "upload")
    except images.UnreadableImage as error:
        raise BadUpload(f"This file is not an image the demo can read: {error.reason}. Upload a photo "
                        f"({', '.join(UPLOAD_TYPES)}).") from None
    height, width = photo.shape[:2]
    if height * width > MAX_PIXELS:
        raise BadUpload(f"The photo is {width} x {height} pixels ({height * width / 1e6:.0f} megapixels); the "
                        f"demo takes up to {MAX_PIXELS / 1e6:.0f} megapixels. Scale it down and upload it again.")
    return photo


def for_display(rgb: np.ndarray) -> np.ndarray:
    """The picture scaled down to at most DISPLAY_SIDE on its longest side (never up)."""
    picture = Image.fromarray(rgb)
    picture.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.LANCZOS)
    return np.asarray(picture)


def prediction(analysis, classes, k: int) -> Prediction:
    ranked = top_k(analysis.probabilities[None], classes, k)[0]
    photo = for_display(analysis.image)
    # The overlay stretches the heatmap to whatever it is drawn on, so it is drawn on the small copy;
    # the hand's landmarks are in the original photo's pixels, so the skeleton is drawn there first.
    heatmap = None if analysis.heatmap is None else drawing.overlay(photo, analysis.heatmap, drawing.HEATMAP_ALPHA)
    skeleton = None if analysis.hand_found is None else for_display(drawing.draw_hand(analysis.image,
                                                                                      analysis.hand))
    keypoints = None if analysis.keypoint_weights is None else for_display(drawing.draw_hand_weights(
        analysis.image, analysis.hand, analysis.keypoint_weights))
    warning = None
    if analysis.hand_found is False:
        warning = ("No hand found in this photo, so the model did not see the hand it was trained to read "
                   "and this prediction is unreliable. Try a photo with the whole hand in view, in good light.")
    return Prediction(ranked[0][0], ranked, heatmap, skeleton, keypoints, analysis.hand_found, warning)


def training_run(run: dict) -> str:
    """Which training run made the model, from run.json: git commit and DVC experiment, when known."""
    parts = []
    if run.get("git_commit"):
        parts.append(f"git commit {run['git_commit'][:12]}"
                     + (" with uncommitted changes" if run.get("git_dirty") else ""))
    if run.get("dvc_experiment"):
        parts.append(f"DVC experiment {run['dvc_experiment']}")
    return ", ".join(parts) or "unknown (no git commit or DVC experiment in run.json beside the model)"


def inputs_note(spec, run: dict) -> str:
    """What the model reads of a photo, and whether its backbone was pretrained."""
    if not spec.uses_backbone:
        return "reads: hand landmarks (no image backbone)"
    pretrained = run.get("pretrained")
    if pretrained is None:
        backbone = f"a {spec.backbone} backbone (pretrained: unknown, no run.json beside the model)"
    elif pretrained:
        # backbone_weights reads like "imagenet (/root/.keras/models/...h5)": the source is enough here.
        source = str(run.get("backbone_weights", "unknown weights")).split(" (")[0]
        backbone = f"a {spec.backbone} backbone pretrained on {source}"
    else:
        backbone = f"a {spec.backbone} backbone NOT pretrained (random init: expect poor predictions)"
    hands = " and hand landmarks" if "hand_landmarks" in spec.featurizers else ""
    return f"reads: the photo through {backbone}{hands}"


def describe(classifier) -> str:
    """One line, in Markdown, on what is being served."""
    return (f"Model `{classifier.model_file}` ({len(classifier.classes)} classes) · training run: "
            f"{training_run(classifier.run)} · {inputs_note(classifier.spec, classifier.run)}")


class Demo:
    """The loaded classifier and the one thread that runs it: the handler behind the page."""

    def __init__(self, classifier, k: int = TOP_K):
        self.classifier = classifier
        self.k = min(k, len(classifier.classes))
        self.description = describe(classifier)
        # Every model call runs on this one thread, one at a time: simultaneous requests queue instead of
        # competing for the CPU and memory, and the hand landmarker (one LiteRT interpreter per thread)
        # is made once rather than for each of Streamlit's per-session threads.
        self._model_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def analyse(self, photo: np.ndarray):
        return self._model_thread.submit(self.classifier.analyse, [photo]).result()[0]

    def classify(self, data: bytes) -> Prediction | Rejection:
        """The page's answer to one uploaded file or snapshot."""
        try:
            photo = read_photo(data)
        except BadUpload as problem:
            return Rejection(str(problem))
        return prediction(self.analyse(photo), self.classifier.classes, self.k)


_running: Demo | None = None  # the demo `serve` started, for the page script in the same process


def running_demo() -> Demo:
    if _running is None:
        raise PipelineError("no model loaded: start the demo with `python -m asl_pipeline serve`")
    return _running


def streamlit_options(host: str, port: int) -> dict:
    return {
        "server.address": host,
        "server.port": port,
        "server.headless": True,  # no browser opened on the server, no e-mail prompt
        "server.maxUploadSize": STREAMLIT_UPLOAD_LIMIT_MB,  # for uploads and snapshots alike
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "browser.gatherUsageStats": False,  # nothing leaves the machine
        "global.developmentMode": False,
        "client.toolbarMode": "minimal",
    }


def serve(model_file: Path, host: str, port: int) -> None:
    """Load the model, then serve the page at http://host:port until interrupted."""
    global _running
    if not 0 < port < 65536:
        raise PipelineError(f"--port {port} is not a TCP port: choose one from 1 to 65535")
    try:
        from streamlit.web import bootstrap
    except ImportError:
        raise PipelineError(f"the demo needs the packages in {DEMO_PACKAGES}: run `make demo`, or "
                            f"`.venv/bin/python -m pip install -r {DEMO_PACKAGES}`") from None
    from asl_pipeline.inference import load_classifier

    started = time.monotonic()
    demo = Demo(load_classifier(model_file))
    # Trace the model's graphs (seconds, for a ResNet) before the page is up: the first visitor need not wait,
    # and Streamlit calls keras.backend.clear_session() after every page run, which must not land mid-trace.
    demo.analyse(np.zeros((DISPLAY_SIDE, DISPLAY_SIDE, 3), np.uint8))
    _running = demo
    print(f"serve: {demo.description.replace('`', '')}", flush=True)
    print(f"serve: model ready in {time.monotonic() - started:.1f} s; starting the page at "
          f"http://{host}:{port} (Ctrl-C stops it)", flush=True)
    options = streamlit_options(host, port)
    bootstrap.load_config_options(options)
    bootstrap.run(__file__, False, [], options)


def render_page(demo: Demo) -> None:
    import streamlit as st

    st.set_page_config(page_title="ASL fingerspelling demo", layout="wide")
    st.title("ASL fingerspelling: try the classifier")
    st.caption(demo.description)
    source = st.radio("Photo from", ("a file", "the webcam"), horizontal=True)
    if source == "a file":
        upload = st.file_uploader(f"Drop or pick a photo of one hand sign (at most {MAX_UPLOAD_MB} MB)",
                                  type=UPLOAD_TYPES, max_upload_size=STREAMLIT_UPLOAD_LIMIT_MB)
    else:
        upload = st.camera_input("Take a snapshot of your hand sign")
    if upload is None:
        return
    with st.spinner("Classifying..."):
        answer = demo.classify(upload.getvalue())
    if isinstance(answer, Rejection):
        st.error(answer.message)
    else:
        show_prediction(st, answer)


def show_prediction(st, answer: Prediction) -> None:
    scores, pictures = st.columns((1, 2))
    with scores:
        st.metric("Predicted sign", answer.label)
        for label, probability in answer.ranked:
            st.progress(min(probability, 1.0), text=f"{label}: {probability:.1%}")
        if answer.warning:
            st.warning(answer.warning)
    shown = []
    if answer.heatmap is not None:
        shown.append((answer.heatmap, f"Grad-CAM: where the model looked for {answer.label}"))
    if answer.skeleton is not None:
        shown.append((answer.skeleton, "Hand landmarks the model saw" if answer.hand_found else "No hand found"))
    if answer.keypoints is not None and answer.hand_found:
        shown.append((answer.keypoints, f"Which joints decided {answer.label}"))
    with pictures:
        # Two columns whatever is shown, so that a single picture is not stretched to twice the size.
        for column, (picture, caption) in zip(st.columns(2), shown):
            column.image(picture, caption=caption, alt=caption, width="stretch")


if __name__ == "__main__":
    # Streamlit runs this file as the page script in a fresh `__main__` module: take the page and the model
    # from the imported module, where `serve` put them.
    from asl_pipeline import serve as app

    app.render_page(app.running_demo())
