"""Spelling a video file or a camera (OpenCV): frames sampled at a steady rate, read by the classifier with the
hand tracked from frame to frame, J and Z from the motion, fed to the speller (stream.py), and annotated frames
out."""
import contextlib
import time
from pathlib import Path

import cv2
import numpy as np

from asl_pipeline import drawing
from asl_pipeline.atomic import atomic_file
from asl_pipeline.errors import PipelineError
from asl_pipeline.stream import StreamReader

# 8K: the largest frames cameras record. Each decoded frame of that size takes 100 MB; a file declaring more
# is refused from its header rather than decoded.
MAX_FRAME_PIXELS = 7680 * 4320
WRITER_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}  # the codecs OpenCV's wheels write without extra libraries
FONT = cv2.FONT_HERSHEY_SIMPLEX
LINE_SHARE = 1 / 10  # each line of words on the annotated frames: this share of the frame's shorter side
CAPITAL_SHARE = 0.6  # a capital letter's height in its line


@contextlib.contextmanager
def _opencv_warnings_off():
    # OpenCV logs a warning per backend that fails to open a source; the PipelineError says it once, clearly.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_source(video: Path | None, camera: int | None) -> cv2.VideoCapture:
    """An opened capture of the file or camera, its frame size checked before any frame is decoded."""
    if camera is not None:
        with _opencv_warnings_off():
            capture = cv2.VideoCapture(camera)
        name = f"camera {camera}"
        if not capture.isOpened():
            raise PipelineError(f"{name} cannot be opened: there is no such camera, or another program is "
                                "using it. Check that the camera is connected and pass its index (Linux: "
                                "`v4l2-ctl --list-devices` lists them; the first is 0)")
    else:
        if not video.is_file():
            raise PipelineError(f"video {video} not found: pass the path of a video file")
        with _opencv_warnings_off():
            capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
        name = f"video {video}"
        if not capture.isOpened():
            raise PipelineError(f"{name} cannot be opened: it is not a video OpenCV can read. Convert it to MP4 "
                                f"(H.264), e.g. `ffmpeg -i {video} converted.mp4`, and pass that")
    width, height = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if width * height > MAX_FRAME_PIXELS:
        capture.release()
        raise PipelineError(f"{name} has {width} x {height} frames ({width * height / 1e6:.0f} megapixels); "
                            f"spell takes up to {MAX_FRAME_PIXELS / 1e6:.0f}. Scale it down, e.g. "
                            "`ffmpeg -i IN -vf scale=1280:-2 OUT.mp4`")
    return capture


def frame_rate(capture: cv2.VideoCapture, fps: float) -> float:
    """The frame rate the source declares; `fps` when it declares none (some files, some cameras)."""
    return capture.get(cv2.CAP_PROP_FPS) or fps


def read_rate(capture: cv2.VideoCapture, fps: float) -> float:
    """Frames per second that sampled_frames yields: `fps`, or fewer when the source has fewer."""
    return min(fps, frame_rate(capture, fps))


def sampled_frames(capture: cv2.VideoCapture, fps: float, live: bool):
    """Yield (frame index, seconds into the stream, RGB frame) at most `fps` times a second of the stream.

    A file's time is its frame index over its frame rate (when it declares none, every frame is taken); a
    camera's is the clock. Skipped frames are grabbed but never decoded. Ends when no more frames come.
    """
    source_fps = frame_rate(capture, fps)
    started, due, index = time.monotonic(), 0.0, -1
    while capture.grab():
        index += 1
        seconds = time.monotonic() - started if live else index / source_fps
        if seconds < due - 1e-6:
            continue
        ok, bgr = capture.retrieve()
        if not ok:
            return
        # On schedule, the next slot; after a stall (a camera waiting on a slow model), half a slot from now.
        due = max(due, seconds - 0.5 / fps) + 1 / fps
        yield index, seconds, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def unread_frames(capture: cv2.VideoCapture) -> int:
    """How many of the frames a file declares were not reached: a damaged or cut file ends early."""
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return max(0, declared - int(capture.get(cv2.CAP_PROP_POS_FRAMES))) if declared > 0 else 0


def annotate(rgb: np.ndarray, hand, uses_hands: bool, reading: str, text: str) -> np.ndarray:
    """The frame with the hand skeleton (for a model that reads hands), the current reading and the text, in
    words that scale with the frame: a line is LINE_SHARE of its shorter side, on a phone's video as on 200 x 200."""
    canvas = drawing.draw_hand(rgb, hand) if uses_hands else rgb.copy()
    height, width = canvas.shape[:2]
    line = min(height, width) * LINE_SHARE
    scale = CAPITAL_SHARE * line / cv2.getTextSize("H", FONT, 1.0, 1)[0][1]
    thickness = max(1, round(scale * 2))
    margin = int(line / 3)
    band = int(2 * line + margin)
    canvas[height - band:] //= 3  # a dark band under the words, readable on any background
    for number, (words, colour) in enumerate(((reading, (255, 220, 0)), (text + "_", (255, 255, 255)))):
        while len(words) > 1 and cv2.getTextSize(words, FONT, scale, thickness)[0][0] > width - 2 * margin:
            words = words[1:]  # a text wider than the frame: its end, which is what was just spelled
        baseline = height - band + int(line * (number + 0.8))
        cv2.putText(canvas, words, (margin, baseline), FONT, scale, colour, thickness, cv2.LINE_AA)
    return canvas


@contextlib.contextmanager
def video_writer(path: Path, fps: float, width: int, height: int):
    """Yield a function that appends an RGB frame; the file appears complete, or not at all."""
    codec = WRITER_CODECS.get(path.suffix.lower())
    if codec is None:
        raise PipelineError(f"--out {path}: name a video ending in {' or '.join(WRITER_CODECS)}")
    with atomic_file(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
        if not writer.isOpened():
            raise PipelineError(f"--out {path}: OpenCV cannot write {codec} video here; try a name ending in "
                                f"{' or '.join(s for s in WRITER_CODECS if s != path.suffix.lower())}")
        try:
            yield lambda rgb: writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()


def spell(classifier, capture: cv2.VideoCapture, reader: StreamReader, fps: float, live: bool,
          out: Path | None = None, on_commit=lambda committed: None) -> int:
    """Read the capture to its end (or Ctrl-C) into `reader` (its speller holds the text); returns the number of
    frames read.

    on_commit is called with each sign as the speller takes it; out: also write the annotated frames there.
    """
    frames = 0
    with contextlib.ExitStack() as stack:
        write = None
        try:
            for index, seconds, rgb in sampled_frames(capture, fps, live):
                [analysis] = classifier.analyse([rgb], with_heatmaps=False, track=reader.track)
                reading = reader.feed(analysis, classifier.classes, index, seconds)
                if reading.committed is not None:
                    on_commit(reading.committed)
                if out is not None:
                    if write is None:  # the size of the frames themselves, whatever the source declared
                        height, width = rgb.shape[:2]
                        write = stack.enter_context(video_writer(out, read_rate(capture, fps), width, height))
                    write(annotate(rgb, analysis.hand, classifier.spec.uses_hands, reading.describe(),
                                   reader.speller.text))
                frames += 1
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a camera session ends: what was spelled so far is kept
    return frames
