"""The mnist-engine command, as a user runs it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def run_module(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_engine", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_python_dash_m_is_the_cli():
    out = run_module("info", str(mnist_engine.default_model_path()))
    assert out.returncode == 0, out.stderr
    assert "layer 0: 784 -> 512 relu" in out.stdout


# (arguments, the message's expected text); "{tmp}" is a folder holding the files user_error_files makes.
USER_ERRORS = [
    (["eval", "--repeat", "0"], "argument --repeat: expected a whole number of at least 1, got 0"),
    (["eval", "--threads", "2x"], "argument --threads: expected a whole number of at least 1, got '2x'"),
    (["eval", "--threads", "999"], "expected threads=None or threads in 1.."),
    (["eval", "--model", ""], "argument --model: expected a path, got an empty string"),
    (["eval", "--model", "{tmp}"], "Is a directory: {tmp}"),
    (["eval", "--model", "{tmp}/missing.mnw"], "No such file or directory: {tmp}/missing.mnw"),
    (["info", "{tmp}/text.npz"], "bad-magic at offset 0: expected the magic 89 4d 4e 57 0d 0a 1a 0a, got 72 6f"),
    (["eval", "--data", "{tmp}/empty.npz"], "expected MNIST as an .npz (a zip of x_train, y_train, x_test, "
                                            "y_test) or a folder of IDX files, got an empty file"),
    (["eval", "--data", "{tmp}/text.npz"], "got a file starting 72 6f 6f 74"),
    (["eval", "--data", "{tmp}/wrong.npz"], "expected x_train with shape (60000, 28, 28), got (3, 3)"),
    (["eval", "--data", "{tmp}"], "no train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
    (["eval", "--precision", "int4"], "argument --precision: invalid choice: 'int4'"),
]


def user_error_files(tmp: Path) -> None:
    (tmp / "empty.npz").write_bytes(b"")
    (tmp / "text.npz").write_text("root:x:0:0\n" * 10)
    np.savez(tmp / "wrong.npz", x_train=np.zeros((3, 3)))


@pytest.mark.parametrize("args, expected", USER_ERRORS)
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, expected):
    user_error_files(tmp_path)
    args = [a.format(tmp=tmp_path) for a in args]
    expected = expected.format(tmp=tmp_path)
    out = run_module(*args)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    last = out.stderr.strip().splitlines()[-1]
    assert expected in last, (args, out.stderr)
    assert "Traceback" not in out.stderr
    # argparse's own errors come after its usage lines; ours are the only line
    if not expected.startswith("argument"):
        assert out.stderr.count("\n") == 1, out.stderr


def test_debug_shows_the_traceback(tmp_path):
    out = run_module("--debug", "eval", "--model", str(tmp_path / "missing.mnw"))
    assert out.returncode != 0 and "Traceback" in out.stderr and "FileNotFoundError" in out.stderr


def test_every_option_has_help_text():
    from mnist_engine.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        if name == "bench":  # its options live in mnist_engine.bench, tested in test_bench.py
            continue
        for action in sub._actions:
            assert action.help, f"mnist-engine {name} {action.option_strings or action.dest} has no help text"
        out = run_module(name, "--help")
        assert out.returncode == 0 and out.stdout.startswith("usage: mnist-engine"), out.stderr


def test_datasets_module_has_help():
    out = subprocess.run([sys.executable, "-m", "mnist_engine.datasets", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
