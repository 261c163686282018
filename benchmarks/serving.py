"""Serving speed: one photo's prediction, `spell` on a video, and the demo page's live endpoint, each warm.
predict() trains and saves the models (svm heads on the throughput part's cached features) that
spell_fps() and live_page_fps() then load, so it runs first. The flood of the demo's server is
benchmarks/serving_flood.py.

Keys:
  predict_ms_per_image    Classifier.analyse([photo]) warm, default model (hand_landmarks + svm head)
                          (predict_ms_per_image_fused: backbone + hand_landmarks + svm, no heatmap)
  predict_heatmap_ms_per_image   the same with Grad-CAM, fused model (backbone + hand_landmarks + svm)
  predict_ms_per_image_repo_model   predict_ms_per_image of the served variant's model that `dvc repro`
                          trained here (models/<serve.model>/model.keras: models/reader/), when there is one
  spell_fps               frames per second of `spell` (video.spell, hand tracked) on an MJPG video of the photos,
                          default model (spell_frames: the video's frames)
  live_page_fps           frames per second through the demo page's live endpoint (asl_pipeline/live.py): the
                          same photos as JPEGs posted over HTTP one at a time, each answer awaited, default model
                          (live_page_frames: the frames posted)
"""
import dataclasses
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from common import BUNDLE, REPO, TRAIN_DIR, Bench, log, quiet, served_model, variant_params  # first: sys.path
import serving_flood  # benchmarks/serving_flood.py: the live page's port
from bench_variants import LANDMARKS

KEYS = ("predict_ms_per_image", "predict_ms_per_image_fused", "predict_heatmap_ms_per_image",
        "predict_ms_per_image_repo_model", "spell_fps", "spell_frames", "live_page_fps", "live_page_frames")
ABOUT = {"predict_ms_per_image": "default model: hand_landmarks + svm head, Classifier.analyse([photo]), warm, median",
         "predict_ms_per_image_fused": "backbone + hand_landmarks + svm head, no heatmap",
         "predict_heatmap_ms_per_image": "backbone + hand_landmarks + svm head, with Grad-CAM",
         "spell_fps": "video.spell (decode, hand landmarks, svm head, speller) on a 200 x 200 MJPG video of "
                      "the --images photos, every frame read; default model, warm",
         "live_page_fps": "the demo page's live endpoint over HTTP on 127.0.0.1, one JPEG (quality 80, "
                          "200 x 200) at a time, each answer awaited; default model, warm"}


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
