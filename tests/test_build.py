"""The built extension and its objects: what the linker can see.

1. The module exports PyInit__core and nothing else. A toolchain that links libstdc++ statically
   otherwise exports the whole C++ runtime, which collides with the copy numpy loaded first (a
   segfault on `import numpy; mnist_engine.load(...)`); CMakeLists.txt hides it all.
2. Files compiled with ISA flags (-mavx2, -mavx512f, ...) define no weak symbols and no external
   functions beyond their declared entry points. An `inline` function or template compiled there
   is one symbol to the linker, which may keep the AVX-512 copy for the scalar path (an ODR
   violation that shows at -O0). Checked on the real build and on each ISA file compiled at -O0.
"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import mnist_engine
from conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
# By the ISA a file's name ends with (most specific first), the flags CMakeLists.txt gives it.
ISA_FLAGS = {"avx512vnni": ["-mavx512f", "-mfma", "-mavx512vnni", "-mpopcnt"],
             "avx512bf16": ["-mavx512f", "-mfma", "-mavx512bf16", "-mpopcnt"],
             "avxvnni": ["-mavx2", "-mfma", "-mavxvnni"],
             "amx": ["-mavx512f", "-mfma", "-mamx-tile", "-mamx-int8", "-mamx-bf16"],
             "avx512f": ["-mavx512f", "-mfma", "-mpopcnt"], "avx2": ["-mavx2", "-mfma", "-mpopcnt"],
             "sse42": ["-msse4.2"]}
# The functions ISA files may export: those the ISA-free headers declare for them.
DECLARED = set(re.findall(r"\b(\w+)\(", (ROOT / "cpp/kernels/kernels.h").read_text()
                          + (ROOT / "cpp/include/mnist_engine/crc32c.h").read_text()))


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is required under CI")
        pytest.skip(f"{tool} is not installed")
    return path


def isa_of(name: str):
    return next((isa for isa in ISA_FLAGS if isa in name.replace("-", "").replace("sse4.2", "sse42")), None)


def defined_symbols(path: Path, dynamic: bool = False) -> list:
    args = [need("nm"), "-C", "--defined-only"] + (["-D"] if dynamic else []) + [str(path)]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()


def offending(lines: list) -> list:
    """Weak symbols, and external functions the headers do not declare, in `nm -C` output."""
    bad = []
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) < 3 or parts[1] in "tbdrnsv":  # local symbols (and headers of archive members)
            continue
        kind, name = parts[1], parts[2]
        base = re.sub(r"\(.*", "", name).split("::")[-1]
        if kind in "WVu" or (kind == "T" and base not in DECLARED):
            bad.append(line)
    return bad


def test_the_module_exports_only_its_init_function():
    symbols = [line.split()[-1] for line in defined_symbols(Path(mnist_engine._core.__file__), dynamic=True)]
    assert symbols == ["PyInit__core"], f"{len(symbols)} exported: {symbols[:20]}"


# What manylinux_2_34 (RHEL 9, Ubuntu 22.04, Debian 12: the wheel's tag, README) lets a module need
# from libstdc++: GCC 11's. std::condition_variable::wait took a GLIBCXX_3.4.30 symbol in GCC 12,
# which made auditwheel tag the wheel manylinux_2_35.
NEWEST_GLIBCXX = (3, 4, 29)


def test_the_module_needs_no_libstdcxx_newer_than_its_wheel_tag_allows():
    objdump = need("objdump")
    table = subprocess.run([objdump, "-T", mnist_engine._core.__file__], capture_output=True, text=True,
                           check=True).stdout
    too_new = sorted({f"{m.group(0)} {line.split()[-1]}" for line in table.splitlines()
                      for m in [re.search(r"GLIBCXX_(\d+)\.(\d+)\.(\d+)", line)]
                      if m and tuple(map(int, m.groups())) > NEWEST_GLIBCXX})
    assert not too_new, too_new


def test_built_isa_objects_define_only_their_entry_points():
    libraries = sorted(ROOT.glob("build/*/libmnist_engine_core.a"), key=lambda p: p.stat().st_mtime)
    if not libraries:
        if IN_CI:
            pytest.fail("no build/*/libmnist_engine_core.a: the pip build directory is expected there")
        pytest.skip("no build directory (the package was built elsewhere)")
    member, bad = None, {}
    for line in defined_symbols(libraries[-1]):
        if line.endswith(".o:"):
            member = line[:-1]
        elif member and isa_of(member):
            bad.setdefault(member, []).extend(offending([line]))
    assert not any(bad.values()), bad


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 ISA files")
@pytest.mark.parametrize("source", sorted(p.name for p in (ROOT / "cpp").rglob("*.cpp")
                                          if isa_of(p.name) and "testing" not in p.parts))
def test_isa_file_at_O0_defines_only_its_entry_points(source, tmp_path):
    """At -O0 nothing is inlined, so every inline function and template a file uses is emitted:
    the strictest form of the check above, independent of how the release build optimised."""
    path = next((ROOT / "cpp").rglob(source))
    obj = tmp_path / "k.o"
    includes = [f"-I{ROOT / d}" for d in ("cpp/include", "cpp/kernels", "cpp/src")]
    subprocess.run([need("g++"), "-std=c++17", "-O0", "-c", str(path), "-o", str(obj),
                    "-DMNIST_ENGINE_X86_KERNELS=1", *ISA_FLAGS[isa_of(source)], *includes], check=True)
    assert offending(defined_symbols(obj)) == []
