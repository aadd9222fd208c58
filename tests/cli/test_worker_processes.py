"""medm2t/cli/worker_processes.py: how many worker processes, and the torch threads each one gets."""
from __future__ import annotations

import pytest

from medm2t.cli import UserError
from medm2t.cli import worker_processes
from medm2t.cli.worker_processes import process_env, processes_wanted


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(worker_processes, "machine_cores", lambda: 4)


def test_processes_wanted(four_cores):
    assert processes_wanted(None, 6) == 1 and processes_wanted("3", 6) == 3
    assert processes_wanted("auto", 6) == 4
    assert processes_wanted("auto", 6, cores_each=2) == 2  # a worker and its model process: two cores
    assert processes_wanted("auto", 2) == 2  # never more processes than partitions
    for bad in ("0", "two"):
        with pytest.raises(UserError, match="--processes"):
            processes_wanted(bad, 6)


def test_each_process_gets_its_share_of_the_cores_unless_the_settings_say(four_cores):
    assert process_env(2, env={})["MEDM2T_TORCH_THREADS"] == "2"
    assert process_env(3, env={})["MEDM2T_TORCH_THREADS"] == "1"
    assert process_env(8, env={})["MEDM2T_TORCH_THREADS"] == "1"  # never 0 (torch's own default)
    assert process_env(2, 3, {"PATH": "/bin"}) == {"MEDM2T_TORCH_THREADS": "3", "PATH": "/bin"}
    # a worker whose model has a process of its own leaves one of its cores to its event loop
    assert process_env(1, env={}, cores_per_worker=2)["MEDM2T_TORCH_THREADS"] == "3"
    assert process_env(2, env={}, cores_per_worker=2)["MEDM2T_TORCH_THREADS"] == "1"


def test_a_worker_with_its_model_in_a_process_of_its_own_keeps_two_cores_busy(tmp_path):
    from medm2t.settings import Settings

    assert worker_processes.cores_each(Settings(scorers="news2,medm2t")) == 2
    assert worker_processes.cores_each(Settings(scorers="news2,medm2t", model_process=False)) == 1
    assert worker_processes.cores_each(Settings(scorers="news2")) == 1
    assert worker_processes.cores_each(Settings(scorers="auto", checkpoint=tmp_path / "none")) == 1


def test_the_variable_reaches_torch(monkeypatch):
    """The worker's MedM2T loader applies MEDM2T_TORCH_THREADS, as process_env sets it, while it loads the
    model (the demo checkpoint)."""
    import torch

    from medm2t.settings import Settings
    from stream.scorers import load_medm2t

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    monkeypatch.setenv("MEDM2T_TORCH_THREADS", str(wanted))
    try:
        load_medm2t(Settings(device="cpu"))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
