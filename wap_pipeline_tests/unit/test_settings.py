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


def test_the_aws_profile_takes_boto3s_region_unless_wap_region_names_one():
    """Every client is given the settings' region explicitly, so the aws profile must take the
    region boto3 would have used, not the local default."""
    aws = {"WAP_PROFILE": "aws"}
    assert Settings.from_env({**aws, "AWS_REGION": "eu-west-1"}).region == "eu-west-1"
    assert Settings.from_env({**aws, "AWS_DEFAULT_REGION": "eu-central-1"}).region == "eu-central-1"
    assert (
        Settings.from_env({**aws, "AWS_REGION": "eu-west-1", "WAP_REGION": "us-west-2"}).region == "us-west-2"
    )
    assert Settings.from_env({"AWS_REGION": "eu-west-1"}).region == "us-east-1", "local: the local server's"


def test_the_settings_resource_holds_every_setting_typed_and_gives_them_back():
    """Dagster's configuration of the settings is Settings' own schema: one list of names, types and
    defaults for the CLIs and the resources (issue 16)."""
    from wap_pipeline.resources import SettingsResource, settings_resource

    settings = Settings.from_env({"WAP_QUEUE_NAME": "q", "WAP_STEP_RETRIES": "3", "WAP_ENGINE": "spark"})
    assert settings_resource(settings).settings() == settings
    assert SettingsResource().settings() == Settings()
    fields = SettingsResource.to_config_schema().as_field().config_type.fields
    assert fields["step_retries"].config_type.inner_type.key == "IntSourceType"
    assert fields["step_retries"].default_value == Settings.step_retries
    with pytest.raises(Exception, match="step_retries"):
        SettingsResource(step_retries="many")
