"""`python -m asl_pipeline serve`: the request handler on bytes, and the page in a real headless browser."""
import concurrent.futures
import contextlib
import datetime
import io
import json
import os
import queue
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from asl_pipeline import cli, images, serve, teach, uploads
from asl_pipeline.config import HandsParams, ModelFiles
from asl_pipeline.featurizers import FeatureSpec
from asl_pipeline.inference import load_classifier
from asl_pipeline.model import assemble, build_head, save_model

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"  # where params.yaml's hands.local_file points
HAND_BUNDLE = SHARED / "models" / "mediapipe-hands" / "hand_landmarker.task"
SAMPLES = SHARED / "data" / "asl-sample" / "asl_alphabet_test"
CLASSES = ["A", "B", "C"]
IMAGE_SIZE = 32
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# ASL_SCREENSHOTS=docs: the browser tests serve the pipeline's own model and write demo.png and teach.png there.
SCREENSHOTS = os.environ.get("ASL_SCREENSHOTS")
TEACH_NAME = re.compile(r"teach_\d{8}T\d{6}Z_[0-9a-f]{8}\.jpg")

needs_hand_model = pytest.mark.skipif(not (HAND_BUNDLE.is_file() and SAMPLES.is_dir()),
                                      reason=f"shared hand model or ASL sample photos not found under {SHARED}")


def tiny_model(folder: Path, featurizers: tuple) -> Path:
    """A model.keras with its companions, shaped like the pipeline's: a small conv backbone and/or the
    hand-landmark vector into a dense head, random weights."""
    hands = HandsParams(source="local", local_file=str(HAND_BUNDLE), min_detection_confidence=0.1,
                        min_presence_confidence=0.1, border=0.25, fallback_min_presence=0.5, mirror_left=False,
                        features=("keypoints", "distances", "angles"))
    spec = FeatureSpec(featurizers, "resnet50", IMAGE_SIZE, False, hands)
    keras.utils.set_random_seed(0)
    backbone, width = None, 0
    if spec.uses_backbone:
        pixels = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
        conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="last_conv")(pixels)
        backbone = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(conv), name="tiny_backbone")
        width += 8
    if "hand_landmarks" in featurizers:
        width += spec.hand_dim
    network = assemble(spec, backbone, build_head(width, len(CLASSES), hidden_units=0, dropout=0.0))
    folder.mkdir(parents=True, exist_ok=True)
    model_file = folder / "model.keras"
    save_model(network, CLASSES, spec, model_file, folder / "labels.json", folder / "featurizers.json")
    if spec.uses_hands:
        shutil.copy(HAND_BUNDLE, folder / "hand_landmarker.task")
    return model_file


def encoded(rgb: np.ndarray, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, kind)
    return buffer.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def backbone_demo(tmp_path_factory):
    return serve.Demo(load_classifier(tiny_model(tmp_path_factory.mktemp("backbone"), ("backbone",))))


@pytest.fixture(scope="module")
def hands_model(tmp_path_factory):
    if not HAND_BUNDLE.is_file():
        pytest.skip(f"shared hand model not found at {HAND_BUNDLE}")
    return tiny_model(tmp_path_factory.mktemp("hands"), ("backbone", "hand_landmarks"))


def test_photo_gives_label_bars_and_heatmap(backbone_demo):
    photo = noise(45, 61)
    answer = backbone_demo.classify(encoded(photo))
    assert isinstance(answer, serve.Prediction)
    probabilities = backbone_demo.classifier.analyse([photo])[0].probabilities
    assert answer.label == CLASSES[int(np.argmax(probabilities))] == answer.ranked[0][0]
    assert [label for label, _ in answer.ranked] == [CLASSES[i] for i in np.argsort(-probabilities)]
    np.testing.assert_allclose([p for _, p in answer.ranked], np.sort(probabilities)[::-1], rtol=1e-5)
    assert answer.heatmap.shape == (45, 61, 3) and answer.heatmap.dtype == np.uint8
    assert answer.skeleton is None and answer.hand_found is None and answer.warning is None


def test_large_photo_is_shown_scaled_down(backbone_demo):
    answer = backbone_demo.classify(encoded(noise(1000, 1500), "JPEG"))
    assert answer.heatmap.shape == (341, serve.DISPLAY_SIDE, 3)


# Uploads the page refuses, and a word of the message that says why.
BAD_UPLOADS = [
    (b"", "empty"),
    (b"hello, this is a text file", "not an image"),
    (encoded(noise(40, 40), "JPEG")[:200], "not an image"),  # truncated
    (b"\xff" * (uploads.MAX_UPLOAD_BYTES + 1), f"up to {serve.MAX_UPLOAD_MB} MB"),
]


@pytest.mark.parametrize("data, words", BAD_UPLOADS)
def test_bad_upload_gets_a_message_and_the_demo_keeps_serving(backbone_demo, data, words):
    answer = backbone_demo.classify(data)
    assert isinstance(answer, serve.Rejection) and words in answer.message
    assert isinstance(backbone_demo.classify(encoded(noise(20, 20))), serve.Prediction)


def test_too_many_pixels_is_rejected(backbone_demo, monkeypatch):
    monkeypatch.setattr(uploads, "PHOTO", uploads.Limits("photo", uploads.MAX_UPLOAD_MB, 30 * 30))
    answer = backbone_demo.classify(encoded(noise(31, 30)))
    assert isinstance(answer, serve.Rejection) and "31 pixels" in answer.message


def test_a_large_photo_is_read_scaled_down_to_the_read_side(backbone_demo, monkeypatch):
    read = []
    monkeypatch.setattr(backbone_demo, "analyse", lambda photo, with_heatmaps=True: read.append(photo.shape))
    monkeypatch.setattr(serve, "prediction", lambda *args: None)
    for kind in ("JPEG", "PNG"):
        backbone_demo.classify(encoded(gradient(3000, 4500), kind))
    assert read == [(1365, uploads.READ_SIDE, 3)] * 2


def counting_calls(function):
    """(function wrapped, its counts): calls, and the most running at once. Each call waits 50 ms first, long
    enough for the other threads to pile up behind it."""
    counts, counting = {"calls": 0, "running": 0, "most": 0}, threading.Lock()

    def counted(*args, **kwargs):
        with counting:
            counts["calls"] += 1
            counts["running"] += 1
            counts["most"] = max(counts["most"], counts["running"])
        time.sleep(0.05)
        try:
            return function(*args, **kwargs)
        finally:
            with counting:
                counts["running"] -= 1

    return counted, counts


def test_no_more_photos_are_read_at_once_than_the_work_slots(backbone_demo, monkeypatch):
    counted, counts = counting_calls(images.decode_rgb)
    monkeypatch.setattr(images, "decode_rgb", counted)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(backbone_demo.classify, [encoded(noise(30, 40, seed=i)) for i in range(8)]))
    assert all(isinstance(answer, serve.Prediction) for answer in answers)
    assert counts["calls"] == 8 and counts["most"] == uploads.WORK_SLOTS


def test_a_photo_that_waits_too_long_for_a_slot_is_told_the_demo_is_busy(backbone_demo, monkeypatch):
    monkeypatch.setattr(uploads, "BUSY_SECONDS", 0.1)
    with contextlib.ExitStack() as taken:
        for _ in range(uploads.WORK_SLOTS):
            taken.enter_context(uploads.work_slot())
        answer = backbone_demo.classify(encoded(noise(20, 20)))
    assert isinstance(answer, serve.Rejection) and "busy" in answer.message and "try again" in answer.message
    assert isinstance(backbone_demo.classify(encoded(noise(20, 20))), serve.Prediction)


def test_photos_decoded_at_once_share_one_decode_budget(backbone_demo, monkeypatch):
    monkeypatch.setattr(uploads, "BUSY_SECONDS", 0.1)
    photo = encoded(noise(200, 300))
    cost = images.read_header(photo, "photo", uploads.READ_SIDE).decode_bytes
    budget = uploads.DECODE_BUDGET_MB * 1024 * 1024
    with uploads.work_slot(budget - cost + 1):  # a large photo being read: a free slot, not room for this one
        answer = backbone_demo.classify(photo)
        assert isinstance(answer, serve.Rejection) and "busy" in answer.message
    with uploads.work_slot(budget - cost):  # room for it
        assert isinstance(backbone_demo.classify(photo), serve.Prediction)


def peak_rss_mib() -> float:
    return int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmHWM:")).split()[1]) / 1024


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, at 89 megapixels
def test_a_huge_flat_png_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, "PNG", optimize=True)  # 18 MB in memory for a moment
    data = buffer.getvalue()
    assert len(data) < 100_000  # small on disk: the upload limit does not stop it; 430 MB decoded as RGB
    monkeypatch.setattr(images, "decode_rgb", lambda *args, **kwargs: pytest.fail("decoded a refused photo"))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the peak RSS count from here
    except OSError:
        pytest.skip("the peak memory of this process cannot be reset here (needs Linux /proc)")
    before = peak_rss_mib()
    with pytest.raises(serve.BadUpload, match="12000 x 12000 pixels"):
        uploads.read_photo(data)
    assert peak_rss_mib() - before < 50  # decoding it peaks 1.6 GB higher here


@pytest.mark.parametrize("kind, options", [("WEBP", {}), ("PNG", {})])
def test_a_photo_over_the_decode_budget_is_refused_from_its_header(backbone_demo, monkeypatch, kind, options):
    monkeypatch.setattr(uploads, "DECODE_BUDGET_MB", 1)
    monkeypatch.setattr(images, "decode_rgb", lambda *args, **kwargs: pytest.fail("decoded a refused photo"))
    answer = backbone_demo.classify(encoded(gradient(400, 400), kind))  # 0.16 megapixels, far within the limits
    assert isinstance(answer, serve.Rejection)
    assert f"400 x 400 {kind}: reading it would take" in answer.message and "up to 1 MB" in answer.message
    assert "Save it as a JPEG" in answer.message


@pytest.mark.parametrize("kind", ["flat WebP", "PNG cut short"])
def test_the_issues_small_files_of_49_megapixels_are_refused_before_decoding(monkeypatch, kind):
    # An 87 KB flat 7000 x 7000 WebP took 750 MB (Pillow's opener makes libwebp's decoder and its canvases); a
    # 101-byte PNG declaring 7000 x 7000 was decoded until it ran out.
    if kind == "flat WebP":
        data = encoded(np.full((7000, 7000, 3), 10, np.uint8), "WEBP")
    else:
        data = encoded(np.full((7000, 7000, 3), 10, np.uint8), "PNG")[:101]
    monkeypatch.setattr("PIL.WebPImagePlugin._webp.WebPAnimDecoder", lambda *args: pytest.fail("WebP decoder made"))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(serve.BadUpload, match="7000 x 7000"):
        uploads.read_photo(data)


def test_eight_simultaneous_requests_share_one_model_one_call_at_a_time(backbone_demo, monkeypatch):
    photos = [encoded(noise(30 + i, 40, seed=i)) for i in range(8)]
    alone = [backbone_demo.classify(photo) for photo in photos]
    counted, counts = counting_calls(backbone_demo.classifier.analyse)
    monkeypatch.setattr(backbone_demo.classifier, "analyse", counted)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(backbone_demo.classify, photos))
    assert counts["calls"] == 8 and counts["most"] == 1
    for one, other in zip(alone, together):
        assert one.label == other.label
        np.testing.assert_allclose([p for _, p in one.ranked], [p for _, p in other.ranked], rtol=1e-5)


@needs_hand_model
def test_hand_photo_shows_skeleton_and_heatmap(hands_model):
    demo = serve.Demo(load_classifier(hands_model))
    answer = demo.classify((SAMPLES / "A_test.jpg").read_bytes())
    assert answer.hand_found is True and answer.warning is None and answer.label in CLASSES
    assert answer.skeleton.shape == answer.heatmap.shape == (200, 200, 3)


@needs_hand_model
def test_photo_without_hand_says_so(hands_model):
    demo = serve.Demo(load_classifier(hands_model))
    answer = demo.classify(encoded(np.full((120, 160, 3), 128, np.uint8)))
    assert answer.hand_found is False and "No hand found" in answer.warning
    assert answer.label in CLASSES and answer.skeleton.shape == (120, 160, 3)


def gradient(height: int, width: int) -> np.ndarray:
    """A smooth photo, which JPEG keeps close to the original (noise it would not)."""
    rows = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return np.stack(np.broadcast_arrays(rows, columns, rows // 2 + columns // 2), axis=-1).astype(np.uint8)


def files_under(folder: Path) -> list:
    return sorted(path for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def teach_demo(backbone_demo, tmp_path):
    return serve.Demo(backbone_demo.classifier, tmp_path / "my-hand")


def test_teach_saves_a_new_jpeg_in_the_letter_folder_and_reads_it(teach_demo):
    photo = gradient(48, 64)
    answer = teach_demo.teach([("my B.png", encoded(photo, "PNG"))], "B")
    assert isinstance(answer, serve.Taught) and answer.label == "B"
    [(name, path, reading)] = answer.saved
    assert name == "my B.png" and path.parent == teach_demo.teach_dir / "B" and TEACH_NAME.fullmatch(path.name)
    assert files_under(teach_demo.teach_dir) == [path]
    with Image.open(path) as saved:
        assert saved.format == "JPEG" and saved.size == (64, 48) and not saved.info.get("exif")
    pixels = images.load_rgb(path)
    assert np.abs(pixels.astype(int) - photo).mean() < 3
    expected = teach_demo.classify(encoded(pixels))  # the saved JPEG's pixels, the ones training reads
    assert reading.label == expected.label
    np.testing.assert_allclose([p for _, p in reading.ranked], [p for _, p in expected.ranked], rtol=1e-5)
    assert teach_demo.teach_counts() == {"A": 0, "B": 1, "C": 0}


def jpeg_with_metadata(rgb: np.ndarray, orientation: int = 1, **options) -> bytes:
    """A JPEG as a phone writes one: EXIF with the maker and GPS position, a comment."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = orientation
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPS latitude
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", exif=exif, comment=b"at home", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation, options", [(1, {"quality": 90}), (6, {"quality": 90}),
                                                  (1, {"quality": 95, "progressive": True})])
def test_teach_keeps_an_uploaded_jpegs_own_pixels_without_its_metadata(teach_demo, orientation, options):
    data = jpeg_with_metadata(noise(60, 80), orientation, **options)
    [(_, path, _)] = teach_demo.teach([("phone.jpg", data + b"trailing bytes")], "A").saved
    stored = path.read_bytes()
    assert len(stored) < len(data)  # never inflated by re-encoding
    for private in (b"PhoneMaker", b"at home", b"trailing"):
        assert private not in stored
    with Image.open(path) as saved:
        assert saved.getexif().get(0x0112, 1) == orientation and 0x8825 not in saved.getexif()
    np.testing.assert_array_equal(images.load_rgb(path), images.decode_rgb(data))  # the same pixels, same way up


def test_teach_does_not_inflate_a_noise_jpeg(teach_demo):
    data = encoded(noise(900, 1200), "JPEG")  # noise: a re-encoding at quality 95 would be far larger
    [(_, path, _)] = teach_demo.teach([("noise.jpg", data)], "C").saved
    assert path.stat().st_size <= len(data)


def test_saved_photos_have_the_file_mode_of_other_files(teach_demo, tmp_path):
    [(_, path, _)] = teach_demo.teach([("a.png", encoded(gradient(20, 20)))], "A").saved
    (tmp_path / "other.jpg").write_bytes(b"")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "other.jpg").stat().st_mode)


@pytest.mark.parametrize("label", ["D", "b", "", "../x", "A/../../b", "/tmp/x", ".."])
def test_teach_label_must_be_one_of_the_models_classes(teach_demo, tmp_path, label):
    (teach_demo.teach_dir / "D").mkdir(parents=True)  # a folder on disk does not make a class
    answer = teach_demo.teach([("a.png", encoded(gradient(20, 20)))], label)
    assert isinstance(answer, serve.Rejection) and "not one of the model's classes" in answer.message
    with pytest.raises(serve.BadUpload, match="not one of the model's classes"):
        teach.save([b"bytes"], label, CLASSES, teach_demo.teach_dir)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("data, words", BAD_UPLOADS)
def test_teach_refuses_what_classify_refuses_and_saves_nothing(teach_demo, data, words):
    answer = teach_demo.teach([("bad.jpg", data)], "A")
    assert isinstance(answer, serve.Rejection) and words in answer.message and "bad.jpg" in answer.message
    assert files_under(teach_demo.teach_dir.parent) == []


def test_teach_refuses_too_many_pixels(teach_demo, monkeypatch):
    monkeypatch.setattr(uploads, "PHOTO", uploads.Limits("photo", uploads.MAX_UPLOAD_MB, 30 * 30))
    answer = teach_demo.teach([("big.png", encoded(gradient(31, 30)))], "A")
    assert isinstance(answer, serve.Rejection) and "31 pixels" in answer.message
    assert files_under(teach_demo.teach_dir.parent) == []


def test_several_photos_are_saved_all_or_none(teach_demo):
    good = [(f"good{i}.png", encoded(gradient(20 + i, 20))) for i in range(3)]
    answer = teach_demo.teach(good[:2] + [("broken.jpg", b"not a photo")] + good[2:], "A")
    assert isinstance(answer, serve.Rejection)
    assert "Nothing was saved" in answer.message and "1 of the 4 photos" in answer.message
    assert "broken.jpg" in answer.message and "good0" not in answer.message
    assert "Pick the photos again without it and press Save" in answer.message  # the page's picker is emptied
    assert files_under(teach_demo.teach_dir.parent) == []
    answer = teach_demo.teach(good, "A")
    assert [name for name, _, _ in answer.saved] == [name for name, _ in good]
    assert len(files_under(teach_demo.teach_dir)) == 3 and teach_demo.teach_counts()["A"] == 3


def test_the_same_photo_twice_in_one_save_is_saved_once(teach_demo):
    photo = encoded(gradient(30, 40))
    answer = teach_demo.teach([("mine.png", photo), ("other.png", encoded(gradient(31, 40))), ("mine (1).png", photo)],
                              "C")
    assert [name for name, _, _ in answer.saved] == ["mine.png", "other.png"]
    assert answer.duplicates == [("mine (1).png", "mine.png")]
    assert len(files_under(teach_demo.teach_dir)) == 2


class Upload:
    """What the page's picker hands over for one photo: a name, an id, the bytes."""

    def __init__(self, name: str, data: bytes):
        self.name, self.file_id, self.data = name, f"id-{name}", data

    def getvalue(self) -> bytes:
        return self.data


def test_save_once_saves_a_photo_once_however_often_save_is_pressed(teach_demo):
    record, given_back = serve.TeachRecord(), []
    picked = [Upload("a.png", encoded(gradient(20, 20)))]
    serve.save_once(teach_demo, record, picked, "A", given_back.extend)
    assert isinstance(record.outcome, serve.Taught) and record.saves == 1 and given_back == picked
    # The second click of a double click: its rerun draws the new, empty picker.
    serve.save_once(teach_demo, record, [], "A", given_back.extend)
    assert "Nothing new to save" in record.note and isinstance(record.outcome, serve.Taught)
    assert len(files_under(teach_demo.teach_dir)) == 1 and record.saves == 1
    # Refused photos are given back too, and the message says to pick the others again.
    refused = [Upload("b.png", encoded(gradient(20, 21))), Upload("notes.jpg", b"not a photo")]
    serve.save_once(teach_demo, record, refused, "A", given_back.extend)
    assert isinstance(record.outcome, serve.Rejection) and "Pick the photos again without it" in record.outcome.message
    assert given_back == picked + refused and record.saves == 2 and record.note is None


def test_nothing_to_save_on_a_first_press_says_so(teach_demo):
    record = serve.TeachRecord()
    serve.save_once(teach_demo, record, [], "A", lambda uploads: pytest.fail("nothing to give back"))
    assert "Nothing to save yet" in record.outcome.message


def test_streamlit_takes_uploads_up_to_the_pages_own_limit_and_keeps_its_protections():
    options = serve.streamlit_options("127.0.0.1", 8501)
    assert options["server.maxUploadSize"] == serve.MAX_UPLOAD_MB  # the uploader says what the page says
    assert options["server.enableCORS"] and options["server.enableXsrfProtection"]
    assert options["server.allowedHosts"] == ["127.0.0.1", "::1", "localhost"]
    assert serve.streamlit_options("0.0.0.0", 8501)["server.allowedHosts"] == []


def test_nothing_to_save_says_so(teach_demo):
    answer = teach_demo.teach([], "A")
    assert isinstance(answer, serve.Rejection) and "Nothing to save yet" in answer.message


def test_a_save_over_its_limit_saves_nothing(teach_demo, monkeypatch):
    monkeypatch.setattr(teach, "SAVE_LIMIT_MB", 0.01)  # 10 KB
    photos = [(f"n{i}.jpg", encoded(noise(40, 60, seed=i), "JPEG")) for i in range(5)]  # 3-4 KB each
    answer = teach_demo.teach(photos, "B")
    assert isinstance(answer, serve.Rejection) and "one save takes up to" in answer.message
    assert files_under(teach_demo.teach_dir.parent) == []
    assert isinstance(teach_demo.teach(photos[:2], "B"), serve.Taught)


def test_a_full_teach_folder_saves_nothing_and_says_what_to_do(teach_demo, monkeypatch):
    monkeypatch.setattr(teach, "FOLDER_LIMIT_MB", 0.05)  # 50 KB
    (teach_demo.teach_dir / "A").mkdir(parents=True)
    (teach_demo.teach_dir / "A" / "dropped-in.jpg").write_bytes(bytes(50_000))
    answer = teach_demo.teach([("n.jpg", encoded(noise(60, 80), "JPEG"))], "B")
    assert isinstance(answer, serve.Rejection)
    assert str(teach_demo.teach_dir) in answer.message and "--teach-dir" in answer.message
    assert files_under(teach_demo.teach_dir / "B") == []


def test_two_photos_in_the_same_second_get_distinct_names(tmp_path):
    moment = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    first, second = teach.file_name(moment), teach.file_name(moment)
    assert first != second and first.startswith("teach_20250102T030405Z_") and TEACH_NAME.fullmatch(second)
    saved = teach.save([b"one", b"two"], "C", CLASSES, tmp_path)
    assert len(set(saved)) == 2 and files_under(tmp_path) == sorted(saved)


def test_failed_save_leaves_no_partial_file(teach_demo, monkeypatch):
    write_bytes, written = Path.write_bytes, []

    def second_fails(path, data):
        if written:
            Path(path).write_text("half a JPEG")
            raise OSError(28, "No space left on device")
        written.append(path)
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", second_fails)
    answer = teach_demo.teach([("one.png", encoded(gradient(20, 20))), ("two.png", encoded(gradient(21, 20)))], "A")
    assert isinstance(answer, serve.Rejection) and written
    assert "No space left on device" in answer.message and "--teach-dir" in answer.message
    assert files_under(teach_demo.teach_dir) == []  # hidden temporaries included, the first photo's too


def test_a_killed_saves_temporaries_are_removed_at_start_up(backbone_demo, tmp_path):
    folder = tmp_path / "my-hand"
    (folder / "A").mkdir(parents=True)
    stale = folder / "A" / ".teach_20250102T030405Z_0a1b2c3d.jpg.tmp-9f8e7d6c.jpg"  # SIGKILL mid-write
    stale.write_bytes(b"\xff\xd8 half")
    photo, notes = folder / "A" / "photo.jpg", folder / "notes.tmp-1"
    photo.write_bytes(b"")
    notes.write_bytes(b"")
    serve.Demo(backbone_demo.classifier, folder)
    assert files_under(folder) == sorted([photo, notes])


def test_teach_counts_count_photos_per_class(tmp_path):
    for name in ("A/one.jpg", "A/two.PNG", "A/.three.jpg.tmp-x1.jpg", "A/notes.txt", "D/four.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "B").mkdir()
    assert teach.counts(tmp_path, CLASSES) == {"A": 2, "B": 0, "C": 0}
    assert teach.counts(tmp_path / "absent", CLASSES) == {"A": 0, "B": 0, "C": 0}
    line = serve.counts_line({"A": 2, "B": 0, "C": 0})
    assert "**A** 2 · **B** 0 · **C** 0" in line and "No photo yet: B, C" in line


@needs_hand_model
@pytest.mark.parametrize("photo", [np.full((120, 160, 3), 128, np.uint8), noise(4, 4)], ids=["blank", "4x4"])
def test_teach_refuses_a_photo_without_a_hand(hands_model, tmp_path, photo):
    demo = serve.Demo(load_classifier(hands_model), tmp_path / "my-hand")
    answer = demo.teach([("hand.jpg", (SAMPLES / "A_test.jpg").read_bytes()), ("not-a-hand.png", encoded(photo))], "A")
    assert isinstance(answer, serve.Rejection)
    assert "not-a-hand.png: No hand found" in answer.message and "Nothing was saved" in answer.message
    assert files_under(tmp_path) == []
    assert isinstance(demo.teach([("hand.jpg", (SAMPLES / "A_test.jpg").read_bytes())], "A"), serve.Taught)


def test_file_names_are_shown_as_text_not_markdown():
    markdown_it = pytest.importorskip("markdown_it")
    name = "![t](http://127.0.0.1:8777/track.png).jpg **bold** $x$ <img src=x> [a](b)"
    html = markdown_it.MarkdownIt("commonmark").render(serve.as_text(name))
    assert "<img" not in html and "<a " not in html and "<strong>" not in html
    assert html.strip() == f"<p>{name.replace('<', '&lt;').replace('>', '&gt;')}</p>"


def test_demo_serves_the_model_training_rewrites(tmp_path):
    model_file = tiny_model(tmp_path, ("backbone",))
    demo = serve.Demo(load_classifier(model_file), tmp_path / "my-hand")
    first = demo.classifier
    assert demo.follow_model_file() is False and demo.classifier is first
    tiny_model(tmp_path, ("backbone",))  # retrained: written again, atomically
    assert demo.follow_model_file() is True and demo.classifier is not first
    assert demo.reload_problem is None and demo.follow_model_file() is False
    retrained = demo.classifier

    model_file.write_bytes(b"not a model")  # a broken write: keep serving the last good model, and say so
    assert demo.follow_model_file() is False and demo.classifier is retrained
    assert str(model_file) in demo.reload_problem and "Still serving" in demo.reload_problem
    assert isinstance(demo.classify(encoded(noise(20, 20))), serve.Prediction)
    assert demo.follow_model_file() is False  # not loaded again until the files change again

    tiny_model(tmp_path, ("backbone",))
    assert demo.follow_model_file() is True and demo.reload_problem is None


def spec_of(featurizers: tuple) -> FeatureSpec:
    return FeatureSpec(featurizers, "resnet50", IMAGE_SIZE, False, None)


def test_description_names_model_run_and_pretraining():
    run = {"pretrained": True, "backbone_weights": "imagenet (/root/.keras/models/r.h5)",
           "dvc_experiment": "brave-kiwi", "inputs_sha256": "0123456789abcdef" * 4}
    served = types.SimpleNamespace(model_file=Path("models/model.keras"), classes=CLASSES, run=run,
                                   spec=spec_of(("backbone", "hand_landmarks")))
    text = serve.describe(served)
    for words in ("models/model.keras", "3 classes", "inputs sha256 0123456789ab",
                  "DVC experiment brave-kiwi", "resnet50 backbone pretrained on imagenet", "hand landmarks"):
        assert words in text


@pytest.mark.parametrize("featurizers, run, words", [
    (("backbone",), {}, "training run: unknown"),
    (("backbone",), {}, "pretrained: unknown"),
    (("backbone",), {"pretrained": False, "dvc_experiment": None}, "NOT pretrained"),
    (("hand_landmarks",), {"pretrained": False}, "no image backbone"),
])
def test_description_when_run_is_unknown_or_not_pretrained(featurizers, run, words):
    served = types.SimpleNamespace(model_file=Path("m.keras"), classes=CLASSES, run=run, spec=spec_of(featurizers))
    assert words in serve.describe(served)


def test_serve_help_documents_every_option():
    text = subprocess.run([sys.executable, "-m", "asl_pipeline", "serve", "--help"], cwd=PROJECT,
                          capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--host", "--port", "127.0.0.1", "--live-port", "--teach-dir", "data/my-hand",
                   "data.extra_train"):
        assert option in text


def test_serve_bad_port_and_missing_model_say_what_to_do(tmp_path, capsys):
    assert cli.main(["serve", "--port", "70000"]) == 1
    assert "1 to 65535" in capsys.readouterr().err
    assert cli.main(["serve", "--port", "65535"]) == 1  # Spell live's port, the next one, does not exist
    assert "--live-port 65536 is not a TCP port" in capsys.readouterr().err
    assert cli.main(["serve", "--port", "8601", "--live-port", "8601"]) == 1
    assert "the page's own --port" in capsys.readouterr().err
    pytest.importorskip("streamlit", reason="the demo's packages (requirements-demo.txt) are not installed")
    assert cli.main(["serve", "--model", str(tmp_path / "absent.keras")]) == 1
    assert "absent.keras" in capsys.readouterr().err


def test_serve_without_demo_packages_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "streamlit.web", None)  # makes `import streamlit.web` fail
    monkeypatch.chdir(PROJECT)  # where params.yaml names the default model
    assert cli.main(["serve"]) == 1
    assert "requirements-demo.txt" in capsys.readouterr().err


def test_serve_without_model_serves_the_variant_serve_model_names(monkeypatch, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    assert "resnet50" in params["variants"] and params["serve"]["model"] != "resnet50"
    params["serve"]["model"] = "resnet50"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    assert cli.served_model_file(project) == project / "models" / "resnet50" / "model.keras"
    served = []
    monkeypatch.setattr(serve, "serve", lambda model_file, *args: served.append(Path(model_file).resolve()))
    monkeypatch.chdir(project)
    assert cli.main(["serve", "--port", str(free_port())]) == 0
    assert served == [(project / "models" / "resnet50" / "model.keras").resolve()]


def test_serve_without_model_or_params_yaml_says_to_pass_model(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "params.yaml" in err and "--model" in err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_line(lines: queue.Queue, words: str, seconds: float) -> list:
    """The lines read until one contains `words`; fails with them all if it does not come in time."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break  # the server exited
        seen.append(line)
        if words in line:
            return seen
    pytest.fail(f"the server did not print {words!r} in {seconds} s; it printed:\n{''.join(seen)}")


@contextlib.contextmanager
def serving(model_file: Path | None, teach_dir: Path, port: int | None = None, live_port: int | None = None):
    """The URL of `python -m asl_pipeline serve` with this model (None: the default one) on these ports (None:
    free ones), stopped afterwards. Its live page key is kept beside teach_dir, not in the user's cache."""
    port, live_port = port or free_port(), live_port or free_port()
    command = [sys.executable, "-m", "asl_pipeline", "serve", "--port", str(port), "--live-port", str(live_port),
               "--teach-dir", str(teach_dir)]
    if model_file is not None:
        command += ["--model", str(model_file)]
    server = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "XDG_CACHE_HOME": str(Path(teach_dir).parent / "cache")})
    lines = queue.Queue()

    def read_output():
        for line in server.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_output, daemon=True).start()
    try:
        wait_for_line(lines, f"URL: http://127.0.0.1:{port}", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def running_server(hands_model, tmp_path):
    """(URL, model file, teach folder) of the demo serving the tiny hands model.

    For the screenshots (ASL_SCREENSHOTS) it serves the pipeline's own model, the default: the variant
    params.yaml's serve.model names.
    """
    teach_dir = tmp_path / "my-hand"
    with serving(None if SCREENSHOTS else hands_model, teach_dir) as url:
        yield url, cli.served_model_file(PROJECT) if SCREENSHOTS else hands_model, teach_dir


def screenshot(page, name: str) -> None:
    """The page as `name` in the ASL_SCREENSHOTS folder, when one is named."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


@pytest.fixture
def browser_api():
    """Playwright's sync API, or a skip saying what is missing for the browser test."""
    pytest.importorskip("streamlit", reason="the demo's packages are not installed "
                        "(pip install -r requirements-demo.txt)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(pip install -r requirements-demo.txt)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    return sync_api


@pytest.mark.slow
@needs_hand_model
def test_page_in_a_real_browser(browser_api, running_server, tmp_path):
    url, model_file, _ = running_server
    photo = SAMPLES / "B_test.jpg"
    classifier = load_classifier(model_file)
    expected = serve.Demo(classifier).classify(photo.read_bytes())
    captions = ["Grad-CAM"] if classifier.spec.uses_backbone else []
    if classifier.spec.uses_hands:
        captions.append("Hand landmarks the model saw" if expected.hand_found else "No hand found")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a photo")
    too_big = tmp_path / "huge.png"
    too_big.write_bytes(encoded(noise(64, 64)) + bytes(uploads.MAX_UPLOAD_BYTES))
    with browser_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.locator("input[type=file]").set_input_files(str(photo))
            letter = page.get_by_test_id("stMetricValue")
            letter.wait_for(timeout=60_000)
            assert letter.inner_text().strip() == expected.label
            for caption in captions:
                image = page.get_by_role("img", name=caption)
                browser_api.expect(image).to_be_visible()
                assert image.evaluate("element => element.complete && element.naturalWidth > 0")
            screenshot(page, "demo.png")
            for bad_file, words in ((not_an_image, "not an image the demo can read"),
                                    # Streamlit's uploader refuses it in the browser, at the limit the page names
                                    (too_big, f"File must be {serve.MAX_UPLOAD_MB:.1f}MB or smaller")):
                page.locator("input[type=file]").set_input_files(str(bad_file))
                browser_api.expect(page.get_by_role("alert").filter(has_text=words)).to_be_visible(timeout=30_000)
                browser_api.expect(letter).to_have_count(0)
        finally:
            browser.close()


@contextlib.contextmanager
def teach_page(browser_api, running_server, index: int):
    """(page, its "Save as <letter>" button, the letter, its sample photo): the running demo in headless Chromium,
    in teach mode, with the model's class at `index` picked."""
    url, model_file, _ = running_server
    letter = json.loads(ModelFiles(model_file).labels.read_text(encoding="utf-8"))[index]
    with browser_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_text("Teach it your hand").click()
            page.get_by_test_id("stSelectbox").click()
            page.get_by_role("option", name=letter, exact=True).click()
            save = page.get_by_role("button", name=f"Save as {letter}")
            save.wait_for()  # the page has run again with the letter
            yield page, save, letter, SAMPLES / f"{letter}_test.jpg"
        finally:
            browser.close()


@pytest.mark.slow
@needs_hand_model
def test_teach_mode_in_a_real_browser(browser_api, running_server):
    with teach_page(browser_api, running_server, 1) as (page, save, letter, photo):
        teach_dir = running_server[2]
        page.locator("input[type=file]").set_input_files(str(photo))
        browser_api.expect(page.get_by_text("1 photo picked, not saved yet.")).to_be_visible(timeout=30_000)
        save.click()
        done = page.get_by_role("status").filter(has_text="The current model reads it as")
        browser_api.expect(done).to_be_visible(timeout=60_000)
        browser_api.expect(done).to_contain_text(f"Saved 1 photo as {letter}.")
        saved = files_under(teach_dir)
        assert len(saved) == 1 and saved[0].parent == teach_dir / letter and TEACH_NAME.fullmatch(saved[0].name)
        with Image.open(saved[0]) as jpeg:
            assert jpeg.format == "JPEG"
        assert images.load_rgb(saved[0]).shape == images.load_rgb(photo).shape
        browser_api.expect(done).to_contain_text(str(saved[0]))
        counts = page.get_by_test_id("stMarkdown").filter(has_text="per letter")
        browser_api.expect(counts).to_contain_text(f"{letter} 1")
        browser_api.expect(page.get_by_text("dvc repro", exact=False).first).to_be_visible()
        if SCREENSHOTS:
            # Streamlit scrolls inside its own frame, so full_page stops at the window: make it tall enough.
            page.set_viewport_size({"width": 1280, "height": 1050})
            screenshot(page, "teach.png")
        # The form is cleared once saved: another page run (a new letter picked) saves nothing again.
        page.get_by_test_id("stSelectbox").click()
        page.get_by_role("option", name=letter, exact=True).click()
        browser_api.expect(counts).to_contain_text(f"{letter} 1")
        assert len(files_under(teach_dir)) == 1
        # A file name is shown as text: one written as a Markdown image is not fetched by the browser.
        tracker = "![t](http://127.0.0.1:9/track.png).jpg"
        fetched = []
        page.on("request", lambda request: fetched.append(request.url) if "track.png" in request.url else None)
        page.locator("input[type=file]").set_input_files(
            [{"name": tracker, "mimeType": "image/jpeg", "buffer": b"not a photo"},
             {"name": photo.name, "mimeType": "image/jpeg", "buffer": photo.read_bytes()}])
        browser_api.expect(page.get_by_text("not a photo", exact=False)).to_have_count(0)
        # Both uploaded before Save, and the page has run with them (a click can come first on a busy machine).
        browser_api.expect(page.get_by_text("2 photos picked, not saved yet.")).to_be_visible(timeout=30_000)
        page.get_by_role("button", name=f"Save as {letter}").click()
        refused = page.get_by_role("alert").filter(has_text="Nothing was saved")
        browser_api.expect(refused).to_contain_text(f"{tracker}: This file is not an image", timeout=60_000)
        browser_api.expect(refused).to_contain_text("1 of the 2 photos")
        browser_api.expect(refused).to_contain_text("Pick the photos again without it")
        assert fetched == [] and refused.locator("img").count() == 0
        assert len(files_under(teach_dir)) == 1  # all or nothing: the good photo beside it was not saved
        # As the message says, the picker is empty again: the refused photos are no longer held.
        browser_api.expect(page.get_by_test_id("stFileChipName")).to_have_count(0)


def wait_for_new_files(folder: Path, before: set, seconds: float) -> list:
    """The files in `folder` not in `before`, once there is one (or none after `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = sorted(set(files_under(folder)) - before)
        if new:
            return new
        time.sleep(0.1)
    return []


@pytest.mark.slow
@needs_hand_model
def test_a_double_click_on_save_saves_the_photo_once_and_says_so(browser_api, running_server):
    """Ten times over, a photo picked and Save pressed twice: as a double click, and as two clicks 150 ms apart."""
    with teach_page(browser_api, running_server, 0) as (page, save, letter, photo):
        teach_dir = running_server[2]
        outcome = page.get_by_role("status").filter(has_text=re.compile("^Saved"))
        for attempt in range(10):
            before = set(files_under(teach_dir))
            assert len(before) == attempt  # the clicks before saved one photo each, and no more
            page.locator("input[type=file]").set_input_files(str(photo))
            # Uploaded, and the page has run with it: not only its chip drawn.
            browser_api.expect(page.get_by_text("1 photo picked, not saved yet.")).to_be_visible(timeout=30_000)
            if attempt % 2:
                save.click()
                page.wait_for_timeout(150)
                save.click()
            else:
                save.dblclick()
            browser_api.expect(page.get_by_test_id("stFileChipName")).to_have_count(0, timeout=60_000)
            new = wait_for_new_files(teach_dir, before, 60)
            assert len(new) == 1, f"attempt {attempt + 1}: {len(new)} photos saved"
            browser_api.expect(outcome).to_contain_text(f"Saved 1 photo as {letter}.")
            browser_api.expect(outcome).to_contain_text(str(new[0]))
            browser_api.expect(page.get_by_text("Nothing to save yet")).to_have_count(0)
        page.wait_for_timeout(2000)  # a late second save of the last photo would land by now
        assert len(files_under(teach_dir)) == 10


def websocket_handshake(port: int, origin: str) -> bytes:
    """The status line Streamlit's WebSocket answers a page at `origin` opening it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n".encode())
        return client.recv(4096).split(b"\r\n")[0]


@pytest.mark.slow
@needs_hand_model
def test_streamlits_websocket_accepts_only_the_pages_own_origin(running_server):
    url, _, _ = running_server
    port = int(url.rsplit(":", 1)[1])
    assert b" 101 " in websocket_handshake(port, url)  # the page itself
    for origin in (f"http://127.0.0.1:{free_port()}", f"http://localhost:{free_port()}", "http://evil.example"):
        assert b" 101 " not in websocket_handshake(port, origin), origin
