"""Progress bars: drawn on a terminal, silent anywhere else (CI logs, pipes), and the work is the
same either way."""
from __future__ import annotations

import io

import pytest

from mnist_engine import _progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_delay(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(_progress, "PROGRESS_DELAY", 0.0)


@pytest.mark.parametrize("stream, drawn", [(Terminal(), True), (io.StringIO(), False)], ids=["tty", "pipe"])
def test_bar_only_on_a_terminal(monkeypatch, no_delay, stream, drawn):
    monkeypatch.setattr("sys.stderr", stream)
    assert list(_progress.progress(range(7), total=7, desc="reading images", unit="image")) == list(range(7))
    with _progress.Stages(2, "MNIST") as stages:
        stages.step("downloading")
        stages.step("decoding")
    text = stream.getvalue()
    assert (("reading images" in text and "/7 " in text and "decoding" in text) if drawn else text == ""), text


def test_without_tqdm_the_work_still_runs(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm":
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    assert list(_progress.progress(iter("abc"), desc="x")) == ["a", "b", "c"]
    with _progress.Stages(1, "x") as stages:
        stages.step("one")
