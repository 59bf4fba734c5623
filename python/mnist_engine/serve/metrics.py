"""What `GET /metrics` reports, in the Prometheus text format (or OpenMetrics when the scraper asks
for it), through prometheus_client: the names follow its conventions, as Triton's, KServe's and
MLServer's do, so the usual dashboards and alerts apply.

Each app has its own registry (two servers in one process never mix counts). Model labels are only
the served models' names; a request for an unknown model is counted under model="" so that no
client can grow the label set.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    def __init__(self, models: Iterable[str], max_batch: int):
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("mnist_engine_infer_requests", "Infer requests answered, by model and HTTP status",
                                ["model", "status"], registry=registry)
        self.refusals = Counter("mnist_engine_overload_refusals", "Infer requests refused with 503 because the "
                                "server was full, by the bound that refused them (body_budget, queue_full, "
                                "deadline, decoder_restarted)", ["model", "reason"], registry=registry)
        self.latency = Histogram("mnist_engine_infer_duration_seconds", "Time from an infer request's arrival to its "
                                 "answer, every status", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        batch_buckets = sorted({1 << i for i in range(max(1, max_batch).bit_length())} | {max_batch})
        self.batch_rows = Histogram("mnist_engine_batch_rows", "Rows in each predict call the batcher made",
                                    ["model"], buckets=batch_buckets, registry=registry)
        self.queue_rows = Gauge("mnist_engine_queue_rows", "Rows decoded and waiting for the engine, or in it",
                                ["model"], registry=registry)
        self.queue_requests = Gauge("mnist_engine_queue_requests", "Requests decoded and waiting for the engine, "
                                    "or in it", ["model"], registry=registry)
        self.body_bytes = Gauge("mnist_engine_body_bytes_in_flight", "Bytes of the body budget held by requests "
                                "being received or decoded", registry=registry)
        self.body_waiting = Gauge("mnist_engine_body_budget_waiting", "Requests waiting for the body budget "
                                  "before they read their body", registry=registry)
        self.body_capacity = Gauge("mnist_engine_body_budget_bytes", "The body budget (--body-budget)",
                                   registry=registry)
        for model in models:  # every series exists from the start: a scrape before any traffic sees zeros
            self.requests.labels(model, "200")
            self.latency.labels(model)
            self.batch_rows.labels(model)

    def watch_queue(self, model: str, rows: Callable[[], float], requests: Callable[[], float]) -> None:
        self.queue_rows.labels(model).set_function(rows)
        self.queue_requests.labels(model).set_function(requests)

    def watch_budget(self, in_use: Callable[[], float], waiting: Callable[[], float], capacity: int) -> None:
        self.body_bytes.set_function(in_use)
        self.body_waiting.set_function(waiting)
        self.body_capacity.set(capacity)

    def answered(self, model: str, status: int, seconds: float, reason: Optional[str] = None) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)
        if reason is not None:
            self.refusals.labels(model, reason).inc()

    def batch_observer(self, model: str) -> Callable[[int], None]:
        return self.batch_rows.labels(model).observe

    def exposition(self, accept: Optional[str]) -> Tuple[bytes, str]:
        """The scrape's body and Content-Type, in the format the Accept header asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
