"""The OpenMP waiting choice: a short spin on a quiet machine, passive waiting on a busy one."""

from __future__ import annotations

import pytest

from aipo_cli.openmp import QUIET_SPIN_COUNT, machine_is_quiet, openmp_waiting


@pytest.mark.parametrize(
    ("others_runnable", "cpus", "quiet"),
    [
        ([0, 0, 0, 0, 0], 2, True),  # nothing else runs
        ([0, 2, 0, 0, 1], 2, True),  # a short burst in one reading
        ([2, 2, 3, 2, 1], 2, False),  # two other busy processes on two cores
        ([1, 1, 1, 0, 1], 2, False),  # half the cores busy
        ([3, 4, 3, 5, 4], 16, True),  # a big machine with a few jobs
    ],
)
def test_quiet_means_under_half_the_cores_wanted_by_others(others_runnable, cpus, quiet):
    assert machine_is_quiet(others_runnable, cpus) is quiet


def test_quiet_spins_briefly_busy_sleeps_and_a_user_setting_wins():
    assert openmp_waiting({}, quiet=True) == {"GOMP_SPINCOUNT": QUIET_SPIN_COUNT}
    assert openmp_waiting({}, quiet=False) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_waiting({"OMP_WAIT_POLICY": "ACTIVE"}, quiet=False) == {}
    assert openmp_waiting({"GOMP_SPINCOUNT": "0"}, quiet=True) == {}
