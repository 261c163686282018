"""The demo page's server flooded with large images of every kind on both of its paths at once, from 20 clients and
again from 40, and the peak memory it took.

The clients post 40 large images to each path together, as the issue's reproductions did: photo mode
(serve.Demo.classify, which Streamlit calls on a thread per browser session: called here from the clients'
threads; Streamlit's own upload handling, which holds each upload's bytes, is left out) and the live frame
endpoint over HTTP (one page's session, with its secret and origin), each client on a connection of its own. The
images, in turn: to photo mode a flat 7000 x 7000 PNG (160 KB, 49 megapixels: about 1 GB decoded whole), a
49-megapixel JPEG, a flat 7000 x 7000 WebP, a 49-megapixel progressive JPEG and a 7000 x 7000 16-bit grey PNG; to
the live endpoint the same flat PNG and, at about the largest frame it takes, a 1920 x 1080 JPEG and progressive
JPEG, a 1449 x 1449 WebP and 16-bit grey PNG. Every request must be answered: a result, or a refusal that says why
(too large, too costly to decode, busy); a reset connection or an internal error counts as unanswered.

Each flood runs in a child process of its own (the default model loaded, then the peak RSS reset), so the peak is
the server's alone. Part of `make bench`; alone: python benchmarks/run.py --only flood (merged into results.json),
or python benchmarks/serving_flood.py [--model FILE] [--clients 20] (prints the figures).

Keys:
  flood_peak_rss_mib      peak RSS of the demo's server while 20 clients post 40 large images (49 megapixels) to
                          photo mode and 40 to the live frame endpoint at once (the served variant's model)
                          (flood_rss_before_mib: RSS before the flood; flood_seconds: how long it took)
  flood_unanswered        requests that got neither a result nor a refusal saying why, of flood_requests;
                          flood_outcomes: how each was answered; flood_images: the images' sizes in bytes
  flood_40_*              the same flood from 40 clients (flood_40_peak_rss_mib, flood_40_unanswered, ...)
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

CLIENTS = (20, 40)  # the flood's keys for 20 clients are flood_*, for 40 flood_40_*
PER_PATH = 40
PAGE_PORT = 8501  # the page's port the endpoint answers: its origin is sent as the page's component sends it
PER_FLOOD = ("peak_rss_mib", "rss_before_mib", "requests", "unanswered", "seconds", "outcomes")
KEYS = (*(f"flood_{key}" for key in PER_FLOOD), *(f"flood_40_{key}" for key in PER_FLOOD), "flood_images")
ABOUT = {"flood": "benchmarks/serving_flood.py in a child process per flood, the served variant's model: peak RSS "
                  "(VmHWM, reset after the model is loaded) while 20 (flood_*) or 40 (flood_40_*) client threads send "
                  "40 images to Demo.classify (7000 x 7000 flat PNG, WebP and 16-bit grey PNG, 49-megapixel JPEG and "
                  "progressive JPEG) and 40 to the live frame endpoint over HTTP (the same PNG, 1920 x 1080 JPEG and "
                  "progressive JPEG, 1449 x 1449 WebP and 16-bit grey PNG); flood_rss_before_mib: RSS before the flood"}


def encoded(image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def flat(side: int, kind: str) -> bytes:
    """A one-colour image: small on the wire, side x side x 3 bytes or more decoded."""
    from PIL import Image

    return encoded(Image.new("RGB", (side, side), (10, 10, 10)), kind, **({"optimize": True} if kind == "PNG" else {}))


def grey16_png(side: int) -> bytes:
    """A 16-bit grey PNG with a smooth ramp: Pillow reads it as mode I;16."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 65535, side, dtype=np.float32).astype(np.uint16)
    return encoded(Image.fromarray(np.broadcast_to(ramp, (side, side)).copy()), "PNG", compress_level=9)


def photo(width: int, height: int):
    """A smooth photo with some grain: it compresses to a realistic size for its pixels."""
    import numpy as np
    from PIL import Image

    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    grain = np.random.default_rng(0).normal(0, 6, (height, width)).astype(np.float32)
    channels = [rows + grain, columns + grain, (rows + columns) / 2 + grain]  # each broadcast to height x width
    return Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))


def photo_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    return encoded(photo(width, height), "JPEG", quality=85, progressive=progressive)


def flood_images() -> tuple:
    """({name: bytes} of the images posted, the PER_PATH photos, the PER_PATH frames), each kind in turn."""
    made = {"flat_png": flat(7000, "PNG"), "photo_jpeg": photo_jpeg(7000, 7000), "flat_webp": flat(7000, "WEBP"),
            "photo_progressive_jpeg": photo_jpeg(7000, 7000, progressive=True), "grey16_png": grey16_png(7000),
            "frame_jpeg": photo_jpeg(1920, 1080), "frame_progressive_jpeg": photo_jpeg(1920, 1080, progressive=True),
            "frame_webp": encoded(photo(1449, 1449), "WEBP", quality=80), "frame_grey16_png": grey16_png(1449)}
    photos = ["flat_png", "photo_jpeg", "flat_webp", "photo_progressive_jpeg", "grey16_png"]
    frames = ["flat_png", "frame_jpeg", "frame_webp", "frame_progressive_jpeg", "frame_grey16_png"]
    return (made, [made[photos[i % len(photos)]] for i in range(PER_PATH)],
            [made[frames[i % len(frames)]] for i in range(PER_PATH)])


def flood(model_file: Path, clients: int) -> dict:
    """Serve `model_file` in this process, flood both paths from `clients` threads, and return the figures."""
    from asl_pipeline import live, serve, uploads
    from asl_pipeline.inference import load_classifier

    made, photos, frames = flood_images()
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
        elif status in (400, 413, 503) and answer.get("error"):  # too large, too costly to decode, busy
            count("frame refused: busy" if status == 503 else "frame refused")
        else:
            count(f"frame unanswered (HTTP {status})")

    jobs = [(classify, data) for data in photos] + [(frame, data) for data in frames]
    jobs = [job for pair in zip(jobs[:PER_PATH], jobs[PER_PATH:]) for job in pair]  # both paths at once
    before = rss_mib("VmRSS")
    if reset_peak_rss() is None:  # the peak from here: the flood's, not the model load's
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): the flood needs Linux")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda job: job[0](job[1]), jobs))
    seconds = time.perf_counter() - start
    peak = rss_mib("VmHWM")
    server.close()
    unanswered = sum(n for kind, n in outcomes.items() if "unanswered" in kind)
    prefix = "flood_" if clients == CLIENTS[0] else f"flood_{clients}_"
    figures = {"peak_rss_mib": peak, "rss_before_mib": before, "requests": len(jobs), "unanswered": unanswered,
               "seconds": seconds, "outcomes": dict(sorted(outcomes.items()))}
    return {**{prefix + key: value for key, value in figures.items()},
            "flood_images": {f"{name}_bytes": len(data) for name, data in made.items()}}


def measure(model_file: Path) -> dict:
    """flood() from each number of CLIENTS, each in a child process: its peak memory is the server's alone."""
    figures = {}
    for clients in CLIENTS:
        result = subprocess.run([sys.executable, __file__, "--model", str(model_file), "--clients", str(clients)],
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"serving flood ({clients} clients) failed:\n{result.stderr[-3000:]}")
        figures |= json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="default: the served variant's model (params.yaml serve.model)")
    parser.add_argument("--clients", type=int, default=CLIENTS[0], choices=CLIENTS)
    args = parser.parse_args()
    from asl_pipeline import cli

    print(json.dumps(flood(args.model or cli.served_model_file(REPO), args.clients)))


if __name__ == "__main__":
    main()
