"""Concurrency: the GIL is released during predict, and a forked child can still predict."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np

import mnist_engine


def test_predict_releases_the_gil():
    """While one thread is inside a long predict, another thread's Python code keeps running.
    With the GIL held it could not run at all during the call; no timing is asserted."""
    engine = mnist_engine.load(mnist_engine.default_model_path())
    x = np.random.default_rng(0).integers(0, 256, (30000, 784), dtype=np.uint8)
    inside, done = threading.Event(), threading.Event()
    count = [0]

    def spin():
        inside.wait()
        while not done.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    inside.set()
    engine.predict(x, threads=1)  # ~0.1-0.3 s of C++ on one core
    seen_during = count[0]
    done.set()
    t.join()
    assert seen_during > 1000, f"the other thread ran only {seen_during} iterations during predict"


def test_predict_after_fork_matches_the_parent():
    """libgomp's pool does not survive fork: a child starting a parallel region after its parent
    used one deadlocks. The engine guards this (a forked child predicts on its calling thread and
    get_num_threads() says so); the child must give the parent's exact results, not hang."""
    code = textwrap.dedent("""
        import os, sys, numpy as np, mnist_engine
        e = mnist_engine.load(mnist_engine.default_model_path())
        x = np.random.default_rng(1).integers(0, 256, (2000, 784), dtype=np.uint8)
        want = e.predict(x, threads=2)
        pid = os.fork()
        if pid == 0:
            ok = (np.array_equal(e.predict(x, threads=2), want) and np.array_equal(e.predict(x[:1]), want[:1])
                  and mnist_engine.get_num_threads() == 1)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
