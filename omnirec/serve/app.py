"""The HTTP API: `create_app(ServeConfig(...))` returns a FastAPI app whose lifespan loads the bundle (nothing
is loaded at import). Write and admin endpoints need the API key (header `X-API-Key`, compared in
constant time); without a configured key they are refused. Every error is a JSON body with a `detail`
message and a 4xx status, or a 500 without internals.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from omnirec.serve.service import ItemExists, NotFound, Service
from omnirec.serve.store import Event, IdempotencyConflict, StoreUnavailable, UserDeleted, open_store

log = logging.getLogger("omnirec.serve")
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no NUL or other control characters (PostgreSQL text cannot hold NUL)
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=PRINTABLE)]


@dataclass(frozen=True)
class ServeConfig:
    """bundle: folder written by `omnirec train`; scenarios: TOML (default: built-in `home` and `similar`);
    store: SQLite path or PostgreSQL URL; api_key: required by writes ("" = writes refused)."""

    bundle: str
    store: str = "omnirec-events.db"
    scenarios: str = ""
    api_key: str = ""
    max_k: int = 100
    max_history: int = 500
    max_body_bytes: int = 256 * 1024
    threads: int = 1  # torch threads; one request at a time per process is fastest on small CPUs (0 = leave)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: Id | None = None
    items: list[Id] | None = Field(None, max_length=500, description="an anonymous history, oldest first")
    scenario: Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE)] = "home"
    k: int = Field(10, ge=1, le=100)
    exclude: list[Id] | None = Field(None, max_length=1000, description="items never to list in this answer")


class Listed(BaseModel):
    item: str
    title: str | None = Field(description="the catalogue's title; null where it has none")
    score: float | None
    sources: list[str]
    reason: str


class Seen(BaseModel):
    item: str
    title: str | None


class RecommendResponse(BaseModel):
    user: str | None
    scenario: str
    model: str
    bundle: str
    personalized: bool = Field(description="built from the user's (or the given) history; false: the fallback list")
    reason: str | None = Field(description="why the list is not personalized (null when it is)")
    history: list[Seen] = Field(description="the most recent items of the history used, newest first")
    items: list[Listed]


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: Id
    item: Id
    type: Literal["view", "click", "purchase", "rating", "skip"] = "click"
    value: float | None = Field(None, ge=-1e9, le=1e9)
    time: int | None = Field(None, ge=0, le=10**12, description="Unix seconds; default: when stored")
    key: Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)] | None = Field(None, description="idempotency key")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[FeedbackEvent] = Field(min_length=1, max_length=1000)


class FeedbackResponse(BaseModel):
    stored: int
    duplicates: int


class ItemResponse(BaseModel):
    item: str
    title: str | None
    interactions: int
    text: str | None


class DeleteResponse(BaseModel):
    user: str
    events_removed: int


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundle: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class ReloadResponse(BaseModel):
    bundle: str
    model: str
    items: int


class ItemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(min_length=1, max_length=20_000, pattern=r"\S")]  # words, not only blanks
    title: Annotated[str, Field(max_length=1_000)] | None = None


class AddedResponse(BaseModel):
    item: str
    items: int


class ErrorBody(BaseModel):
    detail: str | list[dict]


def _errors(*codes: int) -> dict[int, dict]:
    """OpenAPI entries for the error statuses a route can answer."""
    return {code: {"model": ErrorBody} for code in codes}


READ_ERRORS = _errors(400, 404, 413, 422)
WRITE_ERRORS = _errors(400, 401, 403, 404, 413, 422)
FEEDBACK_ERRORS = _errors(400, 401, 403, 404, 409, 410, 413, 422, 503)


class Health(BaseModel):
    status: str
    model: str
    items: int
    users: int
    loaded_at: float


def get_service(request: Request) -> Service:
    """The app's service (a dependency of every endpoint)."""
    return request.app.state.service


Svc = Annotated[Service, Depends(get_service)]


def _metrics(registry: CollectorRegistry) -> dict:
    return {
        "requests": Counter("omnirec_requests", "HTTP requests", ["path", "status"], registry=registry),
        "latency": Histogram("omnirec_request_seconds", "request latency", ["path"], registry=registry,
                             buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)),
        "events": Counter("omnirec_feedback_events", "feedback events stored", registry=registry),
        "reloads": Counter("omnirec_reloads", "bundle swaps", registry=registry),
        "items": Gauge("omnirec_catalogue_items", "items in the loaded bundle", registry=registry),
    }


class RedactUserPaths(logging.Filter):
    """Access-log lines name `/users/{id}` paths without the id, so a log file written after a deletion
    does not hold the deleted id (uvicorn's access record: client, method, path, version, status).

    >>> record = logging.LogRecord("uvicorn.access", 20, "", 0, '%s "%s %s"', ("1.2.3.4", "DELETE", "/users/u42", "1.1", 200), None)
    >>> RedactUserPaths().filter(record), record.args[2]
    (True, '/users/<redacted>')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and args[2].startswith("/users/"):
            record.args = (*args[:2], "/users/<redacted>", *args[3:])
        return True


def create_app(config: ServeConfig) -> FastAPI:
    """The app; the bundle is loaded when the server starts (lifespan), not here."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactUserPaths) for f in access.filters):
        access.addFilter(RedactUserPaths())
    registry = CollectorRegistry()
    metrics = _metrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        if config.threads:
            torch.set_num_threads(config.threads)
        store = open_store(config.store)
        app.state.service = Service(config.bundle, store, config.scenarios or None, config.max_k, config.max_history)
        metrics["items"].set(len(app.state.service.current.bundle.items))
        yield
        store.close()

    app = FastAPI(title="omnirec", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Recommendations with reasons, feedback, deletion and model swap.")

    _add_middleware(app, config, metrics)
    _add_error_handlers(app, config)
    _read_routes(app, config)
    _write_routes(app, config, metrics)
    _operations_routes(app, registry)
    _docs_routes(app)
    return app


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """Connection limits for uvicorn: request head (line + headers) at most 16 KiB, idle keep-alive
    connections closed after 5 s, at most 1,000 open connections per process (more are answered 503);
    with several workers, one still loading its bundle on a busy machine is given 60 s before it is
    judged hung (uvicorn's default of 5 s killed workers mid-load)."""
    return {"h11_max_incomplete_event_size": MAX_HEAD_BYTES, "timeout_keep_alive": 5, "limit_concurrency": 1000,
            "timeout_worker_healthcheck": 60}


DOCS = "/docs"  # Swagger UI, served from an installed package: it works offline
DOCS_PATHS = (f"{DOCS}/static", DOCS, "/openapi.json")  # longest first: the first prefix that matches names it
MAX_HEAD_BYTES = 16 * 1024
MAX_REQUESTS_PER_CONNECTION = 1000


def _read_routes(app: FastAPI, config: ServeConfig) -> None:
    # Reads are short and CPU-bound: they run on the event loop one at a time (threads would only fight
    # over the GIL and the CPU). So does feedback: one commit is about a millisecond, and in the thread pool
    # a write waited for the GIL behind the loop's reads until connections piled up (measured: a soak at
    # 70% of capacity collapsed). Deletion and reload, rare and long, run in the thread pool.
    @app.post("/recommend", response_model=RecommendResponse, responses=READ_ERRORS)
    async def recommend(body: RecommendRequest, svc: Svc) -> dict:
        # an anonymous visitor without history is answered by the scenario's fallback chain
        return svc.recommend(body.user, body.items, body.scenario, min(body.k, config.max_k), body.exclude)

    @app.get("/items/{item_id}", response_model=ItemResponse, responses=READ_ERRORS)
    async def item(item_id: Id, svc: Svc) -> dict:
        return svc.item(item_id)

    @app.get("/items/{item_id}/similar", response_model=RecommendResponse, responses=READ_ERRORS)
    async def similar(item_id: Id, svc: Svc, k: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
        return svc.similar(item_id, k)


def _write_routes(app: FastAPI, config: ServeConfig, metrics: dict) -> None:
    async def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if not config.api_key:
            raise HTTPException(403, "writes are disabled: the server was started without an API key")
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), config.api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key")

    keyed = [Depends(require_key)]

    @app.post("/feedback", response_model=FeedbackResponse, dependencies=keyed, responses=FEEDBACK_ERRORS)
    async def feedback(body: FeedbackRequest, svc: Svc,
                       idempotency_key: Annotated[str | None, Header(max_length=200, pattern=PRINTABLE)] = None) -> dict:
        events = [Event(e.user, e.item, e.type, e.value, e.time or 0,
                        e.key or (f"{idempotency_key}:{i}" if idempotency_key else None))
                  for i, e in enumerate(body.events)]
        result = svc.feedback(events)
        metrics["events"].inc(result["stored"])
        return result

    @app.get("/admin/key", status_code=204, dependencies=keyed, responses=_errors(401, 403))
    def check_key() -> Response:
        """204 when the X-API-Key is right: lets a client check its key before a long job (retrain --reload)."""
        return Response(status_code=204)

    @app.put("/items/{item_id}", response_model=AddedResponse, dependencies=keyed,
             responses={**WRITE_ERRORS, **_errors(409)})
    def add_item(item_id: Id, body: ItemRequest, svc: Svc) -> dict:
        """A new item, by its text: recommendable at once (models that score text), kept for every server
        process and the next retraining."""
        result = svc.add_item(item_id, body.text, body.title)
        metrics["items"].set(result["items"])
        return result

    @app.delete("/users/{user_id}", response_model=DeleteResponse, dependencies=keyed, responses=WRITE_ERRORS)
    def delete_user(user_id: Id, svc: Svc) -> dict:
        return svc.delete_user(user_id)

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=keyed, responses=WRITE_ERRORS)
    def reload(svc: Svc, body: ReloadRequest | None = None) -> dict:
        path = body.bundle if body is not None else None
        if path is not None and not (Path(path) / "bundle.json").exists():
            raise HTTPException(404, f"{path}: no bundle there (no bundle.json)")
        result = svc.reload(path)
        metrics["reloads"].inc()
        metrics["items"].set(result["items"])
        return result


def _operations_routes(app: FastAPI, registry: CollectorRegistry) -> None:
    @app.get("/health", response_model=Health)
    def health(svc: Svc) -> dict:
        b = svc.current.bundle
        return {"status": "ok", "model": b.model.name, "items": len(b.items), "users": len(b.users),
                "loaded_at": svc.current.loaded_at}

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((Path(__file__).parent / "page.html").read_text(encoding="utf-8"))


def app_from_env() -> FastAPI:
    """The app configured by $OMNIREC_SERVE_CONFIG (a JSON ServeConfig): what each uvicorn worker process
    builds when `omnirec serve --workers N` runs several."""
    return create_app(ServeConfig(**json.loads(os.environ["OMNIREC_SERVE_CONFIG"])))


def _add_middleware(app: FastAPI, config: ServeConfig, metrics: dict) -> None:
    # Starlette counts the body's bytes as they stream in and stops reading past the limit (a chunked body
    # is never buffered whole; its 413 comes through the HTTP error handler as JSON). It sits inside the
    # middleware below, which refuses a declared length over the limit before anything is read.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=config.max_body_bytes)
    served: dict[tuple, int] = {}  # requests answered per open connection (client address and port)

    @app.middleware("http")
    async def bounded_and_measured(request: Request, call_next):  # noqa: ANN001, ANN202
        head = sum(len(name) + len(value) for name, value in request.scope["headers"])
        if head > MAX_HEAD_BYTES:  # uvicorn bounds a head that arrives in pieces; this bounds one that came whole
            return JSONResponse({"detail": f"request headers over {MAX_HEAD_BYTES} bytes"}, status_code=431)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return JSONResponse({"detail": f"request body over {config.max_body_bytes} bytes"}, status_code=413)
        start = time.perf_counter()
        response = await call_next(request)
        metrics["requests"].labels(_path_label(request), str(response.status_code)).inc()
        metrics["latency"].labels(_path_label(request)).observe(time.perf_counter() - start)
        if request.client is not None:  # after so many requests on one connection, ask the client to reconnect
            peer = (request.client.host, request.client.port)
            served[peer] = served.get(peer, 0) + 1
            if served[peer] >= MAX_REQUESTS_PER_CONNECTION:
                response.headers["connection"] = "close"
                del served[peer]
            if len(served) > 4 * MAX_REQUESTS_PER_CONNECTION:  # forget connections long gone
                served.clear()
        return response


def _path_label(request: Request) -> str:
    """The route's path template for metrics (`/items/{item_id}`), the docs' own paths, else "unmatched"."""
    route = request.scope.get("route")
    if route is not None:
        return getattr(route, "path", "unmatched")
    path = request.url.path
    return next((p for p in DOCS_PATHS if path == p or path.startswith(p + "/")), "unmatched")


def _add_error_handlers(app: FastAPI, config: ServeConfig) -> None:
    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(ItemExists)
    async def exists(request: Request, exc: ItemExists) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(UserDeleted)
    async def deleted(request: Request, exc: UserDeleted) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"detail": str(exc)}, status_code=410)

    @app.exception_handler(IdempotencyConflict)
    async def conflict(request: Request, exc: IdempotencyConflict) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("feedback refused on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"{exc}; nothing of this request was stored, retry later"}, status_code=503,
                            headers={"retry-after": "30"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # noqa: ARG001
        detail = f"request body over {config.max_body_bytes} bytes" if exc.status_code == 413 else exc.detail
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"detail": str(exc.args[0]) if exc.args else "bad request"}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:  # noqa: ARG001
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def _docs_routes(app: FastAPI) -> None:
    """Swagger UI from the files the fastapi-offline package ships (a release that reads OpenAPI 3.1)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(f"{DOCS}/static", StaticFiles(directory=assets), name="docs-static")

    @app.get(DOCS, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="omnirec API",
                                   swagger_js_url=f"{DOCS}/static/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS}/static/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS}/static/favicon.png")


def serve(config: ServeConfig, host: str, port: int, workers: int = 1, quiet: bool = False) -> None:
    """Run the API with uvicorn until stopped; with several `workers`, each process builds its app from
    the environment (`app_from_env`) and they share the event store."""
    import uvicorn

    level = "warning" if quiet else "info"
    if workers > 1:
        os.environ["OMNIREC_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
        uvicorn.run("omnirec.serve.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=level, **uvicorn_options(config))
    else:
        uvicorn.run(create_app(config), host=host, port=port, log_level=level, **uvicorn_options(config))
