"""The explorer's web app: FastAPI on uvicorn, a JSON API (documented at /docs and in
docs/explorer.md) and one page (static/) that uses it.

Safe by default:

* it binds 127.0.0.1 unless told otherwise, and answers only requests whose Host header names
  this machine (a web page elsewhere cannot reach it through DNS rebinding);
* request bodies are capped before they are read (a clear 413 in JSON), and so are texts
  (--max-text-bytes, 1 MB by default);
* it serves only its own static files, from a list made when it starts: no path from a
  request ever reaches the file system;
* every error is JSON, {"error": message}, with its status: 400 bad input, 404 unknown model,
  activation, unit or page, 413 too large, 422 a malformed request, 500 a bug.
"""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

from pydantic import BaseModel, Field

from rnnlens.errors import RnnlensError
from rnnlens.explorer.engine import Explorer, NotFound, TooLarge

STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
JSON_OVERHEAD = 65536   # bytes of a request beyond its text: field names, numbers
ESCAPE_FACTOR = 6       # a character may take up to 6 bytes in JSON (\\uXXXX)
SMALL_TEXT = 20_000      # characters: longer open texts get the windowed corpus page at /
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY")]
# the page loads nothing from elsewhere (FastAPI's own /docs page does: Swagger UI from a CDN)
PAGE_POLICY = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"


# Request bodies (their fields and descriptions make the OpenAPI schema at /openapi.json)

class InterventionIn(BaseModel):
    name: str | None = Field(None, description="activation of the unit, e.g. layer0.cell (default as in /api/trace)")
    unit: int = Field(0, description="unit index, from 0")
    mode: str = Field("ablate", description="ablate (set to 0), clamp (hold at value), clamp_low / clamp_high (hold "
                                            "at the unit's minimum / maximum over the text; /api/intervene only)")
    value: float | None = Field(None, description="the value for clamp")


class TextIn(BaseModel):
    text: str = Field(description="the text the model reads, from its zero state")
    model: str | None = Field(None, description="model key from /api/models (default: the first)")


class TraceIn(TextIn):
    name: str | None = Field(None, description="activation, e.g. layer0.cell (default: the last layer's "
                                                  "cell for an LSTM, else its hidden state)")
    unit: int = Field(0, description="unit index, from 0")
    intervention: InterventionIn | None = Field(None, description="read the text with this unit ablated or clamped")


class UnitsIn(TextIn):
    top: int = Field(3, description="best units per feature")


class SelectIn(TextIn):
    name: str | None = None
    start: int = Field(description="first character of the span")
    end: int = Field(description="one past the span's last character")
    threshold: float = Field(0.5, description="a unit is on where its shown value (tanh(c) for cells) >= this")


class MatchIn(SelectIn):
    units: list[int] | None = Field(None, description="units to match (default: those /api/select finds)")
    top: int = Field(10, description="how many places to return")
    min_score: float = Field(0.5, description="drop places whose score is below this")


class PredictIn(TextIn):
    position: int = Field(description="character after which to predict")
    before: int = Field(0, description="also the characters before it (strip)")
    after: int = Field(0, description="also the characters after it (strip)")
    top: int = 5
    intervention: InterventionIn | None = Field(None, description="predict with this unit ablated or clamped")


class SampleIn(BaseModel):
    model: str | None = None
    prime: str = Field("", description="text to start from (default: a newline)")
    temperature: float = Field(1.0, description="> 0; lower is more conservative")
    length: int = Field(200, description="characters to generate")
    seed: int | None = Field(None, description="for a reproducible sample")
    steer: list[str] = Field([], description="units clamped while sampling, as `rnnlens sample --steer`: "
                             "LAYER:UNIT=VALUE or NAME:UNIT=VALUE, e.g. 1:42=0.9")
    intervention: InterventionIn | None = Field(None, description="sample with this unit ablated or clamped "
                                                "(mode ablate or clamp with a value)")


class SampleFields(BaseModel):
    prime: str = ""
    temperature: float = 1.0
    length: int = 200
    seed: int | None = None


class InterveneIn(TextIn):
    intervention: InterventionIn = Field(description="the unit to ablate or clamp at every position")
    show_name: str | None = Field(None, description="the activation to colour (default: the intervention's)")
    show_unit: int | None = Field(None, description="the unit to colour (default: the intervention's)")
    start: int = Field(0, alias="from", description="first character of the window returned")
    stop: int | None = Field(None, alias="to", description="one past its last (default: the text's end; at most "
                                                        "50,000 characters)")
    position: int | None = Field(None, description="the prediction strip around this character (default: none)")
    before: int = 14
    after: int = 14
    top: int = 5
    sample: SampleFields | None = Field(None, description="also a sample with the edit (default: none)")


class EditIn(BaseModel):
    start: int = Field(alias="from", description="first character replaced")
    stop: int = Field(alias="to", description="one past the last character replaced")
    insert: str = Field("", description="the new characters")
    upto: int | None = Field(None, description="re-trace now up to this position (default: 20,000 past the "
                                               "edit); the rest is traced in the background")

class SpanIn(BaseModel):
    model: str | None = None
    name: str | None = None
    start: int = Field(alias="from")
    stop: int = Field(alias="to")
    threshold: float = 0.5

class RunMatchIn(BaseModel):
    model: str | None = None
    name: str | None = None
    units: list[int]
    threshold: float = 0.5
    min_length: int = Field(description="shortest span")
    max_length: int = Field(description="longest span")
    before: int = Field(1, description="characters before the span where the unit must be off")
    after: int = Field(1, description="characters after the span where the unit must be off")
    min_units: int = 1
    top: int = 50
    bins: int = Field(400, description="parts of the minimap histogram")


def _spec(intervention: InterventionIn | None) -> dict | None:
    return intervention.model_dump() if intervention is not None else None


def static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, media type) for the page's files, read once: the only files ever served.
    rnnlens.css is made from rnnlens.render.html's CSS, so colours match the static views exactly."""
    from rnnlens.render.html import CSS
    files = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix]) for p in sorted(STATIC.iterdir())
             if p.is_file() and p.suffix in STATIC_TYPES}
    files["rnnlens.css"] = (CSS.encode("utf-8"), STATIC_TYPES[".css"])
    return files


def error_body(status: int, message: str, headers=()) -> tuple[dict, bytes]:
    body = json.dumps({"error": message}).encode("utf-8")
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *headers]},
            body)


class Guard:
    """ASGI middleware, outermost: the Host check, the body cap and the security headers."""

    def __init__(self, app, *, max_body: int, allowed_hosts: tuple[str, ...] | None):
        self.app, self.max_body, self.allowed_hosts = app, max_body, allowed_hosts

    async def reject(self, send, status: int, message: str) -> None:
        start, body = error_body(status, message, SECURITY_HEADERS)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.allowed_hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
            if name not in self.allowed_hosts:
                return await self.reject(send, 400, f"this explorer answers only requests for "
                                         f"{', '.join(self.allowed_hosts)}; got Host {host!r}")
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            return await self.reject(send, 400, "the Content-Length header is not a number")
        if declared > self.max_body:
            return await self.reject(send, 413, self.too_large(declared))
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    from starlette.exceptions import HTTPException
                    raise HTTPException(413, self.too_large(received))
            return message

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)

    def too_large(self, size: int) -> str:
        return (f"the request is {size:,} bytes or more; this explorer reads at most {self.max_body:,} "
                "(its text limit, --max-text-bytes, plus room for JSON): send a shorter text")


def create_app(explorer: Explorer, *, allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS):
    """The ASGI app: API routes, the page, JSON errors, wrapped in the Guard.
    allowed_hosts: Host header names answered (None: any, for a server bound to a public address)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    files = static_files()
    # no /docs or /redoc: FastAPI serves Swagger UI and ReDoc only from a CDN, which breaks offline;
    # the schema stays at /openapi.json and the endpoints are described in docs/explorer.md
    app = FastAPI(title="rnnlens explorer", version="2", docs_url=None, redoc_url=None,
                  description="See inside character-level RNN, LSTM and GRU language models: activations of any unit "
                              "over any text, units ranked by the features they track, LSTMVis-style select and "
                              "match, next-character predictions and sampling. Errors are {\"error\": message}.")

    def fail(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound):
        return fail(404, str(e))

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, e: TooLarge):
        return fail(413, str(e))

    @app.exception_handler(RnnlensError)
    async def bad_input(request: Request, e: RnnlensError):
        return fail(400, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        if e.status_code == 404 and e.detail == "Not Found":
            return fail(404, f"no such page: {request.url.path}; the page is /, the API is under /api (see /openapi.json)")
        if e.status_code == 405:
            return fail(405, f"{request.method} is not allowed on {request.url.path}; see /openapi.json for the methods")
        return fail(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "the request body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return fail(422, "malformed request: " + "; ".join(parts[:5]) + " (see /openapi.json for the fields)")

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception):
        return fail(500, f"internal error ({type(e).__name__}: {e}); please report it")

    ex = explorer

    @app.get("/api/models", summary="the models, the default text and the limits")
    def models():
        return ex.info()

    @app.post("/api/trace", summary="one unit's activation over the text")
    def trace(req: TraceIn):
        return ex.unit_values(req.model, req.text, req.name, req.unit, _spec(req.intervention))

    @app.post("/api/units", summary="units ranked by the features of the text they track")
    def units(req: UnitsIn):
        ex.check_text(req.text)
        return ex.ranked_units(req.model, req.text, req.top)

    @app.post("/api/select", summary="the units on across a span (LSTMVis select)")
    def select(req: SelectIn):
        return ex.select(req.model, req.text, req.name, req.start, req.end, req.threshold)

    @app.post("/api/match", summary="other places where the selected units are on, ranked")
    def match(req: MatchIn):
        units = req.units
        if units is None:
            units = ex.select(req.model, req.text, req.name, req.start, req.end, req.threshold)["units"]
        return ex.match(req.model, req.text, req.name, units, req.threshold, req.start, req.end, req.top,
                        req.min_score)

    @app.post("/api/predict", summary="the most likely next characters after a position")
    def predict(req: PredictIn):
        return ex.predict(req.model, req.text, req.position, before=req.before, after=req.after, top=req.top,
                          edit=_spec(req.intervention))

    @app.post("/api/sample", summary="sample from a model")
    def sample(req: SampleIn):
        return ex.sample(req.model, req.prime, req.temperature, req.length, req.seed, req.steer,
                         edit=_spec(req.intervention))

    @app.post("/api/intervene", summary="the text read with one unit ablated or clamped: loss change, colours, "
                                        "predictions, a sample")
    def intervene(req: InterveneIn):
        return ex.intervene(req.model, req.text, _spec(req.intervention), show_name=req.show_name,
                            show_unit=req.show_unit, start=req.start, stop=req.stop, position=req.position,
                            before=req.before, after=req.after, top=req.top,
                            sample=req.sample.model_dump() if req.sample else None)

    from fastapi import Query

    @app.get("/api/status", summary="the open text: its length, how much is traced, the last edit")
    def status():
        return ex.doc_status()

    @app.get("/api/text", summary="characters from..to of the open text")
    def text(start: int = Query(0, alias="from"), stop: int = Query(..., alias="to")):
        return ex.doc_text(start, stop)

    @app.get("/api/window", summary="one unit over characters from..to: float16 base64 values and colour levels")
    def window(start: int = Query(..., alias="from"), stop: int = Query(..., alias="to"), unit: int = 0,
               name: str | None = None, model: str | None = None):
        return ex.doc_window(model, name, unit, start, stop)

    @app.get("/api/lines", summary="many units over characters from..to (line plot): float16 [n, k] base64")
    def lines(start: int = Query(..., alias="from"), stop: int = Query(..., alias="to"), name: str | None = None,
              model: str | None = None, units: str | None = Query(None, description="comma-separated; default all")):
        chosen = [int(u) for u in units.split(",") if u.strip()] if units else None
        return ex.doc_lines(model, name, start, stop, chosen)

    @app.get("/api/tracks", summary="annotation tracks over from..to: features, loss per character, labels")
    def tracks(start: int = Query(..., alias="from"), stop: int = Query(..., alias="to"), model: str | None = None):
        return ex.doc_tracks(model, start, stop)

    @app.get("/api/next", summary="the most likely next characters after one position of the open text")
    def next_chars(position: int, model: str | None = None, top: int = 5):
        return ex.doc_predict(model, position, top)

    @app.post("/api/edit", summary="replace from..to of the open text; re-traces from the checkpoint before it")
    def edit(req: EditIn):
        return ex.doc_edit(req.start, req.stop, req.insert, req.upto)

    @app.post("/api/corpus/select", summary="the units on across from..to of the open text")
    def corpus_select(req: SpanIn):
        return ex.doc_select(req.model, req.name, req.start, req.stop, req.threshold)

    @app.post("/api/corpus/match", summary="LSTMVis match over the whole open text, ranked, with a histogram")
    def corpus_match(req: RunMatchIn):
        return ex.doc_match(req.model, req.name, req.units, req.threshold, min_length=req.min_length,
                            max_length=req.max_length, before=req.before, after=req.after,
                            min_units=req.min_units, top=req.top, bins=req.bins)

    def static(name: str) -> Response:
        if name not in files:
            return fail(404, f"no such file: {name}")
        content, media = files[name]
        return Response(content, media_type=media, headers={"cache-control": "no-cache",
                                                                 "content-security-policy": PAGE_POLICY})

    @app.get("/", include_in_schema=False)
    def index():
        # a long open text gets the corpus view (windowed); a short one the editor over the whole text
        if ex.docs and len(next(iter(ex.docs.values()))) > SMALL_TEXT:
            return static("corpus.html")
        return static("index.html")

    @app.get("/corpus", include_in_schema=False)
    def corpus_page():
        return static("corpus.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        return static(name)

    max_body = ESCAPE_FACTOR * explorer.max_text_bytes + JSON_OVERHEAD
    guarded = Guard(app, max_body=max_body, allowed_hosts=allowed_hosts)
    guarded.fastapi = app
    return guarded


def check_port(host: str, port: int) -> None:
    """Fail before serving, in one line with the fix, when the port cannot be bound."""
    if not 0 <= port <= 65535:
        raise RnnlensError(f"--port must be 0..65535; got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise RnnlensError(f"port {port} on {host} is already in use (another rnnlens serve?); stop that "
                                   f"program or choose another port, e.g. --port {suggest_port(host, port)}") from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise RnnlensError(f"no permission to use port {port}; choose one above 1023, e.g. --port 8000") \
                    from None
            raise RnnlensError(f"cannot listen on {host}:{port} ({e.strerror or e}); check --host") from None


def suggest_port(host: str, port: int) -> int:
    """The first free port after `port` (of the next 20), else any free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port + 1, min(port + 21, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, candidate))
                return candidate
            except OSError:
                continue
    return free_port(host)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning") -> None:
    """Run the explorer until Ctrl-C (the port is checked first)."""
    import uvicorn
    check_port(host, port)
    app = create_app(explorer, allowed_hosts=tuple(dict.fromkeys((*LOCAL_HOSTS, host))) if is_local(host) else None)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
