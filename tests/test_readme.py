"""The README's code runs as written, top to bottom, the way a newcomer pastes it: every line of its
```sh blocks and every ```python block, in document order, in one scratch folder that holds what a
checkout holds (tools/, tests/, models/), so a file a later step reads (my_model.mnw, my_digits/)
must be made by an earlier step. Nothing is defined for the snippets: no names, no files.

How each kind of step is run:
- ``pip install TARGET``: the target must be this project and every extra it names must exist in
  pyproject.toml, or the build tools pyproject.toml's build-system names (and cmake, ninja), or
  the wheel tools/build_wheel.sh writes. The install itself is not repeated here: .ci/run performs
  the README's own test command, ``pip install ".[test]"``, for real, in a fresh venv, a second
  ``--no-build-isolation`` install, and the wheel's install where no compiler is on PATH.
- ``tools/build_wheel.sh``: not run here (a minute of compiling); .ci/run runs it and installs
  what it writes.
- ``python -m pytest``: not run; it is the run executing this test.
- ``mnist-engine serve ...``: started in the background with ``--port 0`` added (a fixed port could
  be taken on a test machine); it must say where it listens and stay up for the steps after it,
  whose ``localhost:8000`` becomes that address; at the end SIGTERM must stop it with exit 0.
- any other shell line: run by bash as written (``&&`` parts one by one, the venv's ``python`` and
  ``mnist-engine`` first on PATH); it must exit 0.
- Python blocks: ``python -c BLOCK``, as written; they must not raise.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_PORT = "localhost:8000"


def blocks(language: str) -> List[Tuple[int, str]]:
    """(line number, code) of every fenced block in `language`."""
    text = README.read_text(encoding="utf-8")
    found = []
    for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S):
        found.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def steps() -> List[Tuple[int, str, str]]:
    """(README line, "sh" or "python", code) in document order: one step per shell command (a line's
    ``&&`` parts apart), one per Python block."""
    found = []
    for line_no, code in blocks("sh"):
        for offset, line in enumerate(code.splitlines()):
            for part in line.split(" && "):
                if part.strip() and not part.strip().startswith("#"):
                    found.append((line_no + 1 + offset, "sh", part.strip()))
    found += [(line_no, "python", code) for line_no, code in blocks("python")]
    return sorted(found, key=lambda step: step[0])


def tomllib():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib


def extras_in_pyproject() -> set:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib().load(f)["project"]["optional-dependencies"])


def test_the_readme_has_code_to_check():
    kinds = [kind for _, kind, _ in steps()]
    assert kinds.count("sh") >= 12 and kinds.count("python") >= 4  # the parser did not silently miss them


def build_tools_in_pyproject() -> set:
    """The build-system's requirements by name, and the CMake and Ninja it needs on PATH."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        requires = tomllib().load(f)["build-system"]["requires"]
    return {re.match(r"[\w.-]+", r).group(0).lower() for r in requires} | {"cmake", "ninja"}


def check_install(where: str, command: str) -> None:
    targets = [w.strip("\"'") for w in command.split("#")[0].split()[2:] if not w.startswith("-")]
    extras = extras_in_pyproject()
    if set(targets) <= build_tools_in_pyproject():
        return
    for target in targets:
        if target == "dist/mnist_engine-*manylinux*.whl":  # what tools/build_wheel.sh writes
            assert "${1:-$root/dist}" in (ROOT / "tools" / "build_wheel.sh").read_text()  # its default folder
            continue
        m = re.fullmatch(r"(\.|mnist-engine)(?:\[([\w,-]+)\])?", target)
        assert m, f"{where}: installs {target!r}, not this project"
        missing = set((m.group(2) or "").split(",")) - extras - {""}
        assert not missing, f"{where}: pyproject.toml has no extra {sorted(missing)}"


class Server:
    """`mnist-engine serve ...` from the README, in the background on a free port."""

    def __init__(self, command: str, cwd: Path, env: dict):
        self.process = subprocess.Popen(["bash", "-c", f"exec {command.split('#')[0].strip()} --port 0"], cwd=cwd,
                                        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        stdin=subprocess.DEVNULL)
        log = []
        for line in self.process.stderr:
            log.append(line)
            found = re.search(r"listening on http://(127\.0\.0\.1:\d+)/", line)
            if found:
                self.address = found.group(1)
                return
        raise AssertionError("the README's server never said where it listens:\n" + "".join(log))

    def stop(self) -> Optional[int]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def workdir(tmp_path, mnist):
    for name in ("tools", "tests", "models"):  # what a checkout has next to README.md
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_the_readme_runs_as_written(workdir, request):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server: Optional[Server] = None
    try:
        for line_no, kind, code in steps():
            where = f"README.md:{line_no}"
            if server is not None:
                code = code.replace(README_PORT, server.address)
            if kind == "python":
                out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True,
                                     text=True, timeout=600, stdin=subprocess.DEVNULL)
                assert out.returncode == 0, f"{where}\n{code}\n{out.stderr[-3000:]}"
                continue
            if code.startswith("pip install"):
                check_install(where, code)
                continue
            if code.startswith("python -m pytest"):
                continue  # the test suite itself: this is the run executing it
            if code.split("#")[0].strip() == "tools/build_wheel.sh":
                continue  # .ci/run builds the wheel and installs it where no compiler is
            if ".keras" in code:
                request.getfixturevalue("keras")  # exporting needs TensorFlow (required under CI)
            if code.startswith("curl") and shutil.which("curl") is None:
                if IN_CI:
                    pytest.fail(f"{where} runs curl, which CI must have")
                continue
            if code.startswith("mnist-engine serve"):
                assert server is None, f"{where}: a second server"
                server = Server(code, workdir, env)
                continue
            out = subprocess.run(["bash", "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
                                 timeout=600, stdin=subprocess.DEVNULL)
            assert out.returncode == 0, f"{where}: {code}\nstdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-2000:]}"
            if code.startswith("curl"):  # tensors answer with outputs; an image with predict's answer
                expected = '"digit": 7, "sure": true' if "image/png" in code else '"outputs"'
                assert expected in out.stdout, f"{where}: {out.stdout[-500:]}"
    finally:
        if server is not None:
            assert server.stop() == 0, "SIGTERM must stop the README's server with exit 0"


def test_the_export_section_lists_what_the_exporter_supports():
    """The README's list of exportable layers and activations is the exporter's own tables, so the
    two cannot drift apart (regenerate with mnist_engine.export.keras.supported_markdown())."""
    from mnist_engine.export.keras import supported_markdown

    block = README.read_text().split("<!-- exporter tables: start -->\n")[1].split("\n<!-- exporter tables: end -->")[0]
    assert block == supported_markdown()


def test_the_onnx_section_lists_what_the_onnx_exporter_supports():
    """Likewise for ONNX graphs (regenerate with mnist_engine.export.onnx.exporter.supported_markdown())."""
    from mnist_engine.export.onnx.exporter import supported_markdown

    block = README.read_text().split("<!-- onnx tables: start -->\n")[1].split("\n<!-- onnx tables: end -->")[0]
    assert block == supported_markdown()
