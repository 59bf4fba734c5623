"""Untrusted text made safe to show on a terminal or to write into a log."""
from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character a terminal would act on (escape sequences, carriage returns,
    newlines, bidi overrides: whatever str.isprintable rejects) shown as its escape. A model file's
    metadata, a file name on disk and a client's request path are untrusted input that must not be
    able to rewrite the user's screen or forge a log line."""
    if text.isprintable():  # nearly always: no copy
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
