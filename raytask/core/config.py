"""Typed settings: per-task options and the app-wide configuration.

Task options are resolved in three layers, each overriding the one before: the app-wide
``task_defaults``, the ``@raytask.task(...)`` decorator, and (for the options a client
may set) the per-submit overrides sent apart from the method's arguments.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, InvalidInputError, validation_reasons
from .queue import MAX_PRIORITY, MIN_PRIORITY
from .tenants import TenantSettings
from .tokens import check_name, check_token, given_tokens, named_tokens
from .webhooks import (
    DEFAULT_EVENTS,
    DEFAULT_RETRY_DELAYS_S,
    EVENTS_PATTERN,
    SECRET_ENV,
    URL_PATTERN,
    check_secret,
    parse_events,
)

DAY_S = 86_400.0
MAX_DURATION_S = 366 * DAY_S
"""The longest duration any option takes (a year): finite, and every time it yields can be
written as a date."""

# Durations are finite floats in (0, MAX_DURATION_S]: ``inf`` or ``1e309`` would never
# expire, and ``1e12`` seconds cannot be written as a date.
_DURATION = {"gt": 0, "le": MAX_DURATION_S, "allow_inf_nan": False}


class TaskOptions(BaseModel):
    """How one task is run and how long its result is kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl_s: float = Field(
        DAY_S, description="Seconds a finished task's result is kept; then 410.", **_DURATION
    )
    timeout_s: float = Field(
        3600.0,
        **_DURATION,
        description="Seconds one attempt may run before it is cancelled and counted as failed.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Attempts a task gets when its replica dies or it times out.",
    )
    retry_exceptions: bool = Field(
        False,
        description="Whether an exception raised by the method also uses up an attempt and "
        "re-queues the task (off: exceptions are final, as they are usually deterministic).",
    )
    rerun_lost_results: bool = Field(
        True,
        description="Whether a success whose result was too large to journal, and was lost "
        "with a task-manager restart, runs again (off: it ends in failure).",
    )
    priority: int = Field(
        0,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="Higher runs first within the endpoint; equal priorities in submit order.",
    )
    max_queue_s: float | None = Field(
        None,
        description="A task not started within this many seconds of its submit never runs: "
        "it ends cancelled, its error starting 'expired:' (unset: it waits as long as it must).",
        **_DURATION,
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Where the task's events are POSTed, signed (Standard Webhooks).",
    )
    webhook_events: tuple[str, ...] = Field(
        DEFAULT_EVENTS,
        description="Which events are sent: started, progress, output, completed, failed, "
        "cancelled.",
    )

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> tuple[str, ...]:
        return parse_events(value)


class SubmitOptions(BaseModel):
    """The options a client may override per submit (query parameters over HTTP)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl_s: float | None = Field(None, description="Overrides the result TTL.", **_DURATION)
    timeout_s: float | None = Field(None, description="Overrides the attempt timeout.", **_DURATION)
    max_attempts: int | None = Field(None, ge=1, le=100, description="Overrides max_attempts.")
    priority: int | None = Field(
        None,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="-10..10, higher runs first within the endpoint (default 0).",
    )
    max_queue_s: float | None = Field(
        None, description="Seconds the task may wait to start; then it expires.", **_DURATION
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        pattern=URL_PATTERN,
        description="An http(s) URL that gets the task's events, signed (Standard Webhooks).",
    )
    webhook_events: str | None = Field(
        None,
        max_length=200,
        pattern=EVENTS_PATTERN,
        description="Comma-separated events to send: started, progress, output, completed, "
        "failed, cancelled (default: the three terminal ones).",
    )

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        if value is None:
            return None
        return ",".join(parse_events(value))

    def apply(self, base: TaskOptions) -> TaskOptions:
        """``base`` with the fields this submit set."""
        changes: dict[str, Any] = self.model_dump(exclude_none=True)
        if "webhook_events" in changes:
            changes["webhook_events"] = parse_events(changes["webhook_events"])
        return base.model_copy(update=changes) if changes else base


class AppConfig(BaseModel):
    """App-wide settings, from ``raytask.app(..., config=...)`` or the YAML ``args``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_defaults: TaskOptions = Field(
        default_factory=TaskOptions, description="Defaults for every task endpoint."
    )
    max_queue_size: int = Field(
        100_000, ge=1, description="Pending tasks allowed before submit answers 429."
    )
    max_tasks: int = Field(
        1_000_000,
        ge=1,
        description="Tasks held in any state (finished ones until their TTL ends) before "
        "submit answers 429.",
    )
    max_task_bytes: int = Field(
        8 * 1024**3,
        ge=1,
        description="Bytes of task inputs, kept results and streamed chunks held (finished "
        "tasks' until their TTL ends) before submit answers 429.",
    )
    max_ttl_s: float = Field(
        30 * DAY_S,
        description="The longest ttl_s a submit may ask for; more is 422.",
        **_DURATION,
    )
    retry_after_s: float = Field(
        1.0, gt=0, description="The Retry-After a 429 carries, in seconds."
    )
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest request body accepted; larger is 413."
    )
    max_url_bytes: int = Field(
        8 * 1024, ge=256, description="Longest path plus query string accepted; longer is 414."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Most bytes of header names and values a request may carry; more is 431.",
    )
    max_headers: int = Field(
        100, ge=8, description="Most headers a request may carry; more is 431."
    )
    sweep_interval_s: float = Field(
        5.0, gt=0, description="How often the manager drops results past their TTL."
    )
    ingress_max_ongoing_requests: int = Field(
        256,
        ge=1,
        description="max_ongoing_requests of the ingress deployment (Serve's default of 5 "
        "throttles a task API to a few dozen requests per second).",
    )
    ingress_num_replicas: int = Field(1, ge=1, description="Replicas of the ingress.")
    ingress_num_cpus: float = Field(
        0.0, ge=0, description="CPUs each ingress replica reserves (it mostly waits on I/O)."
    )
    access_log: bool = Field(
        False,
        description="Whether the ingress logs one line per HTTP request, with the endpoint "
        "and the task id (off: a task's only line is its failure warning, if it fails).",
    )
    journal: str | None = Field(
        None,
        description="Where the task manager journals its tasks: unset for SQLite at "
        "$RAYTASK_HOME/journal/<app>.db (RAYTASK_HOME defaults to ~/.raytask), a file path "
        "for SQLite there, 'redis://host:port/db' for Redis, or 'off'.",
    )
    journal_result_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=1024 * 1024,
        description="Results up to this size (pickled) are journaled with their task, so "
        "they survive a task-manager restart; larger ones stay in Ray's object store only.",
    )
    manager_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="How long the ingress waits for the task manager before answering 503.",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Most tasks dispatched to one model deployment at once; by default "
        "its running replicas times its max_ongoing_requests.",
    )
    dispatch_batch_size: int = Field(
        64,
        ge=1,
        le=1024,
        description="Most queued tasks sent to one replica in one request (batched "
        "dispatch; they run there at once, so @serve.batch can join them). An idle "
        "system never waits to fill a batch.",
    )
    max_stream_chunks: int = Field(
        100_000,
        ge=1,
        description="Most chunks one attempt of a generator task may stream; past it the "
        "task ends in failure (StreamTooLarge).",
    )
    max_stream_bytes: int = Field(
        64 * 1024**2,
        ge=1,
        description="Most bytes (as estimated) one attempt of a generator task may stream; "
        "past it the task ends in failure (StreamTooLarge).",
    )
    batch_dir: str | None = Field(
        None,
        description="Where batch jobs keep their files (inputs, outputs, progress): unset "
        "for $RAYTASK_HOME/files/<app>, on the task manager's node.",
    )
    batch_window: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Most lines of one batch job queued or running at once: the manager "
        "feeds more as they finish, so its memory does not grow with the job.",
    )
    max_file_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest file POST /v1/files takes; larger is 413."
    )
    webhook_secret: str | None = Field(
        None,
        description="The whsec_<base64> secret that signs webhooks (default: the "
        "RAYTASK_WEBHOOK_SECRET environment variable; webhooks need one of the two).",
    )
    webhook_allow_private_networks: bool = Field(
        False,
        description="Whether webhooks may go to loopback, private and link-local addresses "
        "(off: a task API must not become a way into the internal network).",
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, le=300, allow_inf_nan=False, description="Timeout of one delivery attempt."
    )
    webhook_retry_delays_s: tuple[float, ...] = Field(
        DEFAULT_RETRY_DELAYS_S,
        max_length=20,
        description="Waits before each retry of a failed delivery (its length + 1 attempts).",
    )
    webhook_max_concurrency: int = Field(
        64, ge=1, le=10_000, description="Deliveries in flight at once, over all tasks."
    )

    api_tokens: tuple[str, ...] | dict[str, str] | str | None = Field(
        None,
        description="Bearer tokens the app accepts: a list, a mapping of tenant names to "
        "tokens, or the path of a file with one per line (NAME TOKEN, or TOKEN alone). When "
        "any are set (here, in api_tokens_file or in RAYTASK_API_TOKENS), every route but "
        "/livez, /healthz, /readyz and the dashboard's page needs one.",
    )
    api_tokens_file: str | None = Field(
        None,
        description="A file of API tokens, one per line: NAME TOKEN, or TOKEN alone (a line "
        "starting with # is a comment).",
    )
    admin_tokens: tuple[str, ...] = Field(
        (),
        description="Tokens that read every tenant's tasks and usage, /queue and /metrics "
        "(with token_isolation, no other token does). They are accepted like api_tokens.",
    )
    tenants: dict[str, TenantSettings] = Field(
        default_factory=dict,
        description="Per tenant (a token's name; 'anonymous' without tokens): weight, "
        "max_pending, max_running, submits_per_s. The 'default' entry fills every tenant's "
        "unset settings.",
    )
    cors_allow_origins: tuple[str, ...] = Field(
        (),
        description="Origins (scheme://host[:port]) whose web pages may call the app: they "
        "get CORS answers, and their state-changing requests are taken. Any other foreign "
        "Origin is refused 403 on state-changing routes.",
    )
    token_isolation: bool = Field(
        False,
        description="Whether a task is visible only to the token that submitted it (404 to "
        "the others): one app, several tenants. Tenants then read only their own usage.",
    )

    @field_validator("api_tokens")
    @classmethod
    def _tokens(
        cls, value: tuple[str, ...] | dict[str, str] | str | None
    ) -> tuple[str, ...] | dict[str, str] | str | None:
        if value is None or isinstance(value, str):  # a file, read where the routes run
            return value
        given_tokens(value)  # raises on a malformed name or token
        return value

    @field_validator("admin_tokens")
    @classmethod
    def _admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_token(token, f"admin_tokens[{i}]") for i, token in enumerate(value))

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantSettings]) -> dict[str, TenantSettings]:
        for name in value:
            check_name(name, "tenants")
        return value

    def named_api_tokens(self) -> dict[str, str]:
        """Every token the app accepts (``api_tokens``, ``api_tokens_file``, the
        comma-separated ``RAYTASK_API_TOKENS`` and ``admin_tokens``) and the tenant it names
        (see :mod:`raytask.core.tokens`); empty when the app is open.

        Raises:
            ConfigError: a file cannot be read, or a token is malformed (the message
                says where, never what).
        """
        listed = self.api_tokens
        given = [] if listed is None or isinstance(listed, str) else given_tokens(listed)
        files = [
            f for f in (listed if isinstance(listed, str) else None, self.api_tokens_file) if f
        ]
        return named_tokens(given, files, self.admin_tokens)

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)

    @field_validator("webhook_retry_delays_s")
    @classmethod
    def _delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (0 <= delay <= MAX_DURATION_S) for delay in value):
            raise ValueError("each retry delay is from 0 to 366 days")
        return value

    def resolved_webhook_secret(self) -> str | None:
        """The secret that signs webhooks: this config's, else ``RAYTASK_WEBHOOK_SECRET``."""
        secret = self.webhook_secret or os.environ.get(SECRET_ENV) or None
        return None if secret is None else check_secret(secret)

    def check_submit(self, options: SubmitOptions) -> None:
        """Refuse per-submit options past the app's caps.

        Raises:
            InvalidInputError: ``ttl_s`` is over ``max_ttl_s``.
        """
        if options.ttl_s is not None and options.ttl_s > self.max_ttl_s:
            raise InvalidInputError(
                f"ttl_s={options.ttl_s:g} is over this app's max_ttl_s={self.max_ttl_s:g}"
            )

    @classmethod
    def parse(cls, value: AppConfig | dict[str, Any] | None, **overrides: Any) -> AppConfig:
        """Build a config from a model, a dict (YAML ``args``) or nothing.

        Raises:
            ConfigError: a setting is unknown or out of range.
        """
        if isinstance(value, AppConfig):
            data = value.model_dump()
        else:
            data = dict(value or {})
        data.update(overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            # Without the values that failed: a token or a secret never reaches a log.
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            reasons = validation_reasons(errors, "value", limit=None)
            raise ConfigError(f"invalid raytask config: {reasons}") from None
