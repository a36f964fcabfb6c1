import pytest

from wap_pipeline.settings import Settings


def test_local_profile_points_at_the_local_server(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    settings = Settings.from_env({"WAP_LOCAL_PORT": "4999"})
    assert settings.is_local
    assert settings.endpoint_url == "http://127.0.0.1:4999"


def test_aws_endpoint_url_wins_in_the_local_profile(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7777")
    assert Settings.from_env({}).endpoint_url == "http://127.0.0.1:7777"


def test_aws_profile_hard_codes_no_endpoint(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    settings = Settings.from_env({"WAP_PROFILE": "aws", "WAP_QUEUE_NAME": "prod-events"})
    assert settings.endpoint_url is None
    assert settings.queue_name == "prod-events"


def test_numbers_and_bad_values():
    assert Settings.from_env({"WAP_MAX_RECEIVE_COUNT": "5"}).max_receive_count == 5
    assert Settings.from_env({"WAP_STEP_RETRY_DELAY_S": "0.5"}).step_retry_delay_s == 0.5
    with pytest.raises(ValueError, match="WAP_BATCH_MAX_FILES"):
        Settings.from_env({"WAP_BATCH_MAX_FILES": "many"})
    with pytest.raises(ValueError, match="WAP_PROFILE"):
        Settings.from_env({"WAP_PROFILE": "staging"})
