"""Issue 21 on Ray: a local cluster this module starts (2 CPUs, loopback, no dashboard, token auth) gives the
serial executor's records; a Ray worker killed mid-candidate is retried; nothing listening at --address,
or Ray missing, is a one-line error."""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest

from tests.test_executors import argv, fresh, same_results

if importlib.util.find_spec("ray") is None:
    pytest.skip("the ray extra is not installed: pip install nascli[ray]", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module, stopped by this process (ray.shutdown), never `ray stop`."""
    # Read when Ray is imported, so set first: token auth, and a loopback-only node (nascli.executors.ray_cluster).
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_gives_the_serial_records(tmp_path, cluster, serial_k2, demo_data, tiny_recipe, run_cli):
    assert cluster.startswith("127.0.0.1:")
    run = tmp_path / "run"
    r = run_cli(argv(run, tiny_recipe, demo_data, "--executor", "ray"))  # this process's cluster
    assert r.code == 0, r.stderr
    same_results(run, serial_k2)
    for i in range(6):
        name = f"candidates/{i:04d}/weights.pth"
        assert (run / "search" / name).read_bytes() == (serial_k2 / "search" / name).read_bytes()


@pytest.mark.slow  # about a minute here: Ray starts fresh workers for the kill point's environment, then again
def test_a_ray_worker_killed_mid_candidate_is_retried(tmp_path, cluster, serial_k2, demo_data,
                                                      tiny_recipe):
    run = tmp_path / "run"
    marker = tmp_path / "killed-once"
    # A driver in its own process on the module's cluster; the kill point reaches its tasks' workers.
    done = fresh(argv(run, tiny_recipe, demo_data, "--executor", "ray", "--address", cluster),
                 NASCLI_KILL_AT="train_step:2", NASCLI_KILL_ONCE=str(marker))
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.exists()
    same_results(run, serial_k2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_at_the_address_fails_fast(tmp_path, demo_data, tiny_recipe, run_cli):
    address = f"127.0.0.1:{_free_port()}"
    r = run_cli(argv(tmp_path / "run", tiny_recipe, demo_data, "--executor", "ray", "--address", address))
    assert r.code == 2, r.stderr
    assert f"option --address: nothing listens at {address}" in r.stderr and "Hint:" in r.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_missing_extra_names_it(tmp_path, demo_data, tiny_recipe, run_cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    r = run_cli(argv(tmp_path / "run", tiny_recipe, demo_data, "--executor", "ray"))
    assert r.code == 2, r.stderr
    assert "Ray is not installed" in r.stderr and "pip install nascli[ray]" in r.stderr


@pytest.mark.slow  # half a minute here: a fresh driver starts (and stops) a cluster of its own
def test_a_local_cluster_started_by_the_command_is_stopped_by_it(tmp_path, serial_k2, demo_data,
                                                                 tiny_recipe):
    # No --address and no cluster in that process: the command starts one on loopback and shuts it down itself.
    run = tmp_path / "run"
    done = fresh(argv(run, tiny_recipe, demo_data, "--executor", "ray", "--workers", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    same_results(run, serial_k2)
