"""The mnist-engine command, as a user runs it."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import mnist_engine


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_engine.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_eval_reports_accuracy_speed_and_kernel(mnist):
    out = run_cli("eval", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"accuracy\s+([\d.]+)% on 10000", out.stdout).group(1))
    assert accuracy >= 97.5
    assert re.search(r"speed\s+[\d,]+ images/s", out.stdout)
    assert re.search(rf"kernel\s+{mnist_engine.default_kernel()} ", out.stdout)


def test_info_verifies_and_describes():
    out = run_cli("info", str(mnist_engine.default_model_path()))
    assert out.returncode == 0, out.stderr
    assert "layer 0: 784 -> 512 relu" in out.stdout and "verified" in out.stdout


def test_info_on_a_broken_file_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.mnw"
    bad.write_bytes(b"not a model at all, just some bytes that are long enough to pass")
    out = run_cli("info", str(bad))
    assert out.returncode == 2
    assert out.stderr.startswith("mnist-engine: error: bad-magic at offset 0")
    assert "Traceback" not in out.stderr


def test_info_escapes_what_a_terminal_would_act_on(tmp_path, rng):
    """Metadata is untrusted: an escape sequence in it must reach the terminal as text."""
    from helpers import random_layers

    hostile = "\x1b[2J\x1b[31mred\x1b[0m\rover\u202edrow\nnext"
    path = mnist_engine.write_model(tmp_path / "m.mnw", random_layers(rng, [4, 3], ["softmax"]),
                                    metadata={"note": hostile, "classes": "str\nyes\nno\nmaybe"})
    out = run_cli("info", str(path))
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\r" not in out.stdout and "\u202e" not in out.stdout
    assert r"note: \x1b[2J\x1b[31mred\x1b[0m\rover\u202edrow\nnext" in out.stdout
    assert "classify returns: yes, no, maybe" in out.stdout


@pytest.mark.parametrize("precision", [p for p in mnist_engine.available_precisions() if p != "fp32"])
def test_eval_in_reduced_precision(mnist, precision):
    out = subprocess.run([sys.executable, "-m", "mnist_engine.cli", "eval", "--precision", precision, "--repeat", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"accuracy\s+([\d.]+)%", out.stdout).group(1))
    agree = float(re.search(rf"precision {precision}: agrees with fp32 on ([\d.]+)%", out.stdout).group(1))
    assert accuracy > 97.5 and agree >= 99.9, out.stdout
    assert re.search(rf"kernel\s+{mnist_engine.default_kernel(precision)} ", out.stdout)
