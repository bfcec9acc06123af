"""--max-memory: the run stops itself with the step named, before the machine runs out."""
from __future__ import annotations

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
