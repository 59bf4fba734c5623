"""The fuzzers' seed corpus (fuzz/corpus) and every input they ever crashed on (fuzz/regressions)
replayed through the Python API with the harness's control-byte semantics (fuzz/fuzz_loader.cpp).
Each must load cleanly or fail with a FormatError; none may crash the process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import fuzz_case
from mnist_engine import Engine, FormatError

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
INPUTS = sorted(p for d in ("corpus", "regressions") if (FUZZ / d).is_dir() for p in (FUZZ / d).iterdir()
                if p.suffix != ".md")

def test_corpus_is_present():
    assert len(INPUTS) >= 30


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_replay(path):
    data, kernel, verify = fuzz_case(path.read_bytes())
    try:
        engine = Engine.from_bytes(data, verify=verify, kernel=kernel)
    except FormatError as e:
        assert str(e).startswith(f"{e.rule} at offset {e.offset}: ")
        return
    rows = np.frombuffer((data * (65 * engine.input_width // max(len(data), 1) + 1))[:65 * engine.input_width],
                         np.uint8).reshape(65, engine.input_width)
    assert engine.predict(rows).shape == (65, engine.output_width)
