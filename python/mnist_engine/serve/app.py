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
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Dict, Mapping, Optional, Sequence, TextIO

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .. import __version__, answers
from .._core import Engine
from .access_log import ROWS_KEY, AccessLog
from .admission import BodyBudget, Hold, RowQueue, default_queue_bytes
from .batcher import DynamicBatcher
from .decoding import Decoder
from .hosts import LOOPBACK_NAMES, HostAllowList
from .image_requests import answer_body, image_parts, is_image_request, read_images
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
    min_body_rate: float = 32 << 10  # bytes/s a body must keep up after its first second (0: no minimum)
    allow_any_range: bool = False  # answer FP32 input far outside the model's checked range (else 400)
    # Overload bounds (admission.py); None takes the default named beside it.
    max_queue_rows: Optional[int] = None  # rows queued per model: 64 x max_batch
    max_queue_bytes: Optional[int] = None  # bytes of those rows: an eighth of memory, at most 256 MiB
    max_queue_wait: float = 1.0  # seconds a request may wait for the body budget, and again in the queue
    # Bytes of the requests being worked on: 4 x max_body. A request holds at most max_body of it,
    # and it must hold two: one connection never holds it all.
    body_budget: Optional[int] = None
    decode_processes: int = 1  # worker processes decoding costly JSON bodies (decoding.costly_json)
    decode_memory: Optional[int] = None  # bytes each may grow by (more: 413): 256 MiB, or 32 x max_body

    def resolved(self) -> "Limits":
        """These limits with every default filled in; ValueError for a body budget that cannot hold
        two bodies of max_body."""
        limits = dataclasses.replace(
            self,
            max_queue_rows=self.max_queue_rows or 64 * self.max_batch,
            max_queue_bytes=self.max_queue_bytes or default_queue_bytes(_total_memory()),
            body_budget=self.body_budget or 4 * self.max_body,
            decode_memory=self.decode_memory or max(256 << 20, 32 * self.max_body))
        if limits.decode_memory < 4 * limits.max_body:
            raise ValueError(f"a decoding process must be allowed at least 4 x --max-body ({4 * limits.max_body} "
                             f"bytes) to hold a body and its copies; --decode-memory is {limits.decode_memory}")
        if limits.body_budget < 2 * limits.max_body:
            raise ValueError(f"the body budget ({limits.body_budget} bytes, --body-budget) must hold at least two "
                             f"bodies of the largest size ({limits.max_body} bytes, --max-body), so that one "
                             "connection cannot hold all of it")
        return limits


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


def check_body_headers(request: Request, limits: Limits) -> None:
    """RequestError 413 (declared too large) or 415 (compressed) before a byte is read."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise RequestError(415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise RequestError(413, f"the body is {int(declared)} bytes; the limit is {limits.max_body} (--max-body)")


async def receive_within(request: Request, seconds: float) -> dict:
    """The request's next ASGI message, or asyncio.TimeoutError after `seconds`. asyncio.timeout
    where there is one (3.11): wait_for would start a task for every piece of every body."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await request.receive()
    return await asyncio.wait_for(request.receive(), seconds)


RATE_GRACE = 1.0  # seconds a body may take before the minimum receive rate applies
BUDGET_WINDOW = 1 << 20  # bytes of the body budget a request takes ahead of its body's bytes


async def read_body(request: Request, limits: Limits, hold: Hold) -> bytes:
    """The request body, its bytes taken from the body budget as they arrive (`hold`: a window of
    BUDGET_WINDOW ahead of them, at most what the body declared), or:
    RequestError 413 (too large), 408 (the whole body not within --body-timeout, or its bytes
    behind --min-body-rate after the first second), Overloaded 503 (no budget within
    --max-queue-ms). Time spent waiting for the budget counts against neither client limit: the
    server was not reading."""
    loop = asyncio.get_running_loop()
    chunks = []
    received = 0
    waited = 0.0  # seconds spent waiting for the budget, not for the client
    started = loop.time()
    declared = request.headers.get("content-length")
    left = int(declared) if declared is not None and declared.isdigit() else limits.max_body  # not yet taken

    async def take(size: int) -> None:
        nonlocal waited, left
        before = loop.time()
        await hold.take(size, limits.max_queue_wait - waited)
        waited += loop.time() - before
        left = max(0, left - size)

    more = True
    try:
        while more:
            # The window before the bytes: nothing is pulled from the connection without budget for
            # it, so a waiting request's client is held back by TCP, not by our memory.
            if received >= hold.bytes and left:
                await take(min(BUDGET_WINDOW, left))
            receiving = loop.time() - started - waited
            allowed, limit = limits.body_timeout - receiving, "whole"
            if limits.min_body_rate:
                behind = RATE_GRACE + received / limits.min_body_rate - receiving  # seconds until it falls behind
                if behind < allowed:
                    allowed, limit = behind, "rate"
            try:
                message = await receive_within(request, max(allowed, 0.0))
            except asyncio.TimeoutError:
                if limit == "rate":
                    raise RequestError(408, f"the body came at {received / max(receiving, 1e-9):.0f} bytes/s "
                                            f"({received} bytes in {receiving:.1f} s); the least this server takes "
                                            f"is {limits.min_body_rate:.0f} bytes/s (--min-body-rate)",
                                       close=True) from None
                raise RequestError(408, f"the body did not arrive within {limits.body_timeout:g} s "
                                        f"({received} bytes came)", close=True) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk, more = message.get("body", b""), message.get("more_body", False)
            if received + len(chunk) > limits.max_body:
                # Not closed: the rest of the body is read and dropped (by the HTTP layer, holding
                # no budget), so that a client still sending sees this answer rather than a reset.
                raise RequestError(413, f"the body is over the limit of {limits.max_body} bytes (--max-body)")
            if received + len(chunk) > hold.bytes:  # past the window: a chunked body's last window
                await take(received + len(chunk) - hold.bytes)
            received += len(chunk)
            chunks.append(chunk)
        hold.give_back(hold.bytes - received)  # a window the body did not fill
        return b"".join(chunks)
    finally:
        # asyncio's timeouts leave this frame in reference cycles (task -> exception -> traceback
        # -> frame) that live until the garbage collector runs: they must not keep the body alive.
        chunks.clear()


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
               hosts: Sequence[str] = LOOPBACK_NAMES, page_model: Optional[str] = None,
               access_log: Optional[TextIO] = None) -> Starlette:
    """An ASGI app serving `models` (name -> Engine) over the Open Inference Protocol; `on_startup`
    runs when the server starts the app (uvicorn's signal handlers are in place by then); requests
    for a Host not in `hosts` (hosts.allowed_hosts) get 421. The draw-a-digit page offers every
    model, `page_model` (default: the first) chosen. With `access_log`, a line per request is
    written to it (access_log.py)."""
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
    decoder = Decoder(limits.decode_processes, limits.max_queue_wait, limits.decode_memory)
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
        """Takes the body budget as the body arrives (--max-queue-ms of waiting at most) and holds
        it until the answer is computed: the budget bounds the bodies being received, decoded and
        the rows they became, all together, so that what the server takes on it finishes."""
        model = model_of(request)
        check_body_headers(request, limits)
        model.queue.check_room()  # before reading: a refusal after the read would waste it
        hold = budget.hold()
        try:
            return await infer_budgeted(request, model, hold)
        finally:
            hold.release()

    async def infer_budgeted(request: Request, model: ServedModel, hold: Hold) -> Response:
        """Read -> decode -> the model's queue bound -> batcher -> answer. A request waits in the
        model's queue for --max-queue-ms at most."""
        body = await read_body(request, limits, hold)
        if is_image_request(request.headers.get("content-type", "")):
            return await infer_images(request, model, body)
        decoded = await decoder.decode(body, request.headers.get("inference-header-content-length"), model.signature)
        del body
        rows = decoded.rows
        request.scope[ROWS_KEY] = len(rows)  # for the access log
        if rows.dtype == np.float32 and not limits.allow_any_range:
            check_input_range(model.engine, rows)
        outputs = await computed(request, model, rows)
        payload, header_length = encode_infer_response(outputs, decoded, model.signature,
                                                       model.engine.to_probabilities)
        if header_length is None:
            return _json(payload)
        return Response(payload, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    async def computed(request: Request, model: ServedModel, rows: np.ndarray) -> np.ndarray:
        """The model's outputs for `rows`, through its queue bound and its batcher."""
        model.queue.admit(len(rows), rows.nbytes, retry_after=limits.max_queue_wait)
        try:
            deadline = asyncio.get_running_loop().time() + limits.max_queue_wait
            future = model.batcher(datatype_of(rows)).submit(rows, deadline)
            # Watching for the client leaving costs a task; worth it where the rows are many, or
            # will wait behind a full batch: a few rows computed at once cost less than the watch.
            watched = len(rows) >= WATCH_ROWS or model.queue.rows > limits.max_batch
            return await (unless_disconnected(request, future) if watched else future)
        except (RequestError, ClientDisconnect):
            raise
        except Exception as e:  # the batch failed (logged by the batcher); later requests are served
            raise RequestError(500, f"internal error computing this request's batch ({type(e).__name__}: {e}); "
                                    "the server goes on") from None
        finally:
            model.queue.leave(len(rows), rows.nbytes)

    async def infer_images(request: Request, model: ServedModel, body: bytes) -> Response:
        """Encoded images (image_requests.py): read on a thread, then batched as UINT8 rows; the
        answer is `mnist-engine predict`'s for each image."""
        signature = model.signature
        if not signature.pixels or signature.input_width != 28 * 28:
            raise RequestError(400, f"model {signature.name!r} reads {signature.input_width} "
                                    f"{'pixels' if signature.pixels else 'features'}, not 28x28 images; "
                                    "send it tensors")
        parts = await image_parts(body, request.headers, limits.max_batch)
        del body
        rows, blank = await asyncio.to_thread(read_images, parts)
        request.scope[ROWS_KEY] = len(parts)  # for the access log
        outputs = await computed(request, model, rows) if len(rows) else np.zeros((0, signature.output_width),
                                                                                   np.float32)
        engine = model.engine
        names = answers.output_labels(engine.classes, signature.output_width, engine.reject_class)
        return _json(answer_body(signature.name, signature.version, parts, blank, engine.to_probabilities(outputs),
                                 names, engine.reject_class, answers.DEFAULT_MIN_CONFIDENCE))

    async def index(_: Request) -> Response:
        return HTMLResponse(page)

    async def scrape(request: Request) -> Response:
        payload, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(payload, headers={"Content-Type": content_type})

    async def refused(_: Request, exc: RequestError) -> Response:
        return _json(error_body(str(exc)), exc.status, exc.headers)

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
    middleware = [Middleware(AccessLog, stream=access_log)] if access_log is not None else []
    middleware.append(Middleware(HostAllowList, hosts=hosts))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={RequestError: refused, HTTPException: http_error,
                                        ClientDisconnect: disconnected})
    app.state.models = served
    app.state.metrics = metrics
    app.state.budget = budget
    app.state.decoder = decoder
    return app
