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
import asyncio
import concurrent.futures
import dataclasses
import hashlib
import hmac
import http
import http.client
import io
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
# Connections open at once (a tab keeps one or two). Each costs a buffer of at most one frame, not a thread: the
# event loop reads requests whole before a worker answers them. One more takes the place of the one that has waited
# longest for its request; only when all are being answered is it told the demo is busy.
MAX_CONNECTIONS = 64
# A request must arrive whole within this many seconds of the last answer (or of the connection's opening), else the
# connection is closed (with a 408 when part of a body came): a client idle or sending a byte every few seconds
# holds its place no longer than this.
CONNECTION_TIMEOUT = 10
# Threads answering requests read whole, one per connection at most: each waits up to uploads.BUSY_SECONDS for a
# work slot and is then answered, read or busy (an idle or slow connection holds none).
WORKERS = MAX_CONNECTIONS
MAX_HEAD_BYTES = 16 * 1024  # of a request's line and headers (the page sends some 600 bytes)
BACKLOG = 128  # connections the system holds before they are accepted: a burst of tabs is not refused by it
BUSY_READ_SECONDS = 2  # a connection told the demo is busy: its headers (for its Origin) are awaited this long
BUSY_MESSAGE = ("The demo is busy: every one of its connections is answering a frame. This page tries again in a "
                "second.")
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
    reading: int = 0  # its frames being read now: a session waiting on the model is not idle


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
        with self._lock:
            session.reading += 1
        try:
            with reading(data, FRAME) as photo:  # a bounded number of frames and photos at once
                analysis = self.demo.analyse(photo, with_heatmaps=False, track=session.reader.track)
        except Busy as problem:
            raise LiveError(503, str(problem)) from None
        except BadUpload as problem:
            raise LiveError(400, f"This frame was not read: {problem}") from None
        finally:
            with self._lock:
                session.reading -= 1
                session.last_seen = self.clock()  # idle from the end of its last frame, read or not
        with self._lock:
            now = self.clock()
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
                           if now - session.last_seen > self.idle_seconds and not session.reading]:
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


class Request:
    """One request read whole from a connection: its method, path, headers and body."""

    def __init__(self, method: str, target: str, headers, body: bytes = b""):
        self.method, self.target, self.headers, self.body = method, target, headers, body
        self.origin = headers.get("Origin")


def respond(sessions: LiveSessions, origins: set, request: Request) -> tuple:
    """(HTTP status, JSON answer or None) for a request read whole; run on a worker thread (a frame waits for the
    model)."""
    if request.method == "OPTIONS":  # the CORS preflight the browser sends before posting a frame cross-origin
        return 204, None
    try:
        if request.origin not in origins:
            raise LiveError(403, "Only the demo's own page may use this endpoint: open Spell live on the page.")
        url = urllib.parse.urlsplit(request.target)
        route = ROUTES.get(url.path)
        if route is None:
            raise LiveError(404, f"No such live endpoint {url.path}: the page posts to {', '.join(ROUTES)}.")
        return 200, route(sessions, request.headers.get(PAGE_HEADER, ""), dict(urllib.parse.parse_qsl(url.query)),
                          request.body)
    except LiveError as error:
        return error.status, {"error": str(error)}
    except Stopping:
        return 503, {"error": "The demo is stopping; this page carries on once it is started again."}
    except Exception as error:  # whatever else goes wrong with one frame, the page hears it, and lives
        return 500, {"error": f"The demo failed on this frame ({type(error).__name__}: {error}); the terminal "
                              "running `make demo` may say more."}


def answer_bytes(status: int, answer: dict | None, origin: str | None, origins: set, close: bool) -> bytes:
    """The whole HTTP answer, headers and body, to go out in one write: readable by the page's origin alone."""
    body = b"" if answer is None else json.dumps(answer).encode()
    headers = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "Content-Type: application/json",
               f"Content-Length: {len(body)}", "Cache-Control: no-store"]
    if origin in origins:  # any other site's page may not read the answer
        headers += [f"Access-Control-Allow-Origin: {origin}", "Access-Control-Allow-Methods: POST",
                    f"Access-Control-Allow-Headers: Content-Type, {PAGE_HEADER}", "Vary: Origin"]
    if close:
        headers.append("Connection: close")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body


class Refused(Exception):
    """A request refused while it is read: answered with this status and message, then the connection closed
    (what follows its headers, unread, would be taken for the next request)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_head(reader) -> tuple:
    """(method, target, headers, HTTP version) of the next request; None when the client closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise Refused(431, f"The request's headers pass {MAX_HEAD_BYTES // 1024} KB: send a frame as the page "
                           "does.") from None
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise Refused(400, "Not an HTTP/1.1 request: the live endpoint answers the demo page's requests.")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:  # more than 100 headers, or a line too long
        raise Refused(431, "The request's headers are more than the demo page sends: send a frame as the page "
                           "does.") from None
    return parts[0], parts[1], headers, parts[2]


async def read_body(reader, headers, read: list) -> bytes:
    """The request's body, as its one Content-Length says; `read` counts the bytes come so far, for the message
    of a body that stops arriving."""
    if headers.get("Transfer-Encoding"):  # chunked: its chunks must not be read as the next request
        raise Refused(411, "Post the frame with a Content-Length (as one JPEG body), not in chunks.")
    lengths = headers.get_all("Content-Length") or ["0"]  # none: no body (a click on Clear)
    if len(lengths) > 1:  # two lengths: which one ends the body is the question request smuggling asks
        raise Refused(400, "The request has more than one Content-Length: post the frame with one.")
    length = lengths[0].strip()
    if not length.isdigit():
        raise Refused(400, f"Content-Length {length!r} is not a number of bytes: post the frame as one JPEG body.")
    if int(length) > FRAME.max_bytes:  # refused before the bytes are read into memory
        raise Refused(413, f"The frame is {int(length) / 1024 / 1024:.1f} MB; frames of up to {FRAME.max_mb:g} MB "
                           "are read. Send it scaled down.")
    body = bytearray()
    read[:] = [0, int(length)]
    while len(body) < int(length):
        chunk = await reader.read(int(length) - len(body))
        if not chunk:
            raise ConnectionResetError("the client closed the connection mid-body")
        body += chunk
        read[0] = len(body)
    return bytes(body)


class Connection:
    """One client connection: read a request whole on the event loop, answered on a worker thread, then the next."""

    def __init__(self, server: "LiveServer", reader, writer):
        self.server, self.reader, self.writer = server, reader, writer
        self.waiting_since: float | None = time.monotonic()  # None while a request of its is being answered
        self.client = writer.get_extra_info("peername") or ("?", 0)
        self.closed_by_server = False  # for a newer connection, or as the demo stops: nothing to log

    async def serve(self) -> None:
        try:
            while await self._one_request():
                pass
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            if not self.closed_by_server:
                self.server.log(f"live: a client at {self.client[0]}:{self.client[1]} left mid-request "
                                f"({type(error).__name__})")
        finally:
            self.close()

    def close(self) -> None:
        self.writer.transport.abort()

    async def _one_request(self) -> bool:
        """Read, answer; False when the connection is to close."""
        self.waiting_since, read, origin = time.monotonic(), [0, 0], None
        try:
            async with asyncio.timeout(CONNECTION_TIMEOUT):
                head = await read_head(self.reader)
                if head is None:
                    return False
                method, target, headers, version = head
                origin = headers.get("Origin")
                body = await read_body(self.reader, headers, read)  # a preflight's too: never read as a request
        except TimeoutError:
            if read[1]:  # its body had begun: say how much came
                await self._send(408, {"error": f"The frame stopped arriving ({read[0]} of {read[1]} bytes in "
                                                f"{CONNECTION_TIMEOUT:g} s): post it again."}, origin, close=True)
            return False  # idle, or stalled in its headers: closed
        except Refused as refusal:
            await self._send(refusal.status, {"error": str(refusal)}, origin, close=True)
            return False
        close = version == "HTTP/1.0" or headers.get("Connection", "").lower() == "close"
        self.waiting_since = None
        status, answer = await asyncio.get_running_loop().run_in_executor(
            self.server.workers, respond, self.server.sessions, self.server.origins,
            Request(method, target, headers, body))
        await self._send(status, answer, origin, close)
        return not close

    async def _send(self, status: int, answer: dict | None, origin: str | None, close: bool) -> None:
        self.writer.write(answer_bytes(status, answer, origin, self.server.origins, close))
        await self.writer.drain()


class LiveServer:
    """The live endpoint on (host, port; 0: any free one), answering the page at `page_origins(host, page_port)`
    until closed.

    One event-loop thread reads every connection's requests, each whole before a worker thread (of WORKERS)
    answers it: a client that sends slowly, or nothing, costs a buffer and no thread, and is closed once its
    request takes CONNECTION_TIMEOUT. At most `max_connections` are open; one more takes the place of the
    connection that has waited longest for its request (idle, or stalled mid-request), and only when every one
    is being answered is it told, readably, that the demo is busy.
    """

    def __init__(self, sessions: LiveSessions, host: str, port: int, page_port: int,
                 max_connections: int = MAX_CONNECTIONS):
        self.sessions = sessions
        self.origins = page_origins(host, page_port)
        self.max_connections = max_connections
        self.workers = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="live-answer")
        self._connections: set = set()
        self._told_busy = 0  # connections being told the demo is busy
        self._loop = asyncio.new_event_loop()
        # Bound here, so that a port in use is an OSError of the constructor, as the demo reports it.
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._accept, host, port, limit=MAX_HEAD_BYTES, backlog=BACKLOG))
        self.port = self._server.sockets[0].getsockname()[1]
        # A daemon thread: a browser holding a keep-alive connection does not hold up the demo's exit.
        self._thread = threading.Thread(target=self._loop.run_forever, name="live", daemon=True)
        self._thread.start()

    async def _accept(self, reader, writer) -> None:
        connection = Connection(self, reader, writer)
        if len(self._connections) >= self.max_connections and not self._make_room():
            if self._told_busy >= self.max_connections:  # a flood of connections: no answer is owed to each
                connection.close()
                return
            self._told_busy += 1
            try:
                await self._busy(connection)
            finally:
                self._told_busy -= 1
            return
        self._connections.add(connection)
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its request; False when every one is being answered."""
        waiting = [one for one in self._connections if one.waiting_since is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda one: one.waiting_since)
        self._connections.discard(oldest)
        oldest.closed_by_server = True
        oldest.close()
        return True

    async def _busy(self, connection: Connection) -> None:
        """Tell a connection over the bound that the demo is busy, in an answer its page can read (with the CORS
        header, so its Origin is read first), then close it without resetting it."""
        origin = None
        try:
            async with asyncio.timeout(BUSY_READ_SECONDS):
                head = await read_head(connection.reader)
                origin = head[2].get("Origin") if head else None
        except (TimeoutError, Refused, ConnectionError, asyncio.IncompleteReadError):
            pass
        try:
            await connection._send(503, {"error": BUSY_MESSAGE}, origin, close=True)
            connection.writer.write_eof()
            async with asyncio.timeout(BUSY_READ_SECONDS):  # what the client still sends (its body), read and
                while await connection.reader.read(65536):  # dropped: closing with it unread would reset the
                    pass                                    # connection before the client reads the answer
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            connection.close()

    def log(self, line: str) -> None:
        # One write: print's two (the text, then the newline) interleave between threads.
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        async def stop():
            self._server.close()
            for connection in list(self._connections):
                connection.closed_by_server = True
                connection.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.workers.shutdown(wait=False, cancel_futures=True)


def component_html(live_port: int, page_secret: str) -> str:
    """The live component's page, configured: the endpoint's port, the page's secret, the frame size and rate,
    the skeleton. The secret goes in the page, never in a URL, so it is in no log or history."""
    config = {"port": live_port, "secret": page_secret, "header": PAGE_HEADER, "frameSide": FRAME_SIDE,
              "jpegQuality": JPEG_QUALITY, "fps": SPELL_FPS, "connections": drawing.HAND_CONNECTIONS}
    return COMPONENT.read_text(encoding="utf-8").replace("/*CONFIG*/null", json.dumps(config))
