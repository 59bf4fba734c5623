"""A JSON-decoding worker process (`python -m mnist_engine.serve.decode_worker`), started by the
server's Decoder and spoken to over its stdin and stdout: each message is an 8-byte little-endian
length and a pickle. In: (body, Inference-Header-Content-Length, ModelSignature). Out: ("ok",
InferRequest) or ("refused", status, message). Both ends are the server and the process it started,
over pipes no one else holds, so pickle carries nothing the server did not write itself.

A plain process rather than multiprocessing's: a spawned multiprocessing child first re-imports the
parent's __main__, and a user's unguarded serving script would then start a second server.
"""
from __future__ import annotations

import os
import pickle
import sys
from typing import BinaryIO, Optional

from .decoding import LENGTH_BYTES, frame


def read_message(stream: BinaryIO) -> Optional[bytes]:
    """One message's bytes, or None at the end of the stream."""
    head = stream.read(LENGTH_BYTES)
    if len(head) < LENGTH_BYTES:
        return None
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    return data if len(data) == size else None


def main() -> int:
    from .protocol import RequestError, decode_infer_request

    # The replies go to a private copy of stdout; fd 1 itself becomes stderr, so that a stray print
    # (a library's warning) cannot corrupt the stream the server parses.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        message = read_message(requests)
        if message is None:  # the server closed our stdin: it is stopping
            return 0
        body, header_length, signature = pickle.loads(message)
        try:
            reply = ("ok", decode_infer_request(body, header_length, signature))
        except RequestError as e:
            reply = ("refused", e.status, str(e))
        except MemoryError:
            reply = ("refused", 413, "the body is too large to decode as JSON in the memory the server has; "
                                     "send fewer rows per request, or binary tensors")
        del body, message
        replies.write(frame(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)))
        replies.flush()


if __name__ == "__main__":
    sys.exit(main())
