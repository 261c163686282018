"""The demo page's Spell live mode: the frame endpoint as plain functions and over HTTP, and the page in a real
headless browser reading a fake camera that plays a video of sample photos spelling CAB."""
import http.client
import io
import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from asl_pipeline import images, live, serve, uploads
from asl_pipeline.inference import load_classifier
from helpers import needs_sample
from test_serve import CHROMIUM, CHROMIUM_ARGS, PROJECT, browser_api, serving  # noqa: F401 (a fixture)
from test_spell import (SIGNER_VIDEOS, WORD, needs_signer_videos, sample_photos, train_landmark_svm, video_frames,
                        word_signs)

SCREENSHOT = PROJECT / "docs" / "live.png"
CAMERA_FPS = 30  # a webcam's


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=80)  # as the page sends them (canvas.toBlob at 0.8)
    return buffer.getvalue()


def frames_of(label: str, count: int) -> list:
    return [jpeg(images.load_rgb(path)) for path in sample_photos(label, video=True)[:count]]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return train_landmark_svm(["A", "B", "C", "nothing"], 15, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def demo(model_file):
    return serve.Demo(load_classifier(model_file))


@needs_sample
def test_a_frame_gives_the_letter_the_hand_and_the_text(demo):
    sessions = live.LiveSessions(demo)
    session = sessions.open()["session"]
    answers = [sessions.frame(session, frame) for frame in frames_of("C", 6)]
    first = answers[0]
    assert first["label"] == "C" and first["probability"] >= 0.5 and first["hand_found"] is True
    assert (first["width"], first["height"]) == (200, 200)
    points = np.array(first["landmarks"])
    assert points.shape == (21, 2) and (points >= 0).all() and (points <= 200).all()
    assert [answer["text"] for answer in answers] == ["", "", "", "", "C", "C"]  # 5 of 6 frames hold a sign
    assert not any(answer["motion"] for answer in answers)
    assert json.loads(json.dumps(first)) == first  # plain JSON


@needs_signer_videos
def test_a_j_drawn_at_the_camera_is_read_from_the_motion_and_said_so(demo):
    # A real signer's J (signer 2, whom the motion thresholds were not measured on), at the page's 10 frames a second.
    frames = [jpeg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
              for bgr in video_frames(SIGNER_VIDEOS / "J" / "signer2.mp4")[::CAMERA_FPS // live.SPELL_FPS]]
    sessions = live.LiveSessions(demo)
    session = sessions.open()["session"]
    answers = [sessions.frame(session, frame) for frame in frames]
    drawn = [answer for answer in answers if answer["motion"]]
    assert drawn and all(answer["label"] == "J" for answer in drawn)
    assert answers[-1]["text"].endswith("J")


@needs_sample
def test_each_session_spells_its_own_text_and_clear_starts_over(demo):
    sessions = live.LiveSessions(demo)
    first, second = sessions.open()["session"], sessions.open()["session"]
    assert first != second
    for frame in frames_of("C", 6):
        sessions.frame(first, frame)
    for frame in frames_of("A", 6):
        answer = sessions.frame(second, frame)
    assert answer["text"] == "A"
    assert sessions.frame(first, frames_of("nothing", 1)[0])["text"] == "C"
    assert sessions.clear(first) == {"text": ""}
    assert sessions.frame(first, frames_of("nothing", 1)[0])["text"] == ""
    assert sessions.frame(second, frames_of("nothing", 1)[0])["text"] == "A"


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"GET / HTTP/1.1 not a frame", "not an image the demo can read"),
    (jpeg(np.zeros((40, 40, 3), np.uint8))[:100], "not an image the demo can read"),  # cut short
    (b"\xff" * (serve.MAX_UPLOAD_BYTES + 1), f"up to {serve.MAX_UPLOAD_MB} MB"),
])
def test_a_bad_frame_is_refused_with_a_message_and_never_reaches_the_model(data, words):
    sessions = live.LiveSessions(demo=None)  # a frame reaching the model would fail on None
    session = sessions.open()["session"]
    with pytest.raises(live.LiveError, match=words) as refused:
        sessions.frame(session, data)
    assert refused.value.status == 400


def test_a_frame_over_the_pixel_limit_is_refused_from_its_header(monkeypatch):
    monkeypatch.setattr(uploads, "MAX_PIXELS", 30 * 30)
    monkeypatch.setattr(serve.images, "decode_rgb", lambda *args: pytest.fail("decoded a refused frame"))
    sessions = live.LiveSessions(demo=None)
    with pytest.raises(live.LiveError, match="31 x 30 pixels"):
        sessions.frame(sessions.open()["session"], jpeg(np.zeros((30, 31, 3), np.uint8)))


def test_sessions_are_capped_and_idle_ones_dropped():
    clock = Clock()
    sessions = live.LiveSessions(demo=None, max_sessions=2, idle_seconds=60, clock=clock)
    first = sessions.open()["session"]
    clock.now += 50
    second = sessions.open()["session"]
    with pytest.raises(live.LiveError, match="2 live pages are open already") as refused:
        sessions.open()
    assert refused.value.status == 503
    clock.now += 20  # the first is idle 70 s (its tab closed): dropped, which makes room
    third = sessions.open()["session"]
    assert len(sessions) == 2
    with pytest.raises(live.LiveError, match="session is over") as over:
        sessions.clear(first)
    assert over.value.status == 404
    clock.now += 30
    assert sessions.clear(second) == {"text": ""}  # a request keeps its session alive
    clock.now += 45
    sessions.clear(second)
    assert len(sessions) == 1 and third not in sessions._sessions


def test_an_unknown_session_is_told_to_start_again():
    with pytest.raises(live.LiveError, match="page starts a new one"):
        live.LiveSessions(demo=None).frame("made-up", b"")


@pytest.mark.parametrize("origin, allowed", [
    ("http://127.0.0.1:8501", True), ("http://localhost:8501", True), ("http://192.168.1.5:8501", True),
    ("http://127.0.0.1:8502", False), ("https://example.com", False), ("null", False), (None, False),
    ("http://[::1", False),
])
def test_only_the_demo_page_may_post_from_the_browser(origin, allowed):
    assert live.allowed_origin(origin, 8501) == (origin if allowed else None)


@pytest.fixture
def live_server(demo):
    server = live.LiveServer(live.LiveSessions(demo), "127.0.0.1", page_port=8501)
    yield server
    server.close()


def request(connection, path: str, body: bytes | None = None, headers=None):
    connection.request("POST", path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"null"), response


@needs_sample
def test_the_endpoint_over_http(live_server):
    connection = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=30)
    page = {"Origin": "http://127.0.0.1:8501"}
    status, answer, response = request(connection, "/session", headers=page)
    assert status == 200 and response.getheader("Access-Control-Allow-Origin") == "http://127.0.0.1:8501"
    session = answer["session"]
    for frame in frames_of("B", 6):  # one keep-alive connection, as the browser's
        status, answer, _ = request(connection, f"/frame?session={session}", frame, {"Content-Type": "image/jpeg"})
    assert status == 200 and answer["label"] == "B" and answer["text"] == "B"
    status, answer, _ = request(connection, f"/frame?session={session}", b"not a jpeg")
    assert status == 400 and "not an image" in answer["error"]
    status, answer, _ = request(connection, "/frame?session=made-up", frames_of("B", 1)[0])
    assert status == 404 and "new one" in answer["error"]
    status, answer, response = request(connection, "/nowhere", headers={"Origin": "https://example.com"})
    assert status == 404 and "/frame" in answer["error"]
    assert response.getheader("Access-Control-Allow-Origin") is None
    connection.request("OPTIONS", "/frame", headers=page)  # the browser's preflight
    preflight = connection.getresponse()
    preflight.read()
    assert preflight.status == 204 and "Content-Type" in preflight.getheader("Access-Control-Allow-Headers")


def test_an_oversize_frame_is_refused_before_it_is_read():
    server = live.LiveServer(live.LiveSessions(demo=None), "127.0.0.1", page_port=8501)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        # Only the header is sent: the answer comes without the server waiting for 2 GB.
        connection.putrequest("POST", f"/frame?session={session}")
        connection.putheader("Content-Length", str(2 * 1024 ** 3))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and f"up to {serve.MAX_UPLOAD_MB} MB" in json.loads(response.read())["error"]
    finally:
        server.close()


def test_answers_are_not_held_back_for_the_clients_acknowledgement():
    # Headers and body leave in two writes: with Nagle's algorithm on, each answer waits ~40 ms for the
    # client's delayed ACK, which alone would hold the page under 25 frames a second.
    server = live.LiveServer(live.LiveSessions(demo=None), "127.0.0.1", page_port=8501)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        start = time.perf_counter()
        for _ in range(20):
            assert request(connection, f"/frame?session={session}", b"not a jpeg")[0] == 400
        assert (time.perf_counter() - start) / 20 < 0.02
    finally:
        server.close()


def test_a_failing_model_answers_an_error_and_the_endpoint_keeps_serving():
    class Broken:
        classifier = None

        def analyse(self, photo, with_heatmaps, track=None):
            raise RuntimeError("the model fell over")

    server = live.LiveServer(live.LiveSessions(Broken()), "127.0.0.1", page_port=8501)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        frame = jpeg(np.zeros((20, 20, 3), np.uint8))
        for _ in range(2):
            status, answer, _ = request(connection, f"/frame?session={session}", frame)
            assert status == 500 and "the model fell over" in answer["error"]
    finally:
        server.close()


def test_the_component_is_configured_with_the_endpoint_and_the_skeleton():
    page = live.component_html(43210)
    config = json.loads(re.search(r"const CONFIG = (\{.*\});", page).group(1))
    assert config["port"] == 43210 and config["fps"] == live.SPELL_FPS
    assert [tuple(pair) for pair in config["connections"]] == list(live.drawing.HAND_CONNECTIONS)
    assert "/*CONFIG*/" not in page


# ------------------------------------------------------------------------------------- in the browser

def write_y4m(path: Path, signs, repeat: int, fps: int = CAMERA_FPS) -> Path:
    """A Y4M video (the raw YUV 4:2:0 format Chromium's fake camera plays) of sample photos: each (label,
    photos) shows that many different photos of the class, each for `repeat` frames."""
    used = {}
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W200 H200 F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for label, count in signs:
            start = used.get(label, 0)
            for photo in sample_photos(label, video=True)[start:start + count]:
                bgr = cv2.cvtColor(images.load_rgb(photo), cv2.COLOR_RGB2BGR)
                out.write((b"FRAME\n" + cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes()) * repeat)
            used[label] = start + count
    return path


def open_live_mode(page, url: str):
    """The page in Spell live mode; the live component's frame."""
    page.goto(url)
    page.get_by_text("Spell live").click()
    return page.frame_locator("iframe").first


@pytest.mark.slow
@needs_sample
def test_spell_live_in_a_real_browser_spells_cab_from_a_fake_camera(browser_api, model_file, tmp_path):
    # Letters held 1.5 s, 0.9 s of `nothing` between: slack for a machine slower than 10 frames a second.
    # Each photo stays 0.3 s, as a hand would: the skeleton, a frame behind the picture, still fits it.
    camera = write_y4m(tmp_path / "cab.y4m", word_signs(WORD, hold=5, pause=3), repeat=CAMERA_FPS * 3 // 10)
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={camera}"]
    with serving(model_file, tmp_path / "my-hand") as url, browser_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            component = open_live_mode(page, url)
            text = component.locator("#text")
            browser_api.expect(text).to_contain_text(WORD, timeout=90_000)  # a loop of the video is 8.1 s
            assert re.fullmatch(r"[ABC]*", text.inner_text())
            rate = component.locator("#rate").inner_text()
            print(f"live page in headless Chromium: {rate}")
            assert float(rate.split()[0]) > 0
            if os.environ.get("ASL_LIVE_SCREENSHOT") == "1":
                # While a letter is held, so that the picture shows the skeleton and the reading.
                browser_api.expect(component.locator("#letter")).to_have_text(re.compile(r"^[ABC] \d+%$"),
                                                                             timeout=20_000)
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            component.get_by_role("button", name="Clear").click()
            browser_api.expect(text).not_to_contain_text(WORD, timeout=10_000)
        finally:
            browser.close()


@pytest.mark.slow
@needs_sample
@pytest.mark.parametrize("camera, words", [
    # A camera exists, but the permission prompt goes unanswered: headless Chromium denies it.
    (["--use-fake-device-for-media-stream"], "did not allow this page to use the camera"),
    # The prompt is accepted, but the machine has no camera.
    pytest.param(["--use-fake-ui-for-media-stream"], "No camera found",
                 marks=pytest.mark.skipif(any(Path("/dev").glob("video*")), reason="this machine has a camera")),
])
def test_spell_live_without_a_camera_says_what_to_do(browser_api, model_file, tmp_path, camera, words):
    with serving(model_file, tmp_path / "my-hand") as url, browser_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + camera)
        try:
            component = open_live_mode(browser.new_page(), url)
            browser_api.expect(component.get_by_role("alert")).to_contain_text(words, timeout=60_000)
            browser_api.expect(component.locator("#stage")).to_be_hidden()
        finally:
            browser.close()
