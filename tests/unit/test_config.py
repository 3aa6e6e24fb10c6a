import pytest

from raytask.core.config import AppConfig, SubmitOptions, TaskOptions
from raytask.core.errors import ConfigError


def test_defaults_match_the_spec() -> None:
    config = AppConfig()
    assert config.task_defaults.ttl_s == 86_400
    assert config.ingress_max_ongoing_requests > 5


def test_parse_from_yaml_args_and_overrides() -> None:
    config = AppConfig.parse({"max_queue_size": 3, "task_defaults": {"ttl_s": 5}}, retry_after_s=2)
    assert (config.max_queue_size, config.task_defaults.ttl_s, config.retry_after_s) == (3, 5, 2)
    assert AppConfig.parse(config) == config


@pytest.mark.parametrize(
    "bad", [{"max_queue_size": 0}, {"nope": 1}, {"task_defaults": {"ttl_s": 0}}]
)
def test_bad_config_is_a_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError, match="invalid raytask config"):
        AppConfig.parse(bad)


def test_submit_options_override_only_what_they_set() -> None:
    base = TaskOptions(ttl_s=10, timeout_s=20)
    assert SubmitOptions().apply(base) is base
    assert SubmitOptions(ttl_s=1).apply(base) == TaskOptions(ttl_s=1, timeout_s=20)
