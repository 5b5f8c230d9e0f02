"""A noisy neighbour inside an instance's CPU cgroup (`python -m candor_demo.cpu_hog`): spins on one core.

It stops by itself once the demo that started it is gone (its parent changes), so a demo killed without
a chance to clean up leaves no process burning CPU behind.
"""

from __future__ import annotations

import os


def spin() -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        for _ in range(100_000):  # a few milliseconds of pure CPU between checks
            pass


if __name__ == "__main__":
    spin()
