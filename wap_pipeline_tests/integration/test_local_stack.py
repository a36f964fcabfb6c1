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
