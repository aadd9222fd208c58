"""medm2t/cli/worker_processes.py: how many worker processes, and the torch threads each one gets."""
from __future__ import annotations

import pytest

from medm2t.cli import UserError
from medm2t.cli.worker_processes import machine_cores, process_env, processes_wanted


def test_processes_wanted():
    assert processes_wanted(None, 6) == 1 and processes_wanted("3", 6) == 3
    assert processes_wanted("auto", 6) == max(1, min(machine_cores(), 6))
    assert processes_wanted("auto", 1) == 1  # never more processes than partitions
    for bad in ("0", "two"):
        with pytest.raises(UserError, match="--processes"):
            processes_wanted(bad, 6)


def test_each_process_gets_its_share_of_the_cores_unless_the_user_chose():
    cores = machine_cores()
    assert process_env(1, {})["MEDM2T_TORCH_THREADS"] == str(cores)
    assert process_env(cores * 2, {})["MEDM2T_TORCH_THREADS"] == "1"  # never 0 (torch's own default)
    assert process_env(2, {"MEDM2T_TORCH_THREADS": "3", "PATH": "/bin"}) == {"MEDM2T_TORCH_THREADS": "3", "PATH": "/bin"}


def test_the_setting_reaches_torch():
    """The worker's MedM2T loader applies MEDM2T_TORCH_THREADS as it loads the model (the demo checkpoint)."""
    import torch

    from medm2t.settings import Settings
    from stream.scorers import _load_medm2t

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        _load_medm2t(Settings(torch_threads=wanted, device="cpu"))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
