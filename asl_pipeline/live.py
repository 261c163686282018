"""Spell live: the demo page's webcam stream read frame by frame, spelled as the signs come.

The page shows a small HTML/JS component (live.html) that opens the camera in the browser and posts one
downscaled JPEG frame at a time to a tiny HTTP server in the demo's own process (`LiveServer`, on the page's
host, the port after the page's), waiting for each answer before it sends the next frame: when the model is
slower than the camera, frames are dropped in the browser, never queued on the server. The answer carries the
letter (J or Z read from the motion, as `spell` reads them), the hand's 21 landmarks in frame pixels and the
text spelled so far by a reader kept per session on the server (`LiveSessions`, plain functions on bytes,
testable without a server): the tab's frames are one video, its hand tracked from frame to frame.

Only the demo's page may use the endpoint: every request carries a secret the page gave its component
(`PageSecrets`, in a header, never in the URL) and comes from the page's exact origin; any other site's
request is refused before it costs anything, and the browser keeps the answer from it. Connections are few,
each with a timeout, and frames small, so a flood of requests takes bounded threads and memory.

Why a server of its own rather than Streamlit: a Streamlit widget value reruns the whole page script per
frame, and Streamlit offers no public way to add a route to its own server.
"""
import dataclasses
import hashlib
import hmac
import http.server
import json
import os
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from asl_pipeline import drawing
from asl_pipeline.errors import PipelineError
from asl_pipeline.serve import Stopping
from asl_pipeline.stream import StreamReader
from asl_pipeline.uploads import FRAME, BadUpload, Busy, reading

MAX_SESSIONS = 8  # one model thread serves them all: more open tabs would each get too few frames a second
# A tab closed, or its camera stopped, is forgotten this long after its last frame (a tab that leaves says so
# at once). A tab sends 10 frames a second, and its slowest frames wait a few seconds behind other photos.
IDLE_SECONDS = 10.0
# The speller's window was measured on frames 0.1 s apart (speller.py): the page sends at most this many a
# second, so that a sign is held as long live as in a video.
SPELL_FPS = 10
# Longest side of the frames the page sends: the hand models read 192 x 192 (palm) and 224 x 224 (landmarks)
# crops, so a larger frame only costs sending and decoding.
FRAME_SIDE = 320
JPEG_QUALITY = 0.8  # of the frames the page sends, on canvas.toBlob's scale of 0 to 1
COMPONENT = Path(__file__).with_name("live.html")
COMPONENT_HEIGHT = 640  # pixels of the page the component takes: the 480-pixel-high picture and the text
PAGE_HEADER = "X-Live-Page"  # the page's secret; a header, so no other site's page can send it without asking
# Connections served at once (a tab keeps one or two open); one more is answered "busy" and closed. Each is
# closed after this many seconds without a byte either way: an idle or stalled client does not keep a thread.
MAX_CONNECTIONS = 32
CONNECTION_TIMEOUT = 10
KEY_FILE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asl-pipeline" / "live-page-key"
# How the page may be opened on this machine, for the host names of `--host` 127.0.0.1 (the default).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class LiveError(Exception):
    """A request the live endpoint refuses: the HTTP status, and a message saying what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PageSecrets:
    """The secrets the demo page gives its live component, one per browser tab, checked without being kept: a
    random part and its HMAC under a key of this machine's (page_key), which no other site can make up. With
    the same key after a restart, an open tab's secret still holds and the tab carries on."""

    def __init__(self, key: bytes):
        self._key = key

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._tag(nonce)}"

    def valid(self, secret: str) -> bool:
        nonce, _, tag = secret.partition(".")
        return bool(nonce) and hmac.compare_digest(tag.encode(), self._tag(nonce).encode())

    def _tag(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()


def page_key(path: Path = KEY_FILE) -> bytes:
    """This user's key for page secrets: 32 random bytes made once, readable by this user alone, and kept in
    `path`, so that a live tab still holds a valid secret when the demo restarts."""
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
        path.unlink()  # damaged: made again
    except FileNotFoundError:
        pass
    except OSError as error:
        raise PipelineError(f"cannot read the live page key {path} ({error.strerror or error}): make it readable, or "
                            "remove it (a new one is made)") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(secrets.token_bytes(32))
        try:
            os.link(temporary, path)  # not os.replace: when two demos start at once, the first key made stays
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        return path.read_bytes()
    except OSError as error:
        raise PipelineError(f"cannot write the live page key {path} ({error.strerror or error}): set XDG_CACHE_HOME "
                            "to a folder this user can write") from None


@dataclasses.dataclass
class LiveSession:
    page: str  # the secret of the page that opened it: only that page may use it
    reader: StreamReader  # the tab's camera as one video: its hand track, J and Z from the motion, its speller
    started: float  # clock time of the session's start: the speller's seconds count from here
    last_seen: float
    frames: int = 0


class LiveSessions:
    """The spellers of the live pages open now, fed by frames read on the demo's model thread."""

    def __init__(self, demo, pages: PageSecrets, max_sessions: int = MAX_SESSIONS,
                 idle_seconds: float = IDLE_SECONDS, clock=time.monotonic):
        self.demo = demo
        self.pages = pages
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()  # request threads open, feed and drop sessions concurrently

    def open(self, page: str) -> dict:
        """A new session for the page with secret `page`, its id made here, in place of that page's last one;
        LiveError when MAX_SESSIONS other pages are live already."""
        self._check_page(page)
        now = self.clock()
        with self._lock:
            self._drop_idle(now)
            for session_id in [key for key, session in self._sessions.items() if session.page == page]:
                del self._sessions[session_id]  # one session per page: no page holds more than its own
            if len(self._sessions) >= self.max_sessions:
                raise LiveError(503, f"{self.max_sessions} live pages are open already, which is all this demo "
                                     f"serves at once: close one of them (it is freed within {self.idle_seconds:.0f} "
                                     "s) and this page starts by itself.")
            session_id = secrets.token_urlsafe(16)
            self._sessions[session_id] = LiveSession(page, StreamReader(), now, now)
        return {"session": session_id, "text": ""}

    def frame(self, session_id: str, page: str, data: bytes) -> dict:
        """Read one posted frame and feed it to the session's reader: the reading, the hand, the text."""
        session = self._session(session_id, page)
        try:
            with reading(data, FRAME) as photo:  # a bounded number of frames and photos at once
                analysis = self.demo.analyse(photo, with_heatmaps=False, track=session.reader.track)
        except Busy as problem:
            raise LiveError(503, str(problem)) from None
        except BadUpload as problem:
            raise LiveError(400, f"This frame was not read: {problem}") from None
        with self._lock:
            now = self.clock()
            session.last_seen = now
            read = session.reader.feed(analysis, self.demo.classifier.classes, session.frames, now - session.started)
            session.frames += 1
            text = session.reader.speller.text
        height, width = photo.shape[:2]
        landmarks = None if analysis.hand is None else np.round(analysis.hand.landmarks[:, :2], 1).tolist()
        return {"label": read.label, "probability": round(read.probability, 3), "motion": read.motion,
                "why": read.why, "hand_found": analysis.hand_found, "landmarks": landmarks, "width": width, "height": height,
                "text": text}

    def clear(self, session_id: str, page: str) -> dict:
        """Start the session's text over: a new reader, so that a sign still held is not taken again at once."""
        session = self._session(session_id, page)
        with self._lock:
            session.reader = StreamReader()
        return {"text": ""}

    def close(self, session_id: str, page: str) -> dict:
        """Forget the session now: its tab is leaving, and its place is free for another."""
        self._session(session_id, page)
        with self._lock:
            self._sessions.pop(session_id, None)
        return {}

    def _check_page(self, page: str) -> None:
        if not self.pages.valid(page):
            raise LiveError(403, "This request does not come from the demo's page (no valid page secret): use "
                                 "Spell live on the demo page itself; reload it if the demo was started anew with "
                                 "another key.")

    def _session(self, session_id: str, page: str) -> LiveSession:
        self._check_page(page)
        now = self.clock()
        with self._lock:
            self._drop_idle(now)
            session = self._sessions.get(session_id)
            # Another page's session is answered as one that does not exist: its id alone gives nothing away.
            if session is None or not hmac.compare_digest(session.page.encode(), page.encode()):
                raise LiveError(404, f"This live session is over (the page sent no frame for {self.idle_seconds:.0f} "
                                     "s, or the demo restarted): the page starts a new one.")
            session.last_seen = now  # a slow frame still in the model does not let its session expire
            return session

    def _drop_idle(self, now: float) -> None:
        for session_id in [key for key, session in self._sessions.items()
                           if now - session.last_seen > self.idle_seconds]:
            del self._sessions[session_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


ROUTES = {"/session": lambda sessions, page, query, body: sessions.open(page),
          "/frame": lambda sessions, page, query, body: sessions.frame(query.get("session", ""), page, body),
          "/clear": lambda sessions, page, query, body: sessions.clear(query.get("session", ""), page),
          "/close": lambda sessions, page, query, body: sessions.close(query.get("session", ""), page)}


def page_origins(host: str, page_port: int) -> set:
    """The exact origins (scheme, host, port) the demo page may be opened at: on its port, by this machine's
    loopback names, and by `host` when the page listens on one address. A browser gives the camera only to
    pages at localhost or over HTTPS, so the live page is opened at one of the loopback names anyway."""
    names = set(LOOPBACK_NAMES)
    if host in ("0.0.0.0", "::", ""):  # every address of this machine: by its names, too
        names |= {socket.gethostname(), socket.getfqdn()}
    else:
        names.add(f"[{host}]" if ":" in host else host)
    return {f"http://{name}:{page_port}" for name in names}


def handler_class(sessions: LiveSessions, origins: set):
    class LiveHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a frame does not pay for a new connection
        # The headers and the body go out in two writes: with Nagle's algorithm on, the second waits for the
        # browser's delayed ACK, 40 ms a frame here.
        disable_nagle_algorithm = True
        timeout = CONNECTION_TIMEOUT  # of each read and write on the connection

        def do_OPTIONS(self):  # the CORS preflight the browser sends before posting a frame cross-origin
            self.close_connection = bool(self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"))
            self._send(204, None)

        def do_POST(self):
            try:
                answer, status = self._answer(), 200
            except LiveError as error:
                answer, status = {"error": str(error)}, error.status
            except Stopping:
                answer, status = {"error": "The demo is stopping; this page carries on once it is started again."}, 503
            except (ConnectionError, TimeoutError):
                raise  # the client left: nothing to answer (LiveServer logs one line)
            except Exception as error:  # whatever else goes wrong with one frame, the page hears it, and lives
                answer, status = {"error": f"The demo failed on this frame ({type(error).__name__}: {error}); "
                                           "the terminal running `make demo` may say more."}, 500
            self._send(status, answer)

        def _answer(self) -> dict:
            if self.headers.get("Origin") not in origins:
                self.close_connection = True  # the body, unread, would be taken for the next request
                raise LiveError(403, "Only the demo's own page may use this endpoint: open Spell live on the page.")
            body = self._body()
            url = urllib.parse.urlsplit(self.path)
            route = ROUTES.get(url.path)
            if route is None:
                raise LiveError(404, f"No such live endpoint {url.path}: the page posts to {', '.join(ROUTES)}.")
            return route(sessions, self.headers.get(PAGE_HEADER, ""), dict(urllib.parse.parse_qsl(url.query)), body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):  # chunked: its chunks must not be read as the next request
                self.close_connection = True
                raise LiveError(411, "Post the frame with a Content-Length (as one JPEG body), not in chunks.")
            length = self.headers.get("Content-Length", "0")  # none: no body (a click on Clear)
            if not length.isdigit():
                self.close_connection = True
                raise LiveError(400, f"Content-Length {length!r} is not a number of bytes: post the frame as one "
                                     "JPEG body.")
            if int(length) > FRAME.max_bytes:  # refused before the bytes are read into memory
                self.close_connection = True
                raise LiveError(413, f"The frame is {int(length) / 1024 / 1024:.1f} MB; frames of up to "
                                     f"{FRAME.max_mb:g} MB are read. Send it scaled down.")
            try:
                body = self.rfile.read(int(length))
            except TimeoutError:
                body = b""
            if len(body) < int(length):
                self.close_connection = True
                raise LiveError(408, f"The frame stopped arriving ({len(body)} of {length} bytes in "
                                     f"{CONNECTION_TIMEOUT} s): post it again.")
            return body

        def _send(self, status: int, answer: dict | None) -> None:
            body = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            origin = self.headers.get("Origin")
            if origin in origins:  # any other site's page may not read the answer
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST")
                self.send_header("Access-Control-Allow-Headers", f"Content-Type, {PAGE_HEADER}")
                self.send_header("Vary", "Origin")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # one line per frame would flood the terminal
            pass

    return LiveHandler


_BUSY = json.dumps({"error": "The demo has too many connections open: this page tries again shortly."}).encode()
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))


class BoundedHTTPServer(http.server.HTTPServer):
    """An HTTP server that serves at most `max_connections` connections at once, each on a thread of its own;
    a connection beyond them is answered 503 and closed at once rather than left waiting, and a client that
    leaves mid-request is logged in one line."""

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS):
        super().__init__(address, handler)
        self._free = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._free.acquire(blocking=False):
            try:
                request.setblocking(False)  # the accepting thread never waits on a client
                request.send(BUSY_ANSWER)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        # Daemon threads: a browser holding a keep-alive connection does not hold up the demo's exit.
        threading.Thread(target=self._serve, args=(request, client_address), name="live-connection",
                         daemon=True).start()

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._free.release()

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            # One write: print's two (the text, then the newline) interleave between threads.
            sys.stderr.write(f"live: a client at {client_address[0]}:{client_address[1]} left mid-request "
                             f"({type(error).__name__})\n")
            sys.stderr.flush()
        else:
            super().handle_error(request, client_address)


class LiveServer:
    """The live endpoint on (host, port; 0: any free one), answering the page at `page_origins(host,
    page_port)` on threads of its own until closed."""

    def __init__(self, sessions: LiveSessions, host: str, port: int, page_port: int,
                 max_connections: int = MAX_CONNECTIONS):
        self.sessions = sessions
        self._server = BoundedHTTPServer((host, port), handler_class(sessions, page_origins(host, page_port)),
                                         max_connections)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="live", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def component_html(live_port: int, page_secret: str) -> str:
    """The live component's page, configured: the endpoint's port, the page's secret, the frame size and rate,
    the skeleton. The secret goes in the page, never in a URL, so it is in no log or history."""
    config = {"port": live_port, "secret": page_secret, "header": PAGE_HEADER, "frameSide": FRAME_SIDE,
              "jpegQuality": JPEG_QUALITY, "fps": SPELL_FPS, "connections": drawing.HAND_CONNECTIONS}
    return COMPONENT.read_text(encoding="utf-8").replace("/*CONFIG*/null", json.dumps(config))
