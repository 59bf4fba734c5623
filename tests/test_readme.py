"""The README's code runs: every command of its ```sh blocks and every ```python block, taken from
the Markdown itself, so the docs cannot drift from the code.

How each kind is run:
- ``pip install TARGET``: the target must be this project and every extra it names must exist in
  pyproject.toml. The install itself is not repeated here: .ci/run performs the README's own
  test command, ``pip install ".[test]"``, for real, in a fresh venv.
- ``python -m pytest``: not run; it is the run executing this test.
- ``mnist-engine serve ...``: started with ``--port 0`` added, it must say where it listens and
  answer ``/v2/health/ready`` and ``/v2/models/mnist/ready``; then SIGTERM must stop it with exit 0.
- anything else (``mnist-engine ...``, ``python tools/...``, ``python -m ...``): run in a scratch
  folder holding what the README tells the reader to bring (``my_model.keras``, ``my_model.onnx``,
  ``my_model.mnw``), with ``tools/`` and ``tests/`` reachable as in a checkout; it must exit 0.
- Python blocks: run in the same folder after a prelude that defines the names the README leaves to
  the reader (PRELUDE); they must not raise.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

import mnist_engine

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# What the README's snippets assume the reader has: images, a path, their own model file.
PRELUDE = """\
import numpy as np, mnist_engine
from mnist_engine.datasets import load_mnist
images = load_mnist()[1][0][:2000]
x = images.reshape(len(images), -1)
path = "my_model.mnw"
"""


def blocks(language: str) -> List[Tuple[int, str]]:
    """(line number, code) of every fenced block in `language`."""
    text = README.read_text(encoding="utf-8")
    found = []
    for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S):
        found.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def shell_commands() -> List[Tuple[str, List[str]]]:
    commands = []
    for line_no, code in blocks("sh"):
        for offset, line in enumerate(code.splitlines()):
            words = shlex.split(line, comments=True)
            command: List[str] = []
            for word in words + ["&&"]:
                if word == "&&":
                    if command:
                        commands.append((f"README.md:{line_no + 1 + offset}: {' '.join(command)}", command))
                    command = []
                else:
                    command.append(word)
    return commands


def extras_in_pyproject() -> set:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mnist):
    work = tmp_path_factory.mktemp("readme")
    for name in ("tools", "tests"):
        (work / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "models" / "mnist_mlp_512x2.keras", work / "my_model.keras")
    shutil.copy(mnist_engine.default_model_path(), work / "my_model.mnw")
    # The bundled network as an ONNX graph (MatMul, Add, Relu, Softmax), as a PyTorch user brings one.
    from mnist_engine.bench import onnx_model
    from mnist_engine.model_file import read_layers

    layers = read_layers(mnist_engine.default_model_path())
    (work / "my_model.onnx").write_bytes(onnx_model(layers).SerializeToString())
    return work


def test_the_readme_has_code_to_check():
    assert len(shell_commands()) >= 10 and len(blocks("python")) >= 3  # the parser did not silently miss them


def run(command: List[str], cwd: Path) -> subprocess.CompletedProcess:
    program = {"python": [sys.executable], "mnist-engine": [sys.executable, "-m", "mnist_engine"]}
    if command[0] not in program:
        pytest.fail(f"the README runs {command[0]!r}: teach tests/test_readme.py how to run it")
    return subprocess.run(program[command[0]] + command[1:], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def check_server(command: List[str], cwd: Path) -> None:
    import re as regex
    import signal
    import urllib.request

    process = subprocess.Popen([sys.executable, "-m", "mnist_engine", *command[1:], "--port", "0"], cwd=cwd,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL)
    try:
        log = []
        for line in process.stderr:
            log.append(line)
            found = regex.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
            if found:
                break
        assert found, "".join(log)
        for path in ("/v2/health/ready", "/v2/models/mnist/ready"):
            with urllib.request.urlopen(found.group(1) + path, timeout=30) as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("where, command", shell_commands(), ids=[w for w, _ in shell_commands()])
def test_shell_command(where, command, workdir, request):
    if command[:2] == ["pip", "install"]:
        targets = [w for w in command[2:] if not w.startswith("-")]
        extras = extras_in_pyproject()
        for target in targets:
            m = re.fullmatch(r"(\.|mnist-engine)(?:\[([\w,-]+)\])?", target)
            assert m, f"{where}: installs {target!r}, not this project"
            missing = set((m.group(2) or "").split(",")) - extras - {""}
            assert not missing, f"{where}: pyproject.toml has no extra {sorted(missing)}"
        return
    if command[:3] == ["python", "-m", "pytest"]:
        pytest.skip("the test suite itself: this is the run executing it")
    if any(w.endswith(".keras") for w in command):
        request.getfixturevalue("keras")  # exporting needs TensorFlow (required under CI)
    if command[:2] == ["mnist-engine", "serve"]:
        return check_server(command, workdir)
    out = run(command, workdir)
    assert out.returncode == 0, f"{where}\nstdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-2000:]}"


@pytest.mark.parametrize("line_no, code", blocks("python"), ids=[f"README.md:{n}" for n, _ in blocks("python")])
def test_python_block(line_no, code, workdir):
    # The shell blocks make my_digits/; a Python block may read from it, in whatever order tests run.
    if not (workdir / "my_digits").exists():
        subprocess.run([sys.executable, "tests/drawn_digits.py", "my_digits"], cwd=workdir, check=True,
                       capture_output=True)
    out = subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=workdir, capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"README.md:{line_no}\n{out.stderr[-3000:]}"


def test_the_export_section_lists_what_the_exporter_supports():
    """The README's list of exportable layers and activations is the exporter's own tables, so the
    two cannot drift apart (regenerate with mnist_engine.keras_export.supported_markdown())."""
    from mnist_engine.keras_export import supported_markdown

    block = README.read_text().split("<!-- exporter tables: start -->\n")[1].split("\n<!-- exporter tables: end -->")[0]
    assert block == supported_markdown()


def test_the_onnx_section_lists_what_the_onnx_exporter_supports():
    """Likewise for ONNX graphs (regenerate with mnist_engine.onnx_export.supported_markdown())."""
    from mnist_engine.onnx_export import supported_markdown

    block = README.read_text().split("<!-- onnx tables: start -->\n")[1].split("\n<!-- onnx tables: end -->")[0]
    assert block == supported_markdown()
