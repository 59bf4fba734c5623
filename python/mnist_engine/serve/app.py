"""The server as an ASGI application (Starlette): the Open Inference Protocol's REST endpoints over
the models it was given, each behind a dynamic batcher, and the draw-a-digit page at `/`.

Every refusal is a 4xx with a JSON body {"error": "..."} (the protocol's error form, which
tritonclient shows to its user); a request never gets past its checks into the engine unless its
rows are exactly what predict takes. Bodies are read with a size limit (413) and a deadline (408),
so a client that sends slowly, or without end, holds a connection but never the server.

Under overload the server answers 503 with Retry-After rather than taking on more than it bounds
(admission.py): the bytes of bodies being read and decoded, the rows queued per model, and how
long a request may wait. Health, metadata and /metrics take none of those paths and stay fast.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .. import __version__, answers
from .._core import Engine
from .admission import BodyBudget, Overloaded, RowQueue, default_queue_bytes
from .batcher import DynamicBatcher
from .decoding import Decoder
from .hosts import LOOPBACK_NAMES, HostAllowList
from .metrics import Metrics
from .protocol import (
    ModelSignature,
    RequestError,
    datatype_of,
    encode_infer_response,
    error_body,
    output_name,
)

JSON = "application/json"
WATCH_ROWS = 16  # requests of this many rows or more are dropped if their client leaves while queued


@dataclass(frozen=True)
class Limits:
    max_batch: int = 256  # rows per predict call
    max_delay: float = 0.001  # seconds a batch waits for more requests after its first
    max_body: int = 8 << 20  # bytes; 64 images as JSON are ~200 KB
    body_timeout: float = 10.0  # seconds to receive a whole body
    allow_any_range: bool = False  # answer FP32 input far outside the model's checked range (else 400)
    # Overload bounds (admission.py); None takes the default named beside it.
    max_queue_rows: Optional[int] = None  # rows queued per model: 64 x max_batch
    max_queue_bytes: Optional[int] = None  # bytes of those rows: an eighth of memory, at most 256 MiB
    max_queue_wait: float = 1.0  # seconds a request may wait for the body budget, and again in the queue
    body_budget: Optional[int] = None  # bytes of the requests being worked on: 4 x max_body
    decode_processes: int = 1  # worker processes decoding large JSON bodies

    def resolved(self) -> "Limits":
        """These limits with every default filled in."""
        return dataclasses.replace(
            self,
            max_queue_rows=self.max_queue_rows or 64 * self.max_batch,
            max_queue_bytes=self.max_queue_bytes or default_queue_bytes(_total_memory()),
            body_budget=self.body_budget or 4 * self.max_body)


def _total_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not on this platform
        return None


@dataclass
class ServedModel:
    engine: Engine
    signature: ModelSignature
    limits: Limits
    queue: RowQueue
    on_batch: Optional[Callable[[int], None]] = None
    batchers: Dict[str, DynamicBatcher] = field(default_factory=dict)

    def batcher(self, datatype: str) -> DynamicBatcher:
        """One batcher per input datatype: uint8 and float32 rows never share a predict call."""
        batcher = self.batchers.get(datatype)
        if batcher is None:
            batcher = DynamicBatcher(self.engine, self.limits.max_batch, self.limits.max_delay,
                                     f"{self.signature.name}-{datatype}", on_batch=self.on_batch)
            batcher.start()
            self.batchers[datatype] = batcher
        return batcher


def _json(payload: bytes, status: int = 200, headers: Optional[Mapping[str, str]] = None) -> Response:
    return Response(payload, status_code=status, media_type=JSON, headers=headers)


def _error(status: int, message: str) -> Response:
    return _json(error_body(message), status)


def body_size(request: Request, limits: Limits) -> int:
    """The bytes the body will take at most: its declared length, or the limit when it is sent
    chunked. RequestError 413 (declared too large) or 415 (compressed) before a byte is read."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise RequestError(415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return limits.max_body
    if int(declared) > limits.max_body:
        raise RequestError(413, f"the body is {int(declared)} bytes; the limit is {limits.max_body} (--max-body)")
    return int(declared)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, or RequestError 413 (too large) or 408 (too slow)."""
    chunks = []
    size = 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body:
                raise RequestError(413, f"the body is over the limit of {limits.max_body} bytes (--max-body)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), limits.body_timeout)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the body did not arrive within {limits.body_timeout:g} s "
                                f"({size} bytes came)") from None
    return b"".join(chunks)


async def unless_disconnected(request: Request, future: "asyncio.Future[np.ndarray]") -> np.ndarray:
    """`future`'s result; if the client goes away first, the future is cancelled (a batcher drops
    a cancelled request's rows before computing them) and ClientDisconnect raised."""
    async def disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnect())
    watch.add_done_callback(lambda w: w.cancelled() or future.cancel())
    try:
        return await future
    except asyncio.CancelledError:
        if watch.done() and not watch.cancelled():
            raise ClientDisconnect() from None
        raise
    finally:
        watch.cancel()


def check_input_range(engine: Engine, rows: np.ndarray) -> None:
    """RequestError 400 for FP32 rows far outside (or far inside) the range the model was checked on:
    the sentence a local predict would warn with. Per request, before batching, so one client's
    unscaled pixels never fail another's rows."""
    problem = engine.input_range_problem(float(rows.min()), float(rows.max()))
    if problem:
        raise RequestError(400, f"{problem} (this server refuses such input; --allow-any-range answers it)")


def _page(models: Mapping[str, Optional[int]], default: str) -> str:
    """The draw-a-digit page: a picker of `models` (name -> its reject class or None), `default`
    chosen, posting to the one picked."""
    text = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    def script(value) -> str:  # a JSON value inside <script>: no "</script>" can close it early
        return json.dumps(value).replace("<", "\\u003c")

    # The names are the operator's, but they still go in as data: escaped for HTML, JSON in the script.
    return (text.replace("{{MODEL_HTML}}", html.escape(default)).replace("{{MODEL_JSON}}", script(default))
            .replace("{{MODELS_JSON}}", script(dict(models)))
            .replace("{{MIN_CONFIDENCE}}", script(answers.DEFAULT_MIN_CONFIDENCE)))


def create_app(models: Mapping[str, Engine], limits: Limits = Limits(),
               on_startup: Optional[Callable[[], None]] = None,
               hosts: Sequence[str] = LOOPBACK_NAMES, page_model: Optional[str] = None) -> Starlette:
    """An ASGI app serving `models` (name -> Engine) over the Open Inference Protocol; `on_startup`
    runs when the server starts the app (uvicorn's signal handlers are in place by then); requests
    for a Host not in `hosts` (hosts.allowed_hosts) get 421. The draw-a-digit page offers every
    model, `page_model` (default: the first) chosen."""
    if not models:
        raise ValueError("at least one model is needed")
    if page_model is not None and page_model not in models:
        raise ValueError(f"the page's model {page_model!r} is not served; served models: {', '.join(models)}")
    limits = limits.resolved()
    metrics = Metrics(models, limits.max_batch)
    served = {name: ServedModel(engine, ModelSignature(name, engine.input_width, engine.output_width,
                                                       output_name(engine.output_kind),
                                                       reject_class=engine.reject_class,
                                                       output_kind=engine.output_kind,
                                                       pixels=engine.input_kind == "pixels"), limits,
                                RowQueue(limits.max_queue_rows, limits.max_queue_bytes),
                                on_batch=metrics.batch_observer(name))
              for name, engine in models.items()}
    for name, model in served.items():
        metrics.watch_queue(name, lambda q=model.queue: q.rows, lambda q=model.queue: q.requests)
    budget = BodyBudget(limits.body_budget)
    metrics.watch_budget(lambda: budget.in_use, lambda: budget.waiting, budget.capacity)
    decoder = Decoder(limits.decode_processes)
    page = _page({name: engine.reject_class for name, engine in models.items()}, page_model or next(iter(served)))

    def model_of(request: Request) -> ServedModel:
        name = request.path_params["name"]
        model = served.get(name)
        if model is None:
            raise RequestError(404, f"model {name!r} is not served; served models: {', '.join(served)}")
        version = request.path_params.get("version")
        if version is not None and version != model.signature.version:
            raise RequestError(404, f"model {name!r} has no version {version!r}; its version is "
                                    f"{model.signature.version!r}")
        return model

    async def server_metadata(_: Request) -> Response:
        return _json(json.dumps({"name": "mnist-engine", "version": __version__,
                                 "extensions": ["binary_tensor_data"]}).encode())

    async def live(_: Request) -> Response:
        return _json(b'{"live":true}')

    async def ready(_: Request) -> Response:
        return _json(b'{"ready":true}')

    async def model_metadata(request: Request) -> Response:
        return _json(json.dumps(model_of(request).signature.metadata()).encode())

    async def model_ready(request: Request) -> Response:
        model = model_of(request)
        return _json(json.dumps({"name": model.signature.name, "ready": True}).encode())

    async def infer(request: Request) -> Response:
        """The infer endpoint, counted in /metrics whatever its answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        name = request.path_params["name"]
        status, reason = 500, None
        try:
            response = await infer_admitted(request)
            status = response.status_code
            return response
        except RequestError as e:
            status, reason = e.status, getattr(e, "reason", None)
            raise
        except ClientDisconnect:
            status = 499  # nginx's name for it: the client closed the connection before the answer
            raise
        finally:
            metrics.answered(name if name in served else "", status, loop.time() - started, reason)

    async def infer_admitted(request: Request) -> Response:
        """Waits for the body budget (--max-queue-ms at most), then holds it until the answer is
        computed: the budget bounds the bodies being received, decoded and the rows they became,
        all together, so that what the server takes on past this point it finishes."""
        model = model_of(request)
        size = body_size(request, limits)
        await budget.acquire(size, limits.max_queue_wait)
        try:
            model.queue.check_room()  # before reading: a refusal after the read would waste it
            return await infer_budgeted(request, model)
        finally:
            budget.release(size)

    async def infer_budgeted(request: Request, model: ServedModel) -> Response:
        """Read -> decode -> the model's queue bound -> batcher -> answer. A request waits in the
        model's queue for --max-queue-ms at most."""
        loop = asyncio.get_running_loop()
        body = await read_body(request, limits)
        decoded = await decoder.decode(body, request.headers.get("inference-header-content-length"), model.signature)
        del body
        rows = decoded.rows
        if rows.dtype == np.float32 and not limits.allow_any_range:
            check_input_range(model.engine, rows)
        model.queue.admit(len(rows), rows.nbytes, retry_after=limits.max_queue_wait)
        try:
            deadline = loop.time() + limits.max_queue_wait
            future = model.batcher(datatype_of(rows)).submit(rows, deadline)
            # Watching for the client leaving costs a task; worth it where the rows are many, or
            # will wait behind a full batch: a few rows computed at once cost less than the watch.
            watched = len(rows) >= WATCH_ROWS or model.queue.rows > limits.max_batch
            outputs = await (unless_disconnected(request, future) if watched else future)
        except (RequestError, ClientDisconnect):
            raise
        except Exception as e:  # the batch failed (logged by the batcher); later requests are served
            raise RequestError(500, f"internal error computing this request's batch ({type(e).__name__}: {e}); "
                                    "the server goes on") from None
        finally:
            model.queue.leave(len(rows), rows.nbytes)
        payload, header_length = encode_infer_response(outputs, decoded, model.signature,
                                                       model.engine.to_probabilities)
        if header_length is None:
            return _json(payload)
        return Response(payload, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    async def index(_: Request) -> Response:
        return HTMLResponse(page)

    async def scrape(request: Request) -> Response:
        payload, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(payload, headers={"Content-Type": content_type})

    async def refused(_: Request, exc: RequestError) -> Response:
        return _json(error_body(str(exc)), exc.status, exc.headers if isinstance(exc, Overloaded) else None)

    async def http_error(_: Request, exc: HTTPException) -> Response:
        message = {404: "no such endpoint; see GET /v2 and the Open Inference Protocol's REST paths",
                   405: "this endpoint does not take that method"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message)

    async def disconnected(_: Request, exc: ClientDisconnect) -> Response:
        return _error(400, "the client closed the connection before its answer")  # nobody reads it

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        if on_startup is not None:
            on_startup()
        yield
        for model in served.values():
            for batcher in model.batchers.values():
                await batcher.stop()
        await decoder.close()

    model_paths = ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]
    routes = [Route("/", index, methods=["GET"]),
              Route("/v2", server_metadata, methods=["GET"]),
              Route("/v2/health/live", live, methods=["GET"]),
              Route("/v2/health/ready", ready, methods=["GET"]),
              Route("/metrics", scrape, methods=["GET"])]
    for path in model_paths:
        routes += [Route(path, model_metadata, methods=["GET"]),
                   Route(path + "/ready", model_ready, methods=["GET"]),
                   Route(path + "/infer", infer, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(HostAllowList, hosts=hosts)],
                    exception_handlers={RequestError: refused, HTTPException: http_error,
                                        ClientDisconnect: disconnected})
    app.state.models = served
    app.state.metrics = metrics
    app.state.budget = budget
    app.state.decoder = decoder
    return app
