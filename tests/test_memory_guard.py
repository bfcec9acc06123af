"""--max-memory: the run stops itself with the step named, before the machine runs out."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edgemm.errors import EdgemmError
from edgemm.runtime.memory_guard import MemoryLimitExceeded, memory_guard, parse_size, resident_bytes


def test_a_block_that_outgrows_its_limit_stops_with_the_step_and_the_fix():
    limit = resident_bytes() + 150 * 2**20
    held = []
    with pytest.raises(MemoryLimitExceeded, match="stopped at calibration: resident memory reached") as caught:
        with memory_guard(limit, "use fewer calibration samples", interval=0.02) as guard:
            guard.step = "calibration"
            for _ in range(40):  # up to 1.2 GB in 30 MB steps, touched so they are resident
                held.append(np.ones(30 * 2**20 // 8))
                time.sleep(0.02)
    assert caught.value.exit_code == 137 and caught.value.hint == "use fewer calibration samples"
    assert len(held) < 40  # stopped on the way, not after the whole allocation


def test_it_stops_a_run_whose_shell_ignores_ctrl_c():
    """A job started in the background by a shell script ignores SIGINT; the guard's stop must not depend on it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    held = []
    try:
        with pytest.raises(MemoryLimitExceeded):
            with memory_guard(resident_bytes() + 150 * 2**20, "-", interval=0.02):
                for _ in range(40):
                    held.append(np.ones(30 * 2**20 // 8))
                    time.sleep(0.02)
        assert len(held) < 40 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored afterwards
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_max_memory_is_refused_with_the_fix():
    errors = []

    def run():
        try:
            with memory_guard(2**40, "-"):
                pass
        except EdgemmError as err:
            errors.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert errors and "main thread" in str(errors[0])


def test_a_block_within_its_limit_runs_to_the_end():
    with memory_guard(resident_bytes() + 2**30, "-", interval=0.02) as guard:
        guard.step = "small"
        total = sum(np.ones(1000).sum() for _ in range(10))
    assert total == 10_000 and not guard.tripped and guard.peak > 0


@pytest.mark.parametrize("text, size", [("6GB", 6 * 2**30), ("512MB", 512 * 2**20), ("1.5G", int(1.5 * 2**30)),
                                        ("6GiB", 6 * 2**30), ("1000", 1000)])
def test_sizes_read_as_people_write_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1GB", "0"])
def test_a_size_that_is_not_one_is_refused_with_the_format(text):
    with pytest.raises(EdgemmError, match="6GB, 512MB or 1.5G"):
        parse_size(text)


def test_a_run_stuck_in_a_long_library_call_is_ended_with_the_reason(tmp_path):
    """The main thread never returns to Python (a C call), memory stays over 1.25x the limit: after the grace
    period the process ends itself with exit 137 and says why. In a child process: the hard stop ends it."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import time\nimport numpy as np\n"
        "from edgemm.runtime.memory_guard import memory_guard, resident_bytes\n"
        "limit = resident_bytes() + 50 * 2**20\n"
        "held = np.ones(200 * 2**20 // 8)  # 200 MB resident, 4x past the limit's margin\n"
        "with memory_guard(limit, 'use fewer calibration samples', interval=0.02) as guard:\n"
        "    guard.step = 'calibration'\n"
        "    time.sleep(30)  # an interrupt from another thread does not wake a sleep: a stand-in for a C call\n"
        "print('not stopped')\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 137, done.stdout + done.stderr
    assert "stopped at calibration" in done.stderr and "still growing inside a library call" in done.stderr
    assert "fix: use fewer calibration samples" in done.stderr and "not stopped" not in done.stdout
    assert time.monotonic() - started < 25  # ended after the grace period, not when the call returned
