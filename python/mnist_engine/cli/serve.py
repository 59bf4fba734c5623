"""``mnist-engine serve``: the Open Inference Protocol over HTTP (uvicorn), with dynamic batching
and the draw-a-digit page at /. Bound to 127.0.0.1 unless --host says otherwise."""
from __future__ import annotations

import argparse
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Dict, List

import mnist_engine

from .common import non_negative_float, number_in, positive_float, positive_int

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def model_spec(text: str):
    """NAME=FILE, the name as it appears in /v2/models/NAME."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    if not _NAME.match(name):
        raise argparse.ArgumentTypeError(f"a model name is 1-64 letters, digits, '_', '.' or '-' (starting with a "
                                         f"letter or digit), got {name!r}")
    return name, Path(path)


port_number = number_in(int, 0, 65535, "a port number 0..65535 (0: any free port)", "a port number 0..65535")


def host_to_allow(text: str) -> str:
    """--allow-host: a DNS name or an IP address (brackets allowed), or '*'."""
    from ..serve.hosts import canonical_host

    if text != "*" and canonical_host(text) is None:
        raise argparse.ArgumentTypeError(f"expected a DNS name, an IP address or '*', got {text!r}")
    return text


def add_parser(sub) -> None:
    serve = sub.add_parser("serve", help="serve models over the Open Inference Protocol (KServe v2) REST API",
                           description=__doc__.split("\n\n")[0].replace("``", ""))
    serve.add_argument("--model", type=model_spec, action="append", metavar="NAME=FILE",
                       help="a model to serve as NAME (repeatable; default: the bundled MLP as 'mnist', the "
                            "bundled convnet as 'convnet' and the bundled reader as 'reader')")
    serve.add_argument("--page-model", metavar="NAME",
                       help="the model the draw-a-digit page reads with first (default: 'reader' when the "
                            "bundled models are served, which reads handwriting best and doubts letters; else the "
                            "first --model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME", type=host_to_allow,
                       help="a Host name clients may use besides localhost and the bound address (repeatable; "
                            "'*' allows any: only behind a proxy that checks Host)")
    serve.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--precision", choices=["fp32", "bf16", "int8"], help="arithmetic of every model (default fp32)")
    serve.add_argument("--threads", type=positive_int,
                       help="threads per predict call (default: OMP_NUM_THREADS, else all cores)")
    serve.add_argument("--max-batch", type=positive_int, default=256,
                       help="most rows merged into one predict call (default 256)")
    serve.add_argument("--max-delay-ms", type=non_negative_float, default=1.0,
                       help="how long a batch waits for more requests after its first (default 1 ms)")
    serve.add_argument("--max-body", type=positive_int, default=8 << 20,
                       help="largest request body in bytes; larger gets 413 (default 8 MiB)")
    serve.add_argument("--body-timeout", type=non_negative_float, default=10.0,
                       help="seconds a client has to send a whole body; slower gets 408 (default 10)")
    serve.add_argument("--min-body-rate", type=non_negative_float, default=32 << 10, metavar="BYTES_PER_S",
                       help="after its first second, a body must keep up this many bytes a second or get 408, "
                            "giving back its share of --body-budget (default 32768; 0: no minimum)")
    serve.add_argument("--max-header-bytes", type=positive_int, default=64 << 10,
                       help="largest request line and headers in bytes; larger gets 431 and the connection "
                            "closed (default 64 KiB)")
    serve.add_argument("--header-timeout", type=positive_float, default=10.0,
                       help="seconds a connection has to send a request's head, from its start or the last "
                            "response; slower is closed (default 10)")
    serve.add_argument("--max-connections", type=positive_int,
                       help="open connections beyond which new ones are closed; above three quarters of it a new "
                            "connection has one second to send its head (default: the file descriptors the "
                            "process may open, less 64, at most 10,000)")
    serve.add_argument("--max-queue-ms", type=non_negative_float, default=1000.0,
                       help="how long a request may wait for its turn to be read, and again in the model's "
                            "queue, before it is answered 503 with Retry-After (default 1000)")
    serve.add_argument("--max-queue-rows", type=positive_int,
                       help="rows queued per model beyond which requests get 503 (default 64 x --max-batch)")
    serve.add_argument("--max-queue-bytes", type=positive_int,
                       help="bytes of rows queued per model beyond which requests get 503 (default an eighth "
                            "of memory, at most 256 MiB)")
    serve.add_argument("--body-budget", type=positive_int,
                       help="bytes of the requests being worked on (received, decoded, queued, computed), "
                            "taken as their bodies arrive; beyond it, bodies wait unread, the oldest request first "
                            "(default 4 x --max-body; at least 2 x --max-body)")
    serve.add_argument("--decode-processes", type=positive_int, default=1,
                       help="worker processes decoding costly JSON bodies (over 256 KiB of JSON, or over 4096 "
                            "arrays and objects) off the event loop (default 1)")
    serve.add_argument("--decode-memory", type=positive_int, metavar="BYTES",
                       help="bytes each decoding process may grow by; a body whose JSON needs more gets 413 "
                            "(default 256 MiB or 32 x --max-body, whichever is more)")
    serve.add_argument("--no-access-log", action="store_true",
                       help="do not write a line per request to stderr (time, client, method, path, status, "
                            "rows, milliseconds)")
    serve.add_argument("--allow-any-range", action="store_true",
                       help="answer FP32 input far outside the range the model was checked on (pixels not "
                            "divided by 255, say) instead of refusing it with 400")
    serve.set_defaults(run=run)


# Without --model: the bundled MLP keeps the name clients have used; the convnet and the reader
# are there for drawings and photos, and the page starts with the reader, which reads other
# writers' digits best and says "not sure" of letters and scribbles (docs/IMAGES.md).
DEFAULT_MODELS = {"mnist": mnist_engine.default_model_path(), "convnet": mnist_engine.bundled_model_path("convnet"),
                  "reader": mnist_engine.bundled_model_path("reader")}
DEFAULT_PAGE_MODEL = "reader"


def load_models(args: argparse.Namespace) -> Dict[str, mnist_engine.Engine]:
    specs: List = args.model or list(DEFAULT_MODELS.items())
    models: Dict[str, mnist_engine.Engine] = {}
    for name, path in specs:
        if name in models:
            raise ValueError(f"model name {name!r} is given twice")
        models[name] = mnist_engine.load(path, precision=args.precision, threads=args.threads)
    return models


def run(args: argparse.Namespace) -> int:
    from .._extras import require

    uvicorn = require("uvicorn", "mnist-engine serve")
    from ..serve import Limits, create_app
    from ..serve.connections import ConnectionLimits, bounded_protocol
    from ..serve.hosts import allowed_hosts

    limits = Limits(max_batch=args.max_batch, max_delay=args.max_delay_ms / 1000, max_body=args.max_body,
                    body_timeout=args.body_timeout, min_body_rate=args.min_body_rate,
                    allow_any_range=args.allow_any_range, max_queue_wait=args.max_queue_ms / 1000,
                    max_queue_rows=args.max_queue_rows, max_queue_bytes=args.max_queue_bytes,
                    body_budget=args.body_budget, decode_processes=args.decode_processes,
                    decode_memory=args.decode_memory)
    limits.resolved()  # a budget too small for two bodies is an error before anything loads
    models = load_models(args)
    for name, engine in models.items():
        print(f"mnist-engine serve: {name}: {engine!r}", file=sys.stderr)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host

    def listening() -> None:  # from the app's startup: uvicorn's signal handlers are in place by then
        print(f"mnist-engine serve: listening on http://{shown}:{port}/ (the Open Inference Protocol under /v2, "
              "a draw-a-digit page at /)", file=sys.stderr, flush=True)

    page_model = args.page_model or (DEFAULT_PAGE_MODEL if not args.model else None)
    app = create_app(models, limits, on_startup=listening, hosts=allowed_hosts(host, args.allow_host),
                     page_model=page_model, access_log=None if args.no_access_log else sys.stderr)
    connections = ConnectionLimits(max_head_bytes=args.max_header_bytes, head_timeout=args.header_timeout,
                                   max_connections=args.max_connections)
    config = uvicorn.Config(app, http=bounded_protocol(connections), log_level="warning",
                            access_log=False, timeout_graceful_shutdown=30, server_header=False)
    server = uvicorn.Server(config)
    # uvicorn stops accepting on SIGTERM or Ctrl-C, finishes the requests in flight, and then raises
    # the signal again under the handler it found. That handler is this one, so a clean stop exits 0,
    # as process supervisors (systemd, Kubernetes) expect (Ctrl-C stays 130); and a SIGTERM that
    # comes before uvicorn installs its own handlers sets the same exit flag, so it is never lost.
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before uvicorn starts so that the address (with --port 0, the port
    the system chose) can be printed, and a busy port is an error line rather than a log record."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
