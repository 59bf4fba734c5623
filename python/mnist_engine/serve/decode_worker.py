"""A JSON-decoding worker process (`python -m mnist_engine.serve.decode_worker`), started by the
server's Decoder and spoken to over its stdin and stdout: each message is an 8-byte little-endian
length and its bytes. In: a pickle of (Inference-Header-Content-Length, ModelSignature), then the
body's bytes as they are. Out: a pickle of ("ok", InferRequest) or ("refused", status, message,
retiring); a worker that says it is retiring (after a MemoryError: what it freed may not go back
to the system) exits after that reply. Both ends are the server and the process it started, over
pipes no one else holds, so pickle carries nothing the server did not write itself.

`--memory N`: the process may grow by N bytes of address space past what it holds once started
(RLIMIT_AS): a body whose decoding would take more gets a MemoryError, answered 413, instead of
taking the machine's memory (one 8 MiB body of nested arrays took 390 MiB).

A plain process rather than multiprocessing's: a spawned multiprocessing child first re-imports the
parent's __main__, and a user's unguarded serving script would then start a second server.
"""
from __future__ import annotations

import os
import pickle
import sys
from typing import BinaryIO, Optional, Tuple

from .decoding import LENGTH_BYTES, frame


def read_message(stream: BinaryIO) -> Optional[bytes]:
    """One message's bytes, or None at the end of the stream."""
    head = stream.read(LENGTH_BYTES)
    if len(head) < LENGTH_BYTES:
        return None
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    return data if len(data) == size else None


def limit_memory(growth: int) -> None:
    """RLIMIT_AS at the address space in use now plus `growth` bytes (Linux; elsewhere no limit)."""
    import resource

    try:
        with open("/proc/self/status") as status:
            in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = in_use + growth if hard == resource.RLIM_INFINITY else min(hard, in_use + growth)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


TOO_MUCH_MEMORY = ("decoding this body's JSON takes more memory than a decoding process may use (--decode-memory): "
                   "send fewer rows per request, flat data, or binary tensors")


def answer(head: bytes, body: bytes) -> Tuple[bytes, bool]:
    """The framed reply to one framed request, and whether the worker retires after it. A
    MemoryError anywhere in it (the limit above) is a 413, and the worker retires: the body's
    objects are gone by the time the refusal is built, but the memory they took may stay with the
    process, and the next honest body must not pay for it."""
    from .protocol import RequestError, decode_infer_request

    try:
        header_length, signature = pickle.loads(head)
        reply = ("ok", decode_infer_request(body, header_length, signature))
    except RequestError as e:
        reply = ("refused", e.status, str(e), False)
    except MemoryError:
        reply = ("refused", 413, TOO_MUCH_MEMORY, True)
    try:
        return frame(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)), reply[-1] is True
    except MemoryError:
        del reply
        return frame(pickle.dumps(("refused", 413, TOO_MUCH_MEMORY, True), protocol=pickle.HIGHEST_PROTOCOL)), True


def main(argv: Optional[list] = None) -> int:
    import argparse

    from . import protocol  # noqa: F401  (imported before the limit: its imports are not the body's memory)

    parser = argparse.ArgumentParser(prog="python -m mnist_engine.serve.decode_worker")
    parser.add_argument("--memory", type=int, help="bytes the process may grow by")
    args = parser.parse_args(argv)
    if args.memory:
        limit_memory(args.memory)

    # The replies go to a private copy of stdout; fd 1 itself becomes stderr, so that a stray print
    # (a library's warning) cannot corrupt the stream the server parses.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        try:
            head = read_message(requests)
            body = read_message(requests) if head is not None else None
        except MemoryError:  # the stream is out of step now: the server sees us gone and starts another
            return 1
        if body is None:  # the server closed our stdin: it is stopping
            return 0
        reply, retiring = answer(head, body)
        del body
        replies.write(reply)
        replies.flush()
        if retiring:
            return 0


if __name__ == "__main__":
    sys.exit(main())
