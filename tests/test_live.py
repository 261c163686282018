"""The demo page's Spell live mode: the frame endpoint as plain functions and over HTTP, and the page in a real
headless browser reading a fake camera that plays a video of sample photos spelling CAB."""
import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from asl_pipeline import images, live, serve, uploads
from asl_pipeline.inference import load_classifier
from helpers import needs_sample
from test_serve import CHROMIUM, CHROMIUM_ARGS, PROJECT, browser_api, free_port, serving  # noqa: F401 (a fixture)
from test_spell import (SIGNER_VIDEOS, WORD, needs_signer_videos, sample_photos, train_landmark_svm, video_frames,
                        word_signs)

SCREENSHOT = PROJECT / "docs" / "live.png"
CAMERA_FPS = 30  # a webcam's
PAGES = live.PageSecrets(b"k" * 32)
PAGE = PAGES.issue()  # the secret a page hands its component
PAGE_ORIGIN = "http://127.0.0.1:8501"
FROM_PAGE = {"Origin": PAGE_ORIGIN, live.PAGE_HEADER: PAGE}  # what the page's component sends


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
    # I: the handshape a J draws, which the still reader must read for the speller to take a J.
    return train_landmark_svm(["A", "B", "C", "I", "nothing"], 15, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def demo(model_file):
    return serve.Demo(load_classifier(model_file))


@needs_sample
def test_a_frame_gives_the_letter_the_hand_and_the_text(demo):
    sessions = live.LiveSessions(demo, PAGES)
    session = sessions.open(PAGE)["session"]
    answers = [sessions.frame(session, PAGE, frame) for frame in frames_of("C", 6)]
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
    sessions = live.LiveSessions(demo, PAGES)
    session = sessions.open(PAGE)["session"]
    answers = [sessions.frame(session, PAGE, frame) for frame in frames]
    drawn = [answer for answer in answers if answer["motion"]]
    assert drawn and all(answer["label"] == "J" for answer in drawn)
    assert "little finger drew" in drawn[0]["why"] and "no letter held" in drawn[0]["why"]
    assert answers[-1]["text"].endswith("J")


@needs_sample
def test_each_session_spells_its_own_text_and_clear_starts_over(demo):
    sessions = live.LiveSessions(demo, PAGES)
    tab, other_tab = PAGE, PAGES.issue()  # each browser tab has a secret of its own
    first, second = sessions.open(tab)["session"], sessions.open(other_tab)["session"]
    assert first != second
    for frame in frames_of("C", 6):
        sessions.frame(first, tab, frame)
    for frame in frames_of("A", 6):
        answer = sessions.frame(second, other_tab, frame)
    assert answer["text"] == "A"
    assert sessions.frame(first, tab, frames_of("nothing", 1)[0])["text"] == "C"
    assert sessions.clear(first, tab) == {"text": ""}
    assert sessions.frame(first, tab, frames_of("nothing", 1)[0])["text"] == ""
    assert sessions.frame(second, other_tab, frames_of("nothing", 1)[0])["text"] == "A"


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"GET / HTTP/1.1 not a frame", "not an image the demo can read"),
    (jpeg(np.zeros((40, 40, 3), np.uint8))[:100], "not an image the demo can read"),  # cut short
    (b"\xff" * (uploads.FRAME.max_bytes + 1), "frames of up to 2 MB"),
])
def test_a_bad_frame_is_refused_with_a_message_and_never_reaches_the_model(data, words):
    sessions = live.LiveSessions(None, PAGES)  # a frame reaching the model would fail on None
    session = sessions.open(PAGE)["session"]
    with pytest.raises(live.LiveError, match=words) as refused:
        sessions.frame(session, PAGE, data)
    assert refused.value.status == 400


def flat_png(width: int, height: int) -> bytes:
    """A one-colour PNG: a few hundred kilobytes on the wire, width x height x 3 bytes decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 10, 10)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_a_frame_larger_than_the_page_sends_is_refused_from_its_header(monkeypatch):
    # The issue's 7000 x 7000 flat PNG: 160 KB, under the photo limits, about 1 GB if decoded.
    data = flat_png(7000, 7000)
    assert len(data) < uploads.FRAME.max_bytes and 7000 * 7000 < uploads.PHOTO.max_pixels
    monkeypatch.setattr(uploads.images, "decode_rgb", lambda *args, **kwargs: pytest.fail("decoded a refused frame"))
    sessions = live.LiveSessions(None, PAGES)
    with pytest.raises(live.LiveError, match=r"7000 x 7000 pixels \(49,000,000\).*up to 2,100,000 pixels") as refused:
        sessions.frame(sessions.open(PAGE)["session"], PAGE, data)
    assert refused.value.status == 400
    # Just over the limit, the numbers still tell the frame from the limit.
    with pytest.raises(live.LiveError, match=r"1450 x 1450 pixels \(2,102,500\).*up to 2,100,000 pixels \(1449 x 1449\)"):
        sessions.frame(sessions.open(PAGE)["session"], PAGE, flat_png(1450, 1450))


def test_a_frame_waits_for_a_work_slot_and_is_told_the_demo_is_busy(monkeypatch):
    monkeypatch.setattr(uploads, "BUSY_SECONDS", 0.1)
    sessions = live.LiveSessions(None, PAGES)
    session = sessions.open(PAGE)["session"]
    with contextlib.ExitStack() as taken:
        for _ in range(uploads.WORK_SLOTS):  # photos being read meanwhile
            taken.enter_context(uploads.work_slot())
        with pytest.raises(live.LiveError, match="busy reading other photos") as busy:
            sessions.frame(session, PAGE, jpeg(np.zeros((20, 20, 3), np.uint8)))
    assert busy.value.status == 503
    with pytest.raises(live.LiveError, match="not an image"):  # the slots are free again: read (and refused)
        sessions.frame(session, PAGE, b"not a jpeg")


def test_sessions_are_capped_and_idle_ones_dropped():
    clock = Clock()
    sessions = live.LiveSessions(None, PAGES, max_sessions=2, idle_seconds=10, clock=clock)
    tabs = [PAGES.issue() for _ in range(3)]
    first = sessions.open(tabs[0])["session"]
    clock.now += 8
    second = sessions.open(tabs[1])["session"]
    with pytest.raises(live.LiveError, match="2 live pages are open already") as refused:
        sessions.open(tabs[2])
    assert refused.value.status == 503
    clock.now += 3  # the first is idle 11 s (its tab closed): dropped, which makes room
    third = sessions.open(tabs[2])["session"]
    assert len(sessions) == 2
    with pytest.raises(live.LiveError, match="session is over") as over:
        sessions.clear(first, tabs[0])
    assert over.value.status == 404
    clock.now += 6
    assert sessions.clear(second, tabs[1]) == {"text": ""}  # a request keeps its session alive
    clock.now += 6
    sessions.clear(second, tabs[1])
    assert len(sessions) == 1 and third not in sessions._sessions


def test_a_page_holds_one_session_and_closing_it_frees_the_place():
    sessions = live.LiveSessions(None, PAGES, max_sessions=2)
    tab, other_tab = PAGES.issue(), PAGES.issue()
    first = sessions.open(tab)["session"]
    again = sessions.open(tab)["session"]  # the same page again (a reload of the component): replaces its own
    assert len(sessions) == 1 and first not in sessions._sessions
    sessions.open(other_tab)
    with pytest.raises(live.LiveError, match="session is over"):
        sessions.close(again, other_tab)  # another page's session is not its to close
    assert sessions.close(again, tab) == {} and len(sessions) == 1
    sessions.open(PAGES.issue())  # the place is free at once


# Fixed ids: the secrets are random, and pytest-xdist's workers must collect the same test names.
@pytest.mark.parametrize("secret", ["", "made-up", PAGE.split(".")[0] + ".0123", live.PageSecrets(b"x" * 32).issue(),
                                    "\u00e9.\u00e9"],
                         ids=["empty", "made-up", "forged-signature", "another-key", "not-ascii"])
def test_without_the_pages_secret_no_session_opens(secret):
    sessions = live.LiveSessions(None, PAGES)
    with pytest.raises(live.LiveError, match="does not come from the demo's page") as refused:
        sessions.open(secret)
    assert refused.value.status == 403 and len(sessions) == 0


def test_a_session_answers_only_the_page_that_opened_it():
    sessions = live.LiveSessions(None, PAGES)
    session = sessions.open(PAGE)["session"]
    for page in (PAGES.issue(), "forged"):
        with pytest.raises(live.LiveError) as refused:
            sessions.frame(session, page, b"")
        assert refused.value.status in (403, 404)
    with pytest.raises(live.LiveError, match="not an image"):
        sessions.frame(session, PAGE, b"not a jpeg")


def test_an_unknown_session_is_told_to_start_again():
    with pytest.raises(live.LiveError, match="page starts a new one"):
        live.LiveSessions(None, PAGES).frame("made-up", PAGE, b"")


def test_the_page_key_is_made_once_for_this_user_alone(tmp_path):
    key_file = tmp_path / "cache" / "asl-pipeline" / "live-page-key"
    key = live.page_key(key_file)
    assert len(key) == 32 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert live.page_key(key_file) == key  # the next start: a tab's secret still holds
    assert live.PageSecrets(live.page_key(key_file)).valid(live.PageSecrets(key).issue())
    assert [path.name for path in key_file.parent.iterdir()] == ["live-page-key"]


@pytest.mark.parametrize("host, origin, allowed", [
    ("127.0.0.1", "http://127.0.0.1:8501", True), ("127.0.0.1", "http://localhost:8501", True),
    ("127.0.0.1", "http://[::1]:8501", True), ("192.168.1.5", "http://192.168.1.5:8501", True),
    ("127.0.0.1", "http://192.168.1.5:8501", False), ("127.0.0.1", "http://127.0.0.1:8502", False),
    ("127.0.0.1", "http://evil.example:8501", False), ("127.0.0.1", "https://127.0.0.1:8501", False),
    ("127.0.0.1", "http://127.0.0.1:8501.evil.example", False), ("127.0.0.1", "null", False),
    ("0.0.0.0", "http://evil.example:8501", False),
])
def test_only_the_demo_pages_exact_origin_is_allowed(host, origin, allowed):
    assert (origin in live.page_origins(host, 8501)) == allowed


@contextlib.contextmanager
def live_endpoint(demo, **server):
    endpoint = live.LiveServer(live.LiveSessions(demo, PAGES), "127.0.0.1", 0, page_port=8501, **server)
    try:
        yield endpoint
    finally:
        endpoint.close()


@pytest.fixture
def live_server(demo):
    with live_endpoint(demo) as server:
        yield server


def request(connection, path: str, body: bytes | None = None, headers=None, method="POST"):
    connection.request(method, path, body=body, headers=FROM_PAGE if headers is None else headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"null"), response


@needs_sample
def test_the_endpoint_over_http(live_server):
    connection = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=30)
    status, answer, response = request(connection, "/session")
    assert status == 200 and response.getheader("Access-Control-Allow-Origin") == PAGE_ORIGIN
    session = answer["session"]
    for frame in frames_of("B", 6):  # one keep-alive connection, as the browser's
        status, answer, _ = request(connection, f"/frame?session={session}", frame,
                                    {**FROM_PAGE, "Content-Type": "image/jpeg"})
    assert status == 200 and answer["label"] == "B" and answer["text"] == "B"
    status, answer, _ = request(connection, f"/frame?session={session}", b"not a jpeg")
    assert status == 400 and "not an image" in answer["error"]
    status, answer, _ = request(connection, "/frame?session=made-up", frames_of("B", 1)[0])
    assert status == 404 and "new one" in answer["error"]
    status, answer, response = request(connection, "/nowhere")
    assert status == 404 and "/frame" in answer["error"]
    status, _, preflight = request(connection, "/frame", method="OPTIONS", headers={"Origin": PAGE_ORIGIN})
    assert status == 204 and live.PAGE_HEADER in preflight.getheader("Access-Control-Allow-Headers")
    assert request(connection, f"/close?session={session}")[0] == 200
    assert request(connection, f"/frame?session={session}", frames_of("B", 1)[0])[0] == 404


@pytest.mark.parametrize("headers", [
    {},  # curl, or a script on this machine
    {"Origin": "http://evil.example:8501"},  # another site's page, on the page's port
    {"Origin": "http://evil.example:8501", live.PAGE_HEADER: PAGE},  # ...even with the page's secret
    {"Origin": PAGE_ORIGIN},  # a no-cors fetch: the page's origin cannot be forged by a browser, nor a header sent
    {"Origin": PAGE_ORIGIN, live.PAGE_HEADER: "guessed." + "0" * 64},
])
def test_a_request_not_from_the_page_opens_nothing_and_its_answer_is_unreadable(headers):
    with live_endpoint(None) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(live.MAX_SESSIONS + 1):  # the issue's lock-out: every place filled from elsewhere
            status, answer, response = request(connection, "/session", headers=headers)
            assert status == 403 and "session" not in answer
            if headers.get("Origin") != PAGE_ORIGIN:
                assert response.getheader("Access-Control-Allow-Origin") is None
        assert len(server.sessions) == 0
        assert request(connection, "/session")[0] == 200  # the real page still gets its place


def test_a_preflight_from_another_origin_is_not_allowed():
    with live_endpoint(None) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for origin in ("http://evil.example:8501", "http://127.0.0.1:9999", "null"):
            _, _, response = request(connection, "/session", method="OPTIONS", headers={"Origin": origin})
            assert response.getheader("Access-Control-Allow-Origin") is None


def test_an_oversize_frame_is_refused_before_it_is_read():
    with live_endpoint(None) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        # Only the header is sent: the answer comes without the server waiting for 2 GB.
        connection.putrequest("POST", f"/frame?session={session}")
        for name, value in {**FROM_PAGE, "Content-Length": str(2 * 1024 ** 3)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "frames of up to 2 MB" in json.loads(response.read())["error"]


def raw_exchange(port: int, data: bytes) -> bytes:
    """Everything the server sends back to `data` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(data)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return received


def test_a_chunked_body_is_refused_and_never_read_as_the_next_request():
    with live_endpoint(None) as server:
        headers = "".join(f"{name}: {value}\r\n" for name, value in FROM_PAGE.items())
        smuggled = b"POST /session HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in FROM_PAGE.items()).encode()
        chunk = smuggled + b"Content-Length: 0\r\n\r\n"
        request_bytes = (f"POST /session HTTP/1.1\r\nHost: x\r\n{headers}Transfer-Encoding: chunked\r\n\r\n"
                         .encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
        answer = raw_exchange(server.port, request_bytes)
        assert answer.startswith(b"HTTP/1.1 411") and answer.count(b"HTTP/1.1") == 1
        assert len(server.sessions) == 0


def test_idle_connections_are_closed_and_a_stalled_body_is_told_how_much_came(monkeypatch):
    monkeypatch.setattr(live, "CONNECTION_TIMEOUT", 0.5)
    with live_endpoint(None) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
            assert idle.recv(1) == b""  # closed after the timeout, without an answer: it asked nothing
        head = "".join(f"{name}: {value}\r\n" for name, value in FROM_PAGE.items())
        stalled = f"POST /frame?session=x HTTP/1.1\r\n{head}Content-Length: 100000\r\n\r\n".encode() + bytes(1000)
        answer = raw_exchange(server.port, stalled)
        assert answer.startswith(b"HTTP/1.1 408") and b"1000 of 100000 bytes" in answer
        assert f"Access-Control-Allow-Origin: {PAGE_ORIGIN}".encode() in answer  # the page can read why


def test_a_request_with_two_content_lengths_is_refused():
    with live_endpoint(None) as server:
        head = "".join(f"{name}: {value}\r\n" for name, value in FROM_PAGE.items())
        answer = raw_exchange(server.port, f"POST /session HTTP/1.1\r\n{head}Content-Length: 0\r\n"
                                           f"Content-Length: 40\r\n\r\n".encode() + bytes(40))
        assert answer.startswith(b"HTTP/1.1 400") and b"more than one Content-Length" in answer
        assert answer.count(b"HTTP/1.1") == 1 and len(server.sessions) == 0


def test_connections_left_open_do_not_keep_a_new_request_from_its_answer():
    with live_endpoint(None) as server:
        # The issue's 32 connections left open, and as many more as the server keeps: each new one takes the place
        # of the one that has waited longest, so a page's request is answered, never reset.
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(live.MAX_CONNECTIONS + 8)]
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            assert request(connection, "/session")[0] == 200
        finally:
            for client in idle:
                client.close()


class Held:
    """A demo whose model holds every frame until released: connections busy answering."""

    classifier = None

    def __init__(self):
        self.release = threading.Event()

    def analyse(self, photo, with_heatmaps, track=None):
        self.release.wait(30)
        raise RuntimeError("released")


def test_when_every_connection_is_being_answered_one_more_is_told_the_demo_is_busy_readably():
    held = Held()
    with live_endpoint(held, max_connections=2) as server:
        session = request(http.client.HTTPConnection("127.0.0.1", server.port, timeout=30), "/session")[1]["session"]
        frame = jpeg(np.zeros((20, 20, 3), np.uint8))
        with concurrent.futures.ThreadPoolExecutor(2) as pages:
            answering = [pages.submit(request, http.client.HTTPConnection("127.0.0.1", server.port, timeout=30),
                                      f"/frame?session={session}", frame) for _ in range(2)]
            time.sleep(0.5)  # both frames are with the model
            try:
                status, answer, response = request(http.client.HTTPConnection("127.0.0.1", server.port, timeout=10),
                                                   f"/frame?session={session}", frame)
            finally:
                held.release.set()
            assert status == 503 and "busy" in answer["error"] and "tries again" in answer["error"]
            assert response.getheader("Access-Control-Allow-Origin") == PAGE_ORIGIN  # the page can read it
            assert [future.result()[0] for future in answering] == [500, 500]


@needs_sample
def test_forty_clients_posting_frames_at_once_each_get_an_answer(demo):
    frames = frames_of("B", 2)
    with live_endpoint(demo) as server:
        session = request(http.client.HTTPConnection("127.0.0.1", server.port, timeout=10), "/session")[1]["session"]

        def client(frame: bytes) -> tuple:  # a connection of its own, as each thread of the issue's 40
            status, answer, response = request(http.client.HTTPConnection("127.0.0.1", server.port, timeout=120),
                                               f"/frame?session={session}", frame)
            return status, "error" in answer, response.getheader("Access-Control-Allow-Origin")

        with concurrent.futures.ThreadPoolExecutor(40) as clients:
            answers = list(clients.map(client, frames * 40))  # an exception here: a request left unanswered
    assert len(answers) == 80 and all(origin == PAGE_ORIGIN for _, _, origin in answers)
    assert all(status == 200 or (status == 503 and error) for status, error, _ in answers), answers


def test_a_client_that_leaves_mid_request_is_one_line_in_the_log(capfd):
    with live_endpoint(None) as server:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                client.sendall(b"POST /session HTTP/1.1\r\nContent-Length: 100000\r\n\r\npart of a frame")
                # Reset, not closed: the server's read meets a connection that is gone.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert request(connection, "/session")[0] == 200  # still serving
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 20
    assert all(re.fullmatch(r"live: a client at 127\.0\.0\.1:\d+ left mid-request \(\w+\)", line) for line in lines)


def test_answers_are_not_held_back_for_the_clients_acknowledgement():
    # Headers and body leave in two writes: with Nagle's algorithm on, each answer waits ~40 ms for the
    # client's delayed ACK, which alone would hold the page under 25 frames a second.
    with live_endpoint(None) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        start = time.perf_counter()
        for _ in range(20):
            assert request(connection, f"/frame?session={session}", b"not a jpeg")[0] == 400
        assert (time.perf_counter() - start) / 20 < 0.02


def test_a_failing_model_answers_an_error_and_the_endpoint_keeps_serving():
    class Broken:
        classifier = None

        def analyse(self, photo, with_heatmaps, track=None):
            raise RuntimeError("the model fell over")

    with live_endpoint(Broken()) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        frame = jpeg(np.zeros((20, 20, 3), np.uint8))
        for _ in range(2):
            status, answer, _ = request(connection, f"/frame?session={session}", frame)
            assert status == 500 and "the model fell over" in answer["error"]


def test_a_stopping_demo_answers_that_it_is_stopping_not_an_internal_error(demo):
    stopping = serve.Demo(demo.classifier)
    stopping.stop()  # what serve does once Streamlit has stopped; the endpoint may still get frames
    with live_endpoint(stopping) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        session = request(connection, "/session")[1]["session"]
        status, answer, _ = request(connection, f"/frame?session={session}", jpeg(np.zeros((20, 20, 3), np.uint8)))
    assert status == 503 and "stopping" in answer["error"]
    assert "Error" not in answer["error"] and "futures" not in answer["error"]


def test_the_component_is_configured_with_the_endpoint_the_secret_and_the_skeleton():
    page = live.component_html(43210, PAGE)
    config = json.loads(re.search(r"const CONFIG = (\{.*\});", page).group(1))
    assert config["port"] == 43210 and config["fps"] == live.SPELL_FPS
    assert config["secret"] == PAGE and config["header"] == live.PAGE_HEADER
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


def fake_camera_spelling_cab(folder: Path) -> list:
    """Chromium's arguments for a camera that plays sample photos spelling CAB, the prompt for it accepted.

    Letters held 1.5 s, 0.9 s of `nothing` between: slack for a machine slower than 10 frames a second. Each
    photo stays 0.3 s, as a hand would: the skeleton, a frame behind the picture, still fits it."""
    camera = write_y4m(folder / "cab.y4m", word_signs(WORD, hold=5, pause=3), repeat=CAMERA_FPS * 3 // 10)
    return ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"]


def open_live_mode(page, url: str):
    """The page in Spell live mode; the live component's frame."""
    page.goto(url)
    page.get_by_text("Spell live").click()
    return page.frame_locator("iframe").first


@pytest.mark.slow
@needs_sample
def test_spell_live_in_a_real_browser_spells_cab_from_a_fake_camera(browser_api, model_file, tmp_path):
    fake_camera = fake_camera_spelling_cab(tmp_path)
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


# Another site open in the same browser: it posts to the live endpoint as any page can, no-cors (the request
# goes, the answer stays unreadable) and with CORS (the browser asks first, and is told no).
HOSTILE_PAGE = """<script>
window.attack = (async () => {
  const endpoint = "http://127.0.0.1:LIVE_PORT/session", result = {noCors: [], cors: null};
  for (let i = 0; i < 9; i++) {
    const response = await fetch(endpoint, {method: "POST", mode: "no-cors"});
    result.noCors.push(response.type);
  }
  try {
    const response = await fetch(endpoint, {method: "POST", headers: {"X-Live-Page": "guessed.0"}});
    result.cors = await response.text();
  } catch (error) {
    result.cors = `refused: ${error.name}`;
  }
  return result;
})();
</script>"""


@contextlib.contextmanager
def static_site(folder: Path):
    """http://127.0.0.1:<port> serving `folder`: a site of another origin than the demo's."""
    import functools
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def messages_seen(component) -> list:
    """Every message the live component has shown so far (recorded from the call of watch_messages on)."""
    return component.locator("body").evaluate("() => window.seenMessages")


def watch_messages(component) -> None:
    component.locator("body").evaluate("""() => {
        window.seenMessages = [];
        new MutationObserver(() => window.seenMessages.push(document.getElementById("message").textContent))
            .observe(document.getElementById("message"), {childList: true, characterData: true, subtree: true});
    }""")


@pytest.mark.slow
@needs_sample
def test_spell_live_outlasts_a_hostile_page_and_a_restart_of_the_demo(browser_api, model_file, tmp_path):
    fake_camera = fake_camera_spelling_cab(tmp_path)
    port, live_port = free_port(), free_port()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(HOSTILE_PAGE.replace("LIVE_PORT", str(live_port)))
    with browser_api.sync_playwright() as playwright, static_site(tmp_path / "site") as hostile_site:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
        try:
            with serving(model_file, tmp_path / "my-hand", port, live_port) as url:
                hostile = browser.new_page()
                hostile.goto(hostile_site)
                attack = hostile.evaluate("() => window.attack")
                assert attack == {"noCors": ["opaque"] * 9, "cors": "refused: TypeError"}  # nothing read
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                component = open_live_mode(page, url)
                text = component.locator("#text")
                browser_api.expect(text).to_contain_text(WORD, timeout=90_000)  # not locked out
                watch_messages(component)
            # The demo stopped (as with Ctrl-C): the tab says so, and carries on once it is started again.
            browser_api.expect(component.get_by_role("alert")).to_contain_text("does not answer", timeout=30_000)
            with serving(model_file, tmp_path / "my-hand", port, live_port):
                browser_api.expect(component.locator("#note")).to_contain_text("Reconnected", timeout=120_000)
                browser_api.expect(text).not_to_contain_text(WORD, timeout=10_000)  # a new session: text over
                browser_api.expect(text).to_contain_text(WORD, timeout=90_000)
            seen = messages_seen(component)
            assert not [message for message in seen if "Error" in message or "futures" in message], seen
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


@pytest.mark.slow
@needs_sample
def test_slow_senders_do_not_keep_a_new_tab_from_spelling(demo):
    """The issue's lock-out, for 60 s: 40 connections each sending a request one byte every 5 s (and connecting
    again when closed), while new tabs open a session every 5 s and spell B."""
    frames = frames_of("B", 6)
    head = "".join(f"{name}: {value}\r\n" for name, value in FROM_PAGE.items())
    slow_request = f"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: 0\r\n\r\n".encode()
    stop = threading.Event()
    with live_endpoint(demo) as server:
        def slow_sender():
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                        for byte in slow_request:
                            client.sendall(bytes([byte]))
                            if stop.wait(5):
                                return
                except OSError:  # closed by the server: connect again
                    pass

        senders = [threading.Thread(target=slow_sender, daemon=True) for _ in range(40)]
        for sender in senders:
            sender.start()
        tabs, end = 0, time.monotonic() + 60
        try:
            while time.monotonic() < end - 5:
                stop.wait(5)
                tab = {**FROM_PAGE, live.PAGE_HEADER: PAGES.issue()}
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                status, answer, _ = request(connection, "/session", headers=tab)
                assert status == 200, answer
                session = answer["session"]
                for frame in frames:
                    status, answer, _ = request(connection, f"/frame?session={session}", frame, tab)
                    assert status == 200, answer
                assert answer["text"] == "B"
                assert request(connection, f"/close?session={session}", headers=tab)[0] == 200
                tabs += 1
        finally:
            stop.set()
            for sender in senders:
                sender.join(timeout=10)
    assert tabs >= 10


def test_a_session_whose_frame_waits_on_the_model_is_not_dropped_as_idle():
    clock, held = Clock(), Held()
    sessions = live.LiveSessions(held, PAGES, idle_seconds=10, clock=clock)
    session = sessions.open(PAGE)["session"]
    with concurrent.futures.ThreadPoolExecutor(1) as page:
        waiting = page.submit(sessions.frame, session, PAGE, jpeg(np.zeros((20, 20, 3), np.uint8)))
        time.sleep(0.2)  # the frame is with the model
        clock.now += 60  # ...for longer than a session may be idle
        sessions.open(PAGES.issue())  # another tab: its opening drops the idle sessions
        assert len(sessions) == 2
        held.release.set()
        with pytest.raises(RuntimeError, match="released"):
            waiting.result()
    assert sessions.clear(session, PAGE) == {"text": ""}  # still there: its frame ended just now
