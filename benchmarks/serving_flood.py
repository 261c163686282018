"""The demo page's server flooded with large images on both of its paths at once, and the peak memory it took.

20 clients post 40 large images to each path together, as the issue's reproduction did: photo mode
(serve.Demo.classify, which Streamlit calls on a thread per browser session: called here from the clients'
threads; Streamlit's own upload handling, which holds each upload's bytes, is left out) and the live frame
endpoint over HTTP (one page's session, with its secret and origin). The images: a flat 7000 x 7000 PNG (160 KB,
49 megapixels: about 1 GB decoded whole) to both paths; a 49-megapixel JPEG to photo mode; a 1920 x 1080 JPEG,
about the largest frame the endpoint takes, to the live one. Every request must be answered: a result, or a
refusal that says why (too large, busy); a reset connection or an internal error counts as unanswered.

Runs in a child process of its own (the default model loaded, then the peak RSS reset), so the peak is the
server's alone. Part of `make bench`; alone: python benchmarks/run.py --only flood (merged into results.json),
or python benchmarks/serving_flood.py [--model FILE] (prints the figures).

Keys:
  flood_peak_rss_mib      peak RSS of the demo's server while 20 clients post 40 large images (49 megapixels) to
                          photo mode and 40 to the live frame endpoint at once (the served variant's model)
                          (flood_rss_before_mib: RSS before the flood; flood_seconds: how long it took)
  flood_unanswered        requests that got neither a result nor a refusal saying why, of flood_requests;
                          flood_outcomes: how each was answered; flood_images: the images' sizes in bytes
"""
import argparse
import collections
import concurrent.futures
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, reset_peak_rss, rss_mib  # first: it puts this checkout on sys.path

CLIENTS = 20
PER_PATH = 40
PAGE_PORT = 8501  # the page's port the endpoint answers: its origin is sent as the page's component sends it
KEYS = ("flood_peak_rss_mib", "flood_rss_before_mib", "flood_requests", "flood_unanswered", "flood_seconds",
        "flood_outcomes", "flood_images")
ABOUT = {"flood": "benchmarks/serving_flood.py in a child process, the served variant's model: peak RSS (VmHWM, "
                  "reset after the model is loaded) while 20 client threads send 40 images to Demo.classify (7000 x "
                  "7000 flat PNG and 49-megapixel JPEG) and 40 to the live frame endpoint over HTTP (the same PNG and "
                  "a 1920 x 1080 JPEG); flood_rss_before_mib: RSS before the flood"}


def flat_png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 10, 10)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def photo_jpeg(width: int, height: int) -> bytes:
    """A smooth photo with some grain: a JPEG of realistic size for its pixels."""
    import numpy as np
    from PIL import Image

    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    grain = np.random.default_rng(0).normal(0, 6, (height, width)).astype(np.float32)
    channels = [rows + grain, columns + grain, (rows + columns) / 2 + grain]  # each broadcast to height x width
    rgb = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def flood(model_file: Path) -> dict:
    """Serve `model_file` in this process, flood both paths, and return the figures."""
    from asl_pipeline import live, serve, uploads
    from asl_pipeline.inference import load_classifier

    flat = flat_png(7000)
    photos = [flat, photo_jpeg(7000, 7000)] * (PER_PATH // 2)
    frames = [flat, photo_jpeg(1920, 1080)] * (PER_PATH // 2)
    assert all(len(data) <= uploads.MAX_UPLOAD_BYTES for data in photos)

    serve.return_freed_memory()  # as serve() starts the demo
    demo = serve.Demo(load_classifier(model_file), Path(tempfile.mkdtemp(prefix="flood-teach-")))
    demo.on_model_thread(serve.traced, demo.classifier)
    pages = live.PageSecrets(os.urandom(32))
    server = live.LiveServer(live.LiveSessions(demo, pages), "127.0.0.1", 0, PAGE_PORT)
    page = {"Origin": f"http://127.0.0.1:{PAGE_PORT}", live.PAGE_HEADER: pages.issue()}

    def post(path: str, body: bytes | None = None) -> tuple:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            connection.request("POST", path, body=body, headers={**page, "Content-Type": "image/jpeg"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    session = post("/session")[1]["session"]
    outcomes, counting = collections.Counter(), threading.Lock()

    def count(kind: str) -> None:
        with counting:
            outcomes[kind] += 1

    def classify(data: bytes) -> None:
        try:
            answer = demo.classify(data)
        except Exception as error:  # an answer the page could not show
            count(f"photo unanswered ({type(error).__name__})")
            return
        if isinstance(answer, serve.Rejection):
            count("photo refused: busy" if "busy" in answer.message else "photo refused")
        else:
            count("photo read")

    def frame(data: bytes) -> None:
        try:
            status, answer = post(f"/frame?session={session}", data)
        except (OSError, http.client.HTTPException, ValueError) as error:  # reset, cut short, not JSON
            count(f"frame unanswered ({type(error).__name__})")
            return
        if status == 200:
            count("frame read")
        elif status in (400, 413, 503) and answer.get("error"):
            count("frame refused: busy" if status == 503 else "frame refused")
        else:
            count(f"frame unanswered (HTTP {status})")

    jobs = [(classify, data) for data in photos] + [(frame, data) for data in frames]
    jobs = [job for pair in zip(jobs[:PER_PATH], jobs[PER_PATH:]) for job in pair]  # both paths at once
    before = rss_mib("VmRSS")
    if reset_peak_rss() is None:  # the peak from here: the flood's, not the model load's
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): the flood needs Linux")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as clients:
        list(clients.map(lambda job: job[0](job[1]), jobs))
    seconds = time.perf_counter() - start
    peak = rss_mib("VmHWM")
    server.close()
    unanswered = sum(n for kind, n in outcomes.items() if "unanswered" in kind)
    return {"flood_peak_rss_mib": peak, "flood_rss_before_mib": before, "flood_requests": len(jobs),
            "flood_unanswered": unanswered, "flood_seconds": seconds,
            "flood_outcomes": dict(sorted(outcomes.items())),
            "flood_images": {"flat_png_bytes": len(flat), "photo_jpeg_bytes": len(photos[1]),
                             "frame_jpeg_bytes": len(frames[1])}}


def measure(model_file: Path) -> dict:
    """flood() in a child process: its peak memory is the server's alone."""
    result = subprocess.run([sys.executable, __file__, "--model", str(model_file)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"serving flood failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="default: the served variant's model (params.yaml serve.model)")
    args = parser.parse_args()
    from asl_pipeline import cli

    print(json.dumps(flood(args.model or cli.served_model_file(REPO))))


if __name__ == "__main__":
    main()
