import os

import pytest

from wap_pipeline import local_stack
from wap_pipeline.settings import Settings
from wap_pipeline_tests.conftest import free_port
from wap_pipeline_tests.integration.cli import run_cli

pytestmark = pytest.mark.integration


def test_local_up_status_down_by_pid(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("WAP_LOCAL_PORT", str(port))
    monkeypatch.setenv("WAP_STATE_DIR", str(tmp_path))
    settings = Settings.from_env()
    assert run_cli("local", "status", check=False).returncode == 1
    assert "running" in run_cli("local", "up").stdout
    pid = int((tmp_path / f"moto-{port}.pid").read_text())
    assert local_stack.answers(settings.local_endpoint)
    # A second `up` reuses the answering server instead of starting another.
    run_cli("local", "up")
    assert int((tmp_path / f"moto-{port}.pid").read_text()) == pid
    assert run_cli("local", "status").returncode == 0
    assert "stopped" in run_cli("local", "down").stdout
    assert not local_stack.answers(settings.local_endpoint)
    assert "no local AWS server" in run_cli("local", "down").stdout


def test_a_server_started_in_this_process_is_gone_after_down(tmp_path):
    """The suite's and the chaos harness's own server: `down` reaps it (a child left a zombie still
    answers ``kill(pid, 0)``, so `down` used to wait out its timeout and leave it in the process table)."""
    settings = Settings(local_port=free_port(), state_dir=str(tmp_path))
    pid = local_stack.up(settings).pid
    assert pid is not None
    assert local_stack.down(settings, timeout_s=60.0) is True
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left behind
