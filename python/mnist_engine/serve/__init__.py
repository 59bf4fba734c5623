"""`mnist-engine serve`: the engine behind the Open Inference Protocol (KServe v2) REST API, with
dynamic batching and a draw-a-digit page. Needs the [serve] extra (Starlette, uvicorn); importing
mnist_engine never imports this package."""
from __future__ import annotations

from .._extras import require

require("starlette", "mnist-engine serve")
require("prometheus_client", "mnist-engine serve")

from .app import Limits, create_app  # noqa: E402  (after the check, so a missing extra reads as one line)

__all__ = ["Limits", "create_app"]
