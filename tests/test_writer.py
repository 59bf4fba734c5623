"""Writes are atomic: the target holds the old file or the whole new one, never part of one."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mnist_engine
from helpers import random_layers
from mnist_engine import model_file


def test_write_model_round_trip(tmp_path, rng):
    layers = random_layers(rng, [10, 4, 2], ["relu", "softmax"])
    path = mnist_engine.write_model(tmp_path / "m.mnw", layers, metadata={"source": "round trip"})
    engine = mnist_engine.load(path)
    assert engine.layers == ((10, 4, "relu"), (4, 2, "softmax"))
    assert engine.metadata["source"] == "round trip"
    assert engine.metadata["producer"] == "mnist_engine.write_model"
    assert os.listdir(tmp_path) == ["m.mnw"]


def test_written_file_respects_umask(tmp_path, rng):
    old = os.umask(0o022)
    try:
        path = mnist_engine.write_model(tmp_path / "m.mnw", random_layers(rng, [3, 2], ["linear"]))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file(tmp_path, rng, monkeypatch):
    target = tmp_path / "m.mnw"
    mnist_engine.write_model(target, random_layers(rng, [3, 2], ["linear"]))
    before = target.read_bytes()

    def crash(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(model_file.os, "fsync", crash)
    with pytest.raises(OSError, match="disk on fire"):
        mnist_engine.write_model(target, random_layers(rng, [5, 5], ["relu"]))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.mnw"]


def test_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    """SIGKILL a writer after it has written the new bytes but before it renames them into place
    (the child announces that moment from inside fsync): the target must still be the old file."""
    target = tmp_path / "m.mnw"
    code = f"""
import os, sys, time, numpy as np, mnist_engine
from mnist_engine import model_file
from mnist_engine.model_file import DenseLayer
rng = np.random.default_rng(0)
mnist_engine.write_model({str(target)!r}, [DenseLayer(rng.normal(size=(8, 4)), np.zeros(4), "relu")])
def stalled_fsync(fd):
    print("in fsync", flush=True)
    time.sleep(60)
model_file.os.fsync = stalled_fsync
mnist_engine.write_model({str(target)!r}, [DenseLayer(rng.normal(size=(300, 200)), np.zeros(200), "relu")])
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "in fsync"
        old = target.read_bytes()
    finally:
        proc.kill()
        proc.wait()
    assert target.read_bytes() == old
    assert mnist_engine.Engine.from_bytes(old).input_width == 8
    # The killed writer's temporary file is left beside the target, never under its name.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m.mnw"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.mnw.") and leftovers[0].endswith(".tmp")


@pytest.mark.parametrize("labels, outputs, message", [
    ([0, 1, 2], 2, "expected 2 class labels for a model with 2 output"),
    ([0, 1], 1, None), (["no", "yes"], 1, None), ([-5, 10**17], 1, None),
    ([0, 10**18], 1, "at most 18 digits"),
    (["a", "b\nc"], 2, "contain no newline; got 'b\\\\nc'"),
    (["a", ""], 2, "non-empty"),
    ([3, 3], 2, "must be unique"),
    ([True, False], 2, "all integers, all floats or all strings, got bool"),
    ([0.5, 1.5], 2, None), ([0.0, 1.0, 2.0], 3, None), ([0.5, float("nan")], 2, "must be finite"),
])
def test_class_labels_the_format_can_hold(labels, outputs, message):
    """encode_classes refuses, with the reason, exactly what rule 30 (metadata-classes) would."""
    if message is None:
        value = model_file.encode_classes(labels, outputs)
        kind = {int: "int", float: "float", str: "str"}[type(labels[0])]
        assert value.split("\n") == [kind, *(repr(v) if kind == "float" else str(v) for v in labels)]
        return
    with pytest.raises(ValueError, match=message):
        model_file.encode_classes(labels, outputs)


@pytest.mark.parametrize("where", ["missing/folder/m.mnw", "a_folder"])
def test_a_failed_write_names_the_users_path_not_the_temporary_file(tmp_path, where):
    (tmp_path / "a_folder").mkdir()
    target = tmp_path / where
    with pytest.raises(OSError) as e:
        model_file.atomic_write_bytes(target, b"bytes")
    assert e.value.filename == str(target) and ".tmp" not in str(e.value), str(e.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a_folder"]  # nothing left behind
