"""Ctrl-C stops `instantsr upscale` within about a second at any stage (imports, model load, one long network
pass), with exit code 130 and no half-written file left in the output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from instantsr.io import save_image

from .conftest import smooth_image

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("after_s", [0.5, 6.0])  # during the imports; during the network pass
def test_ctrl_c_stops_within_a_second(tmp_path, after_s):
    # 768x768 LR untiled: a single network pass of tens of seconds on 2 cores, most of it in long torch calls
    save_image(smooth_image(768, 768, 0), tmp_path / "big.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A shell's `pytest &` starts us with SIGINT ignored, and a child inherits SIG_IGN through exec (Python then
    # installs no KeyboardInterrupt handler): hold a handler while starting the child, which exec resets to default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "instantsr.cli", "upscale", "-i", str(tmp_path / "big.png"),
                                 "-o", str(out), "--device", "cpu"], stderr=subprocess.PIPE, text=True, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    time.sleep(after_s)
    assert proc.poll() is None, "the upscale ended before it could be interrupted: " + proc.stderr.read()
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    finally:
        proc.kill()
    waited = time.perf_counter() - t0
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert waited < 2.0, f"took {waited:.1f} s to stop"  # 1 s asked; slack for a loaded test machine
    assert "interrupted" in err.splitlines()[-1] and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
