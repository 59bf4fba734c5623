"""Concurrency: the GIL is released during predict, and a forked child can still predict."""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import mnist_engine


def progress_during(call) -> int:
    """Run `call` while a second Python thread counts, timestamping its progress; returns how many
    steps it made while the call ran.

    Deterministic, not timed: the switch interval is set far longer than the test, so the calling
    thread never hands the GIL over on request, only when it blocks or a C call releases it; the
    counter yields the GIL at every step (sleep(0)), so the caller always gets it back at once. A
    call that holds the GIL then sees exactly 0 steps, whatever the machine's load (with the
    default 5 ms interval, a loaded machine let the counter run into the call: 14781 steps once)."""
    stamps, ready, done = [], threading.Event(), threading.Event()

    def count():
        ready.set()
        while not done.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(600.0)
    try:
        counter = threading.Thread(target=count)
        counter.start()
        ready.wait()
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        done.set()
        counter.join()
    finally:
        sys.setswitchinterval(interval)
    return sum(1 for t in stamps if t0 <= t <= t1)


def test_predict_releases_the_gil():
    """While one thread is inside a long predict, another Python thread keeps running through the
    middle of the call. Were the GIL held, it could not run there at all (see the control below)."""
    engine = mnist_engine.load(mnist_engine.default_model_path())
    x = np.random.default_rng(0).integers(0, 256, (30000, 784), dtype=np.uint8)
    steps = progress_during(lambda: engine.predict(x, threads=1))  # ~0.1-0.3 s of C++ on one core
    assert steps > 100, f"the other thread made {steps} steps during predict"


@pytest.mark.skipif(not getattr(sys, "_is_gil_enabled", lambda: True)(), reason="free-threaded Python has no GIL")
def test_the_gil_probe_sees_a_call_that_holds_the_gil():
    """The control: the same probe around a C call that holds the GIL for its whole duration
    (pickling a large list) must see no progress in the middle: the GIL test above can fail."""
    data = list(range(3_000_000))
    assert progress_during(lambda: pickle.dumps(data)) == 0


def forked_child_passes(setup: str, child_check: str) -> subprocess.CompletedProcess:
    """In a fresh interpreter: run `setup`, fork, and have the child exit 0 when `child_check`
    (an expression) holds. Returns the parent's process, whose exit status is the child's."""
    code = "\n".join(["import os, sys, numpy as np, mnist_engine", textwrap.dedent(setup).strip(),
                      "pid = os.fork()",
                      "if pid == 0:",
                      f"    os._exit(0 if ({child_check}) else 3)",
                      "_, status = os.waitpid(pid, 0)",
                      "sys.exit(os.waitstatus_to_exitcode(status))"])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_predict_after_fork_matches_the_parent():
    """The thread pool's workers do not survive fork: a child that used the parent's pool would
    wait for workers it does not have. The engine guards this (a forked child predicts on its
    calling thread and get_num_threads() says so); the child must give the parent's exact results,
    not hang."""
    result = forked_child_passes("""
        e = mnist_engine.load(mnist_engine.default_model_path())
        x = np.random.default_rng(1).integers(0, 256, (2000, 784), dtype=np.uint8)
        want = e.predict(x, threads=2)
    """, "np.array_equal(e.predict(x, threads=2), want) and np.array_equal(e.predict(x[:1]), want[:1]) "
         "and mnist_engine.get_num_threads() == 1")
    assert result.returncode == 0, result.stderr


def test_a_child_of_a_parent_without_a_team_keeps_its_threads():
    """The fork guard exists because the pool's workers do not survive fork. A parent that never
    ran a team has no workers: its forked children (forkserver workers, say) keep every thread."""
    result = forked_child_passes("""
        mnist_engine.set_num_threads(2)
        e = mnist_engine.load(mnist_engine.default_model_path())
        x = np.random.default_rng(1).integers(0, 256, (300, 784), dtype=np.uint8)
        want = e.predict(x, threads=1)  # one thread: no team is started
    """, "mnist_engine.get_num_threads() == 2 and np.array_equal(e.predict(x, threads=2), want)")
    assert result.returncode == 0, result.stderr


def test_the_peak_probe_checks_its_arguments_and_leaves_no_threads_behind():
    """The probe runs one loop per thread on threads of its own, joined before it returns (the
    pool's dynamic claiming could give one thread two loops): a child forked after it has no pool
    to miss, keeps its threads and can measure again."""
    with pytest.raises(ValueError, match=r"expected seconds in 0.001..60, got nan"):
        mnist_engine._core.measure_fma_peak_gflops("", 1, float("nan"))
    with pytest.raises(ValueError, match="expected seconds"):
        mnist_engine._core.measure_fma_peak_gflops("", 1, float("inf"))
    with pytest.raises(ValueError, match="expected threads in 1.."):
        mnist_engine._core.measure_fma_peak_gflops("", 10**6, 0.01)
    probe = 'mnist_engine._core.measure_fma_peak_gflops("", 2, 0.01)'
    result = forked_child_passes(f"mnist_engine.set_num_threads(2); {probe}",
                                 "mnist_engine.get_num_threads() == 2 and "
                                 "mnist_engine._core.measure_fma_peak_gflops('', 2, 0.01) > 0")
    assert result.returncode == 0, result.stderr


def test_a_buffer_changed_during_load_cannot_be_half_read(small_layers):
    """from_bytes reads its buffer several times with the GIL released. A bytearray toggled by
    another thread between two states (the original, and one with a changed bias) must give, on
    every load, either the original engine or a checksum error: never a file that passed the
    checksum in one state and was parsed in the other."""
    from helpers import Layout, build

    good = build(small_layers, refs=256)
    buffer = bytearray(good)
    at = Layout(good).metadata - 4  # the last bias of the last layer
    x = np.random.default_rng(2).random((4, 6), dtype=np.float32)
    want = mnist_engine.Engine.from_bytes(good).predict(x)
    stop = threading.Event()

    def toggle():
        while not stop.is_set():
            buffer[at] ^= 0x40

    t = threading.Thread(target=toggle)
    t.start()
    try:
        for _ in range(3000):
            try:
                got = mnist_engine.Engine.from_bytes(buffer, verify=False).predict(x)
            except mnist_engine.FormatError as e:
                assert e.rule == "checksum", str(e)
                continue
            np.testing.assert_array_equal(got, want)
    finally:
        stop.set()
        t.join()


def test_the_thread_pool_runs_every_item_once_for_concurrent_callers():
    """The pool hands out items from one claim counter to the caller and its workers, and a caller
    that finds it busy runs its loop alone (cpp/src/thread_pool.h). From 4 Python threads at once,
    loops of 1..257 items on 1..5 threads: every item runs exactly once, on a slot the caller gave
    scratch for. A claim that escaped its loop, or a loop that returned before a worker's item was
    done, shows as a count other than 1."""
    errors, cases = [], [(1, 2), (2, 2), (7, 3), (64, 2), (257, 5), (3, 5), (100, 1)]

    def caller(seed: int):
        for items, threads in cases[seed:] + cases[:seed]:
            errors.append(mnist_engine._core._check_thread_pool(items, threads, 200))

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == [0] * (4 * len(cases))


@pytest.mark.parametrize("value, want", [("1", 1), ("3,1", 3), ("0", None), ("many", None), (None, None)])
def test_omp_num_threads_sets_the_default_as_it_did_for_openmp(value, want):
    """Users who set OMP_NUM_THREADS keep control (its first value, as OpenMP reads it); unset or
    not a positive number, the default is the CPUs this process may run on."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if value is not None:
        env["OMP_NUM_THREADS"] = value
    code = "import os, mnist_engine; print(mnist_engine.get_num_threads(), len(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got, cpus = map(int, out.stdout.split())
    assert got == (want if want is not None else cpus)
