"""`python -m asl_pipeline serve`: a local web page to try the trained model on a photo or a webcam snapshot,
to teach it the user's own hand (photos saved for the next `dvc repro`), and to spell from the live webcam
(asl_pipeline/live.py: its frames go to a small endpoint beside the page, in the same process).

The request handler is plain functions on bytes (`Demo.classify`, `Demo.teach`), testable without a server;
the page on top is a Streamlit script. Streamlit runs this very file as that script on every page interaction, in
the process that `serve` started, so the page finds the model `serve` loaded once (`running_demo`).

Streamlit rather than Gradio: every Gradio release (6.31 included) requires pillow<13, which conflicts
with the pinned pillow 13.0.0; Streamlit installs beside the pinned stack with `pip check` clean.
"""
import concurrent.futures
import ctypes
import dataclasses
import hashlib
import os
import re
import time
import urllib.parse
from pathlib import Path

import numpy as np
from PIL import Image

from asl_pipeline import drawing, teach
from asl_pipeline.config import INPUTS_DIGEST, MY_HAND_DIR, ModelFiles
from asl_pipeline.errors import PipelineError
from asl_pipeline.evaluation import top_k
from asl_pipeline.uploads import (MAX_UPLOAD_MB, UPLOAD_TYPES, BadUpload, read_photo,
                                  reading)

TOP_K = 5
DISPLAY_SIDE = 512  # longest side of the pictures sent to the page
DEMO_PACKAGES = "requirements-demo.txt"
MODES = ("Try it", "Teach it your hand", "Spell live")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
OWN_PAGES_FROM = 1024 * 1024  # bytes: an allocation this large gets pages of its own, returned when freed
NO_HAND = "No hand found in this photo"


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


@dataclasses.dataclass(frozen=True)
class Taught:
    """What the page shows for photos saved in teach mode: the letter, and for each photo its name as
    uploaded, where it went and how the model reads it now."""

    label: str
    saved: list  # [(upload name, Path, Prediction)]
    duplicates: list = dataclasses.field(default_factory=list)  # [(upload name, name of the same photo saved)]


class Stopping(Exception):
    """The demo is shutting down: a request that arrives now gets no reading."""


def model_stamp(model_file: Path) -> tuple:
    """What changes when training rewrites the model or one of its companions: each file's inode (a new
    one for every atomic write), modification time and size; None for a missing file."""
    files = ModelFiles(Path(model_file))

    def stamp(path: Path):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    return tuple(stamp(path) for path in (files.model, files.labels, files.spec, files.run, files.hand_model))


def traced(classifier):
    """The classifier after one call on a blank photo, which traces its graphs (seconds, for a ResNet)
    before a visitor waits on them."""
    classifier.analyse([np.zeros((DISPLAY_SIDE, DISPLAY_SIDE, 3), np.uint8)])
    return classifier


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
        warning = (f"{NO_HAND}, so the model did not see the hand it was trained to read "
                   "and this prediction is unreliable. Try a photo with the whole hand in view, in good light.")
    return Prediction(ranked[0][0], ranked, heatmap, skeleton, keypoints, analysis.hand_found, warning)


def training_run(run: dict) -> str:
    """Which training run made the model, from run.json: its DVC experiment and its training inputs' digest,
    when known."""
    parts = []
    if run.get("dvc_experiment"):
        parts.append(f"DVC experiment {run['dvc_experiment']}")
    if run.get(INPUTS_DIGEST):
        parts.append(f"inputs sha256 {run[INPUTS_DIGEST][:12]}")
    return ", ".join(parts) or "unknown (no DVC experiment or inputs digest in run.json beside the model)"


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

    def __init__(self, classifier, teach_dir: Path = MY_HAND_DIR, k: int = TOP_K):
        self.teach_dir = Path(teach_dir)
        self.wanted_k = k
        # Set while the model files on disk changed but do not load: the page says so and serves the old model.
        self.reload_problem: str | None = None
        # Every model call runs on this one thread, one at a time: simultaneous requests queue instead of
        # competing for the CPU and memory, and the hand landmarker (one LiteRT interpreter per thread)
        # is made once rather than for each of Streamlit's per-session threads.
        self._model_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._serve(classifier, model_stamp(classifier.model_file))
        # This demo is the folder's only writer, and none of its saves is under way yet.
        teach.remove_stale_temporaries(self.teach_dir, classifier.classes)

    def _serve(self, classifier, stamp: tuple) -> None:
        self.classifier = classifier
        self.k = min(self.wanted_k, len(classifier.classes))
        self.description = describe(classifier)
        self._stamp = stamp  # of the files the page last tried to load

    def on_model_thread(self, function, *args):
        try:
            job = self._model_thread.submit(function, *args)
        except RuntimeError:  # after stop(), or at the interpreter's exit: "cannot schedule new futures after shutdown"
            raise Stopping() from None
        try:
            return job.result()
        except concurrent.futures.CancelledError:  # it was waiting for the model thread when stop() came
            raise Stopping() from None

    def analyse(self, photo: np.ndarray, with_heatmaps: bool = True, track=None):
        """track: a featurizers.Track when the photo is the next frame of a live camera (live.py)."""
        return self.on_model_thread(self.classifier.analyse, [photo], None, with_heatmaps, track)[0]

    def classify(self, data: bytes) -> Prediction | Rejection:
        """The page's answer to one uploaded file or snapshot."""
        try:
            with reading(data) as photo:  # a bounded number decoded and read at once, whatever arrives
                return prediction(self.analyse(photo), self.classifier.classes, self.k)
        except BadUpload as problem:
            return Rejection(str(problem))

    def teach(self, photos: list, label: str) -> Taught | Rejection:
        """Save uploaded photos [(name, bytes)] of the sign `label` for training, all of them or none: a photo
        the demo cannot read or in which it finds no hand is refused, with the reason, and then nothing is saved.
        The same bytes twice (one photo picked twice) are saved once."""
        try:
            teach.check_label(label, self.classifier.classes)
            if not photos:
                raise BadUpload("Nothing to save yet: pick a photo or take a snapshot first, then press Save.")
            used, kept, problems, first_of = teach.folder_bytes(self.teach_dir), [], [], {}
            duplicates = []  # [(name, the name of the same photo kept)]
            for name, data in photos:
                digest = hashlib.sha256(data).digest()
                if digest in first_of:
                    duplicates.append((name, first_of[digest]))
                    continue
                first_of[digest] = name
                try:
                    kept.append((name, *self._teachable(data)))
                except BadUpload as problem:
                    problems.append(f"{name}: {problem}")
                # Checked as the photos come: a save far over the limit stops before reading the rest.
                teach.check_room(self.teach_dir, used, sum(len(stored) for _, stored, _ in kept))
            if problems:
                which = "" if len(first_of) == 1 else f" {len(problems)} of the {len(first_of)} photos cannot be taught."
                raise BadUpload(f"Nothing was saved:{which} " + " ".join(problems) + " Pick the photos again "
                                "without " + ("it" if len(problems) == 1 else "them") + " and press Save.")
            paths = teach.save([stored for _, stored, _ in kept], label, self.classifier.classes, self.teach_dir)
        except BadUpload as problem:
            return Rejection(str(problem))
        except OSError as error:
            return Rejection(f"Nothing was saved: could not write in {self.teach_dir}/{label}/ "
                             f"({error.strerror or error}). Make that folder writable, or start the demo with "
                             "--teach-dir set to one that is.")
        return Taught(label, [(name, path, read_as) for (name, _, read_as), path in zip(kept, paths)], duplicates)

    def _teachable(self, data: bytes) -> tuple:
        """(the bytes to save for an uploaded photo, how the model reads them); BadUpload for a photo that
        cannot be read or shows no hand: training would learn the letter from what is not a hand."""
        with reading(data) as photo:
            stored = teach.stored_bytes(data, photo)
            # The saved bytes, not the upload: the very pixels training will read. No heatmap: the page shows
            # only the reading.
            analysis = self.analyse(read_photo(stored), with_heatmaps=False)
            read_as = prediction(analysis, self.classifier.classes, self.k)
        if analysis.hand_found is False:
            raise BadUpload(f"{NO_HAND}: teach only photos with the whole hand in view, in good light.")
        return stored, read_as

    def teach_counts(self) -> dict:
        return teach.counts(self.teach_dir, self.classifier.classes)

    def stop(self) -> None:
        """Take no more requests: each is answered Stopping; one on the model thread now still finishes."""
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    def follow_model_file(self) -> bool:
        """Load the model again if training rewrote its files since the last look; True when it did.

        The page calls this on every run, so it serves what `dvc repro` trained without a restart. It runs
        on the model thread: no request sees a half-swapped model and two sessions never load at once.
        """
        return self.on_model_thread(self._reload_if_changed)

    def _reload_if_changed(self) -> bool:
        from asl_pipeline.inference import load_classifier

        model_file = self.classifier.model_file
        stamp = model_stamp(model_file)  # before loading: a write during the load shows at the next look
        if stamp == self._stamp:
            return False
        try:
            classifier = traced(load_classifier(model_file))
        except Exception as error:  # whatever is wrong with the new files, the old model keeps serving
            # Remembered, so a broken file is not loaded again on every page run, only once it changes again.
            self._stamp = stamp
            self.reload_problem = (f"The model files beside {model_file} changed but do not load ({error}). Still "
                                   "serving the model loaded before; the page loads the new one by itself once "
                                   "they are complete (when `dvc repro` finishes, or after re-running it).")
            return False
        self._serve(classifier, stamp)
        self.reload_problem = None
        return True


_running: Demo | None = None  # the demo `serve` started, for the page script in the same process
_live = None  # that demo's live endpoint (live.LiveServer), on the page's host


def return_freed_memory() -> None:
    """glibc: give every allocation of OWN_PAGES_FROM or more (a decoded photo, its copies) pages of its own,
    returned to the system when freed. By default glibc raises that threshold to up to 32 MB as large blocks are
    freed, after which photos land in per-thread heaps that keep the freed memory: flooded from 20 clients,
    the demo then held 1.9 GB more at its peak, against 0.55 GB so (benchmarks/serving_flood.py)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (macOS, musl): its own policy stands
        return
    libc.mallopt(M_MMAP_THRESHOLD, OWN_PAGES_FROM)


def running_demo() -> Demo:
    if _running is None:
        raise PipelineError("no model loaded: start the demo with `python -m asl_pipeline serve`")
    return _running


def streamlit_options(host: str, port: int) -> dict:
    from asl_pipeline.live import page_origins

    every_address = host in ("0.0.0.0", "::", "")
    return {
        "server.address": host,
        "server.port": port,
        "server.headless": True,  # no browser opened on the server, no e-mail prompt
        "server.maxUploadSize": MAX_UPLOAD_MB,  # for uploads and snapshots alike
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        # Streamlit's defaults, set here so that no config.toml turns them off: other sites' requests are refused
        # (CORS), and an upload must carry the page's XSRF token.
        "server.enableCORS": True,
        "server.enableXsrfProtection": True,
        # The host names the page may be opened by: a page elsewhere whose name resolves to this machine (DNS
        # rebinding) is refused. With --host 0.0.0.0 any name reaches the page, as that option asks.
        "server.allowedHosts": [] if every_address else sorted(
            {urllib.parse.urlsplit(origin).hostname for origin in page_origins(host, port)}),
        "browser.gatherUsageStats": False,  # nothing leaves the machine
        "global.developmentMode": False,
        "client.toolbarMode": "minimal",
    }


def only_the_page_opens_the_websocket(origins: set) -> bool:
    """Make Streamlit's WebSocket, which carries the page's widgets and uploads' results, accept a cross-origin
    page only at one of `origins` (as the live endpoint does); False where this Streamlit has no such check.

    Streamlit (1.67) accepts a page at any port of localhost or of this machine's addresses, comparing host names
    alone, and has no option for it: its check is replaced here, by name, in the pinned version.
    """
    try:
        from streamlit.web.server.starlette import starlette_websocket
    except ImportError:
        return False
    if not callable(getattr(starlette_websocket, "is_url_from_allowed_origins", None)):
        return False
    starlette_websocket.is_url_from_allowed_origins = lambda origin: origin in origins
    return True


def serve(model_file: Path, host: str, port: int, teach_dir: Path, live_port: int | None = None) -> None:
    """Load the model, then serve the page at http://host:port until interrupted; teach mode saves photos
    under teach_dir; Spell live's frames go to live_port (default: the port after the page's)."""
    global _running, _live
    live_port = port + 1 if live_port is None else live_port
    for option, number in (("--port", port), ("--live-port", live_port)):
        if not 0 < number < 65536:
            raise PipelineError(f"{option} {number} is not a TCP port: choose one from 1 to 65535")
    if live_port == port:
        raise PipelineError(f"--live-port {live_port} is the page's own --port: choose another one")
    try:
        from streamlit.web import bootstrap
    except ImportError:
        raise PipelineError(f"the demo needs the packages in {DEMO_PACKAGES}: run `make demo`, or "
                            f"`.venv/bin/python -m pip install -r {DEMO_PACKAGES}`") from None
    from asl_pipeline.inference import load_classifier
    from asl_pipeline.live import LiveServer, LiveSessions, PageSecrets, page_key, page_origins

    started = time.monotonic()
    return_freed_memory()
    demo = Demo(load_classifier(model_file), teach_dir)
    # Traced before the page is up, and on the model thread where it will run: Streamlit calls
    # keras.backend.clear_session() after every page run, which must not land mid-trace.
    demo.on_model_thread(traced, demo.classifier)
    _running = demo
    try:
        # A fixed port, not any free one: a live tab left open finds the endpoint again after a restart.
        _live = LiveServer(LiveSessions(demo, PageSecrets(page_key())), host, live_port, port)
    except OSError as error:
        raise PipelineError(f"Spell live cannot listen on {host}:{live_port} ({error.strerror or error}): stop "
                            "what uses that port (another demo?), or pass --live-port with a free one") from None
    print(f"serve: {demo.description.replace('`', '')}", flush=True)
    print(f"serve: teach mode saves photos in {teach_dir}/<LETTER>/", flush=True)
    print(f"serve: Spell live posts webcam frames to http://{host}:{live_port}", flush=True)
    print(f"serve: model ready in {time.monotonic() - started:.1f} s; starting the page at "
          f"http://{host}:{port} (Ctrl-C stops it)", flush=True)
    options = streamlit_options(host, port)
    bootstrap.load_config_options(options)
    if not only_the_page_opens_the_websocket(page_origins(host, port)):
        print("serve: this Streamlit's WebSocket accepts pages at any port of this machine (see docs/demo-page.md)",
              flush=True)
    try:
        bootstrap.run(__file__, False, [], options)
    finally:  # requests still arriving are told the demo is stopping, not an internal error
        demo.stop()
        _live.close()


def render_page(demo: Demo, live_server) -> None:
    import streamlit as st

    st.set_page_config(page_title="ASL fingerspelling demo", layout="wide")
    st.title("ASL fingerspelling: try the classifier")
    reloaded = demo.follow_model_file()
    st.caption(demo.description)
    if demo.reload_problem:
        st.warning(demo.reload_problem)
    elif reloaded:
        st.success("The model files changed on disk (retrained?): the page now serves the new model.")
    mode = st.radio("Mode", MODES, horizontal=True)
    if mode == "Try it":
        render_try(st, demo)
    elif mode == "Teach it your hand":
        render_teach(st, demo)
    else:
        render_live(st, live_server)


def render_try(st, demo: Demo) -> None:
    source = st.radio("Photo from", ("a file", "the webcam"), horizontal=True)
    if source == "a file":
        upload = st.file_uploader(f"Drop or pick a photo of one hand sign (at most {MAX_UPLOAD_MB} MB)",
                                  type=UPLOAD_TYPES, max_upload_size=MAX_UPLOAD_MB)
    else:
        upload = st.camera_input("Take a snapshot of your hand sign")
    if upload is None:
        return
    with st.spinner("Classifying..."):
        answer = demo.classify(upload.getvalue())
    if isinstance(answer, Rejection):
        st.error(as_text(answer.message))
    else:
        show_prediction(st, answer)


def as_text(text: str) -> str:
    """`text` for Streamlit's Markdown, shown as written: every ASCII punctuation mark escaped, so that a file
    name like ![x](http://host/track.png).jpg is not an image the browser fetches, nor a link, nor LaTeX."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def counts_line(counts: dict) -> str:
    """The photos saved per class, in Markdown, and the classes that have none yet."""
    line = " · ".join(f"**{label}** {count}" for label, count in counts.items())
    missing = [label for label, count in counts.items() if count == 0]
    return line + (f"  \nNo photo yet: {', '.join(missing)}" if missing else "  \nEvery letter has a photo.")


@dataclasses.dataclass
class TeachRecord:
    """What teach mode keeps for one browser tab, as one object in its session state: its fields change without a
    Streamlit call (writing to st.session_state is one, where a second click stops the page run)."""

    saves: int = 0  # the picker's key: renewed once a save has taken its photos
    outcome: Taught | Rejection | None = None  # of the last press of Save, shown until the next
    had_photos: bool = False  # that press had photos to save
    note: str | None = None  # said below the outcome: a press that found nothing new


def render_teach(st, demo: Demo) -> None:
    st.markdown("Save photos of **your** hand signing each letter; the next training run learns from them.")
    label = st.selectbox("Letter you sign in the photo", demo.classifier.classes)
    source = st.radio("Photo from", ("files", "the webcam"), horizontal=True)
    record = st.session_state.setdefault("teach", TeachRecord())
    # The photos picked since the last save, in a picker of that save's own (a new key once it saved): a photo
    # saved leaves the page, so no later click can save it again. The labels do not name the letter: a widget
    # whose label changes is a new widget, which would drop the photos picked before the letter.
    picker = f"teach_photos_{record.saves}"
    if source == "files":
        uploads = st.file_uploader(f"Drop or pick photos of your hand signing that letter (at most "
                                   f"{MAX_UPLOAD_MB} MB each)", type=UPLOAD_TYPES, accept_multiple_files=True,
                                   max_upload_size=MAX_UPLOAD_MB, key=picker) or []
    else:
        snapshot = st.camera_input("Take a snapshot of your hand signing that letter", key=f"{picker}_webcam")
        uploads = [] if snapshot is None else [snapshot]
    if uploads:  # what a press of Save takes: a photo still uploading is not there yet
        st.caption(f"{len(uploads)} photo{'s' if len(uploads) > 1 else ''} picked, not saved yet.")
    if st.button(f"Save as {label}", type="primary"):
        with st.spinner("Reading and saving the photos..."):
            save_once(demo, record, uploads, label, forget_uploads)
        if f"teach_photos_{record.saves}" != picker:
            st.rerun()  # this run drew the old picker, its photos given back: the page shows the new, empty one
    if record.outcome is not None:
        show_taught(st, record.outcome)
    if record.note:
        st.info(record.note)
    st.markdown(f"Photos saved in `{demo.teach_dir}/` per letter: {counts_line(demo.teach_counts())}")
    st.info(f"**Next:** run `dvc repro` in the project folder. Training reads `{demo.teach_dir}/<LETTER>/` "
            f"when the folder is listed in `data.extra_train` in params.yaml, which `{MY_HAND_DIR}` is by default. "
            "This page loads the retrained model by itself; no restart needed.")


def save_once(demo: Demo, record: TeachRecord, uploads: list, label: str, forget) -> None:
    """One press of "Save as <label>" with `uploads` in the picker, its outcome kept in the tab's `record`: the
    photos saved all together or refused, then the picker renewed (record.saves) and their bytes given back
    (`forget(uploads)`).

    A second click, or one during the save, reruns the page at once, stopping this run at its next Streamlit
    call: there is none in here (the record's fields are plain Python), so the save, its outcome and the new
    picker land together. The rerun then finds the new, empty picker and keeps the first click's outcome, saying
    that nothing new was picked; had the first run stopped before saving, the rerun finds the photos still
    picked and saves them.
    """
    if not uploads and record.had_photos:
        record.note = ("Nothing new to save: the photos saved above left the picker, so that each is saved once. "
                       "Pick more photos (and wait for them to show as picked) to save more.")
        return
    record.outcome = demo.teach([(upload.name, upload.getvalue()) for upload in uploads], label)
    record.had_photos, record.note = bool(uploads), None
    if uploads:
        record.saves += 1
        forget(uploads)


def forget_uploads(uploads: list) -> None:
    """Drop the uploads from Streamlit's memory, which otherwise keeps every file a tab uploaded until that tab's
    session ends (minutes after the tab closes): once saved or refused, a photo is never read again."""
    from streamlit.runtime import get_instance
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    session = get_script_run_ctx().session_id
    for upload in uploads:
        get_instance().uploaded_file_mgr.remove_file(session, upload.file_id)


def render_live(st, live_server) -> None:
    from streamlit.components.v1 import html

    from asl_pipeline import live

    st.markdown("Sign letters to the webcam, holding each for about a second; the letter and the hand the model "
                "sees are drawn over the picture, and the letters it takes build up below. For a double letter "
                "(the LL of HELLO), drop the hand out of view between the two. J and Z are signed with a motion "
                "and are not read. The frames go only to this demo's server.")
    # One secret per browser tab (Streamlit session), the same on every page run: the component is not
    # restarted by a rerun, and only this page can use the endpoint.
    secret = st.session_state.setdefault("live_page_secret", live_server.sessions.pages.issue())
    html(live.component_html(live_server.port, secret), height=live.COMPONENT_HEIGHT)


def show_taught(st, answer: Taught | Rejection) -> None:
    if isinstance(answer, Rejection):
        st.error(as_text(answer.message))
        return
    lines = [f"Saved {len(answer.saved)} photo{'s' if len(answer.saved) > 1 else ''} as **{answer.label}**."]
    for name, path, read_as in answer.saved:
        best, probability = read_as.ranked[0]
        verdict = ("it already reads your hand" if best == answer.label
                   else f"teaching it this {answer.label} should help")
        lines.append(f"{as_text(name)}: saved as `{path}`. The current model reads it as **{best}** "
                     f"({probability:.0%}): {verdict}.")
    for name, same in answer.duplicates:
        lines.append(f"{as_text(name)} is the same photo as {as_text(same)}: saved once.")
    st.success("  \n".join(lines))


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

    app.render_page(app.running_demo(), app._live)
