"""Spell live: the demo page's webcam stream read frame by frame, spelled as the signs come.

The page shows a small HTML/JS component (live.html) that opens the camera in the browser and posts one
downscaled JPEG frame at a time to a tiny HTTP server in the demo's own process (`LiveServer`, on the page's
host, a port of its own), waiting for each answer before it sends the next frame: when the model is slower
than the camera, frames are dropped in the browser, never queued on the server. The answer carries the
letter (J or Z read from the motion, as `spell` reads them), the hand's 21 landmarks in frame pixels and the
text spelled so far by a reader kept per session on the server (`LiveSessions`, plain functions on bytes,
testable without a server): the tab's frames are one video, its hand tracked from frame to frame.

Why a server of its own rather than Streamlit: a Streamlit widget value reruns the whole page script per
frame, and Streamlit offers no public way to add a route to its own server.
"""
import dataclasses
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from asl_pipeline import drawing
from asl_pipeline.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, BadUpload, read_photo
from asl_pipeline.stream import StreamReader

MAX_SESSIONS = 8  # one model thread serves them all: more open tabs would each get too few frames a second
IDLE_SECONDS = 60.0  # a tab closed (or its camera stopped) is forgotten this long after its last frame
# The speller's window was measured on frames 0.1 s apart (speller.py): the page sends at most this many a
# second, so that a sign is held as long live as in a video.
SPELL_FPS = 10
# Longest side of the frames the page sends: the hand models read 192 x 192 (palm) and 224 x 224 (landmarks)
# crops, so a larger frame only costs sending and decoding.
FRAME_SIDE = 320
JPEG_QUALITY = 0.8  # of the frames the page sends, on canvas.toBlob's scale of 0 to 1
COMPONENT = Path(__file__).with_name("live.html")
COMPONENT_HEIGHT = 640  # pixels of the page the component takes: the 480-pixel-high picture and the text


class LiveError(Exception):
    """A request the live endpoint refuses: the HTTP status, and a message saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class LiveSession:
    reader: StreamReader  # the tab's camera as one video: its hand track, J and Z from the motion, its speller
    started: float  # clock time of the session's start: the speller's seconds count from here
    last_seen: float
    frames: int = 0


class LiveSessions:
    """The spellers of the live pages open now, fed by frames read on the demo's model thread."""

    def __init__(self, demo, max_sessions: int = MAX_SESSIONS, idle_seconds: float = IDLE_SECONDS,
                 clock=time.monotonic):
        self.demo = demo
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()  # request threads open, feed and drop sessions concurrently

    def open(self) -> dict:
        """A new session, its id made here; LiveError when MAX_SESSIONS are live already."""
        now = self.clock()
        with self._lock:
            self._drop_idle(now)
            if len(self._sessions) >= self.max_sessions:
                raise LiveError(503, f"{self.max_sessions} live pages are open already, which is all this demo "
                                     "serves at once: close one of them (or wait a minute after closing it) and "
                                     "reload this page.")
            session_id = secrets.token_urlsafe(16)
            self._sessions[session_id] = LiveSession(StreamReader(), now, now)
        return {"session": session_id, "text": ""}

    def frame(self, session_id: str, data: bytes) -> dict:
        """Read one posted frame and feed it to the session's speller: the reading, the hand, the text."""
        session = self._session(session_id)
        try:
            photo = read_photo(data)
        except BadUpload as problem:
            raise LiveError(400, f"This frame was not read: {problem}") from None
        analysis = self.demo.analyse(photo, with_heatmaps=False, track=session.reader.track)
        with self._lock:
            now = self.clock()
            session.last_seen = now
            reading = session.reader.feed(analysis, self.demo.classifier.classes, session.frames,
                                          now - session.started)
            session.frames += 1
            text = session.reader.speller.text
        height, width = photo.shape[:2]
        landmarks = None if analysis.hand is None else np.round(analysis.hand.landmarks[:, :2], 1).tolist()
        return {"label": reading.label, "probability": round(reading.probability, 3), "motion": reading.motion,
                "hand_found": analysis.hand_found, "landmarks": landmarks, "width": width, "height": height,
                "text": text}

    def clear(self, session_id: str) -> dict:
        """Start the session's text over: a new reader, so that a sign still held is not taken again at once."""
        session = self._session(session_id)
        with self._lock:
            session.reader = StreamReader()
        return {"text": ""}

    def _session(self, session_id: str) -> LiveSession:
        now = self.clock()
        with self._lock:
            self._drop_idle(now)
            session = self._sessions.get(session_id)
            if session is None:
                raise LiveError(404, "This live session is over (the page was idle for a minute, or the demo "
                                     "restarted): the page starts a new one.")
            session.last_seen = now  # a slow frame still in the model does not let its session expire
            return session

    def _drop_idle(self, now: float) -> None:
        for session_id in [key for key, session in self._sessions.items()
                           if now - session.last_seen > self.idle_seconds]:
            del self._sessions[session_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


ROUTES = {"/session": lambda sessions, query, body: sessions.open(),
          "/frame": lambda sessions, query, body: sessions.frame(query.get("session", ""), body),
          "/clear": lambda sessions, query, body: sessions.clear(query.get("session", ""))}


def allowed_origin(origin: str | None, page_port: int) -> str | None:
    """The Origin header to allow cross-origin requests from: the demo page's own (any host name of this
    machine, on the page's port); None for any other site, which must not spend this model's time."""
    if not origin:
        return None
    try:
        parsed = urllib.parse.urlsplit(origin)
        port = parsed.port
    except ValueError:
        return None
    return origin if parsed.scheme in ("http", "https") and port == page_port else None


def handler_class(sessions: LiveSessions, page_port: int):
    class LiveHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a frame does not pay for a new connection
        # The headers and the body go out in two writes: with Nagle's algorithm on, the second waits for the
        # browser's delayed ACK, 40 ms a frame here.
        disable_nagle_algorithm = True

        def do_OPTIONS(self):  # the CORS preflight the browser sends before posting a JPEG cross-origin
            self._send(204, None)

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            try:
                route = ROUTES.get(url.path)
                if route is None:
                    raise LiveError(404, f"No such live endpoint {url.path}: the page posts to "
                                         f"{', '.join(ROUTES)}.")
                self._send(200, route(sessions, query, self._body()))
            except LiveError as error:
                self._send(error.status, {"error": str(error)})
            except Exception as error:  # whatever else goes wrong with one frame, the page hears it, and lives
                self._send(500, {"error": f"The demo failed on this frame ({type(error).__name__}: {error}); "
                                          "the terminal running `make demo` may say more."})

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length", "0")  # none: no body (a click on Clear)
            if not length.isdigit():
                raise LiveError(400, f"Content-Length {length!r} is not a number of bytes: post the frame as one "
                                     "JPEG body.")
            if int(length) > MAX_UPLOAD_BYTES:  # refused before the bytes are read into memory
                self.close_connection = True  # the unread body would be taken for the next request
                raise LiveError(413, f"The frame is {int(length) / 1024 / 1024:.1f} MB; frames of up to "
                                     f"{MAX_UPLOAD_MB} MB are read. Send it scaled down.")
            return self.rfile.read(int(length))

        def _send(self, status: int, answer: dict | None) -> None:
            body = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            origin = allowed_origin(self.headers.get("Origin"), page_port)
            if origin:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST")
                self.send_header("Access-Control-Allow-Headers", "Content-Type")
                self.send_header("Vary", "Origin")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # one line per frame would flood the terminal
            pass

    return LiveHandler


class LiveServer:
    """The live endpoint on (host, any free port), answering in threads of its own until closed."""

    def __init__(self, sessions: LiveSessions, host: str, page_port: int):
        self.sessions = sessions
        self._server = http.server.ThreadingHTTPServer((host, 0), handler_class(sessions, page_port))
        self._server.daemon_threads = True  # a browser holding a keep-alive connection does not block exit
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="live", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def component_html(live_port: int) -> str:
    """The live component's page, configured: the endpoint's port, the frame size and rate, the skeleton."""
    config = {"port": live_port, "frameSide": FRAME_SIDE, "jpegQuality": JPEG_QUALITY, "fps": SPELL_FPS,
              "connections": drawing.HAND_CONNECTIONS}
    return COMPONENT.read_text(encoding="utf-8").replace("/*CONFIG*/null", json.dumps(config))
