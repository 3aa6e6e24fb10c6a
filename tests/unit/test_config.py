import re

import pytest
import yaml
from pydantic import ValidationError

from raytask.core.config import MAX_DURATION_S, AppConfig, SubmitOptions, TaskOptions
from raytask.core.endpoint import MAX_INT_DIGITS, MAX_JSON_DEPTH
from raytask.core.errors import ConfigError
from raytask.core.tenants import TenantSettings, resolve
from raytask.server.joblines import MAX_LINES

from ..support import ROOT


def test_defaults_match_the_spec() -> None:
    config = AppConfig()
    assert config.task_defaults.ttl_s == 86_400
    assert config.ingress_max_ongoing_requests == 256  # Serve's default of 5 throttles a task API


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


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_defaults_table_is_true() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| ([^|]+) \|", readme_section("Options and configuration"), re.M
    )
    documented = {name: value.strip() for name, value in rows}
    assert set(documented) == set(TaskOptions.model_fields)
    defaults = TaskOptions()
    for name, value in documented.items():
        actual = getattr(defaults, name)
        if actual is None:
            expected = None if value == "none" else value
        elif isinstance(actual, tuple):
            expected, actual = value, ",".join(actual)
        else:
            expected = value == "true" if isinstance(actual, bool) else type(actual)(value)
        assert actual == expected, name


def test_the_readme_app_defaults_are_true() -> None:
    section = readme_section("Options and configuration")
    config = AppConfig()
    assert f"`max_queue_size` ({config.max_queue_size} pending" in section
    assert config.max_request_bytes == 16 * 2**20 and "(16 MiB, then 413)" in section
    assert f"`ingress_max_ongoing_requests` ({config.ingress_max_ongoing_requests};" in section


def test_the_readme_limits_table_is_true() -> None:
    rows = re.findall(
        r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", readme_section("Limits"), re.M
    )
    by_config = {name.strip("` "): default for _, name, default, _ in rows if name.startswith("`")}
    config = AppConfig()
    for name, default in by_config.items():
        value = getattr(config, name)
        shown = {(): "none"}.get(value, f"{value:.0f}" if isinstance(value, float) else str(value))
        assert default.split()[0] == shown, name
    assert set(by_config) == {
        "max_request_bytes",
        "max_url_bytes",
        "max_header_bytes",
        "max_headers",
        "max_queue_size",
        "max_tasks",
        "max_task_bytes",
        "max_ttl_s",
        "cors_allow_origins",
        "max_file_bytes",
    }
    per_tenant = {name.split("`")[1]: d for _, name, d, _ in rows if name.startswith("tenants")}
    assert set(per_tenant) == {"max_pending", "submits_per_s"}
    assert all(getattr(TenantSettings(), n) is None for n in per_tenant)
    assert all(d.startswith("none") for d in per_tenant.values())
    fixed = {what: default for what, name, default, _ in rows if name.startswith("fixed")}
    assert fixed["lines of a batch file"] == f"{MAX_LINES:,}"
    assert fixed["nested arrays and objects in a body, the body included"] == str(MAX_JSON_DEPTH)
    assert fixed["digits of an integer in a body"] == str(MAX_INT_DIGITS)
    assert f"at most {MAX_DURATION_S:.0f} (366 days)" in readme_section("Limits")
    assert "1 to 100" in readme_section("Limits")
    assert TaskOptions(max_attempts=100).max_attempts == 100
    for bad in (0, 101):
        with pytest.raises(ValidationError):
            TaskOptions(max_attempts=bad)


@pytest.mark.parametrize(
    "options",
    [
        {"ttl_s": float("inf")},
        {"ttl_s": float("nan")},
        {"ttl_s": 1e12},
        {"timeout_s": float("inf")},
        {"timeout_s": MAX_DURATION_S + 1},
    ],
)
def test_durations_are_finite_and_bounded_everywhere(options: dict) -> None:
    with pytest.raises(ConfigError, match="invalid raytask config"):
        AppConfig.parse({"task_defaults": options})
    with pytest.raises(ValidationError):
        SubmitOptions(**options)
    with pytest.raises(ValidationError):
        TaskOptions(**options)
    assert TaskOptions(ttl_s=MAX_DURATION_S, timeout_s=MAX_DURATION_S).ttl_s == MAX_DURATION_S


def test_the_readme_tenants_example_is_a_config_that_does_what_it_says() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- tenants-config -->\n```yaml\n") + len(
        "<!-- tenants-config -->\n```yaml\n"
    )
    config = AppConfig.parse(yaml.safe_load(text[start : text.index("```", start)]))
    assert set(config.named_api_tokens().values()) == {"search-team", "batch-pipeline", "admin"}
    search, pipeline = (
        resolve(config.tenants, "search-team"),
        resolve(config.tenants, "batch-pipeline"),
    )
    assert (search.weight, search.submits_per_s, search.max_pending) == (3, 50, 10000)
    assert (pipeline.weight, pipeline.max_running, pipeline.max_pending) == (1, 8, 10000)
