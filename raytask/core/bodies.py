"""The JSON bodies of the task-control routes (SPEC §7), as models.

The routes validate requests with the request models; the OpenAPI document is generated
from all of them, so the two cannot drift (the fuzz tier checks the answers against it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .endpoint import MAX_BATCH
from .state import TaskState


class StatusManyRequest(BaseModel):
    """``POST /status_many``: the tasks whose status to read, in the order to answer."""

    model_config = ConfigDict(extra="forbid", strict=True, title="StatusManyRequest")

    task_ids: list[str] = Field(max_length=MAX_BATCH, description="At most 1000 task ids.")


class CancelManyRequest(BaseModel):
    """``POST /NAME/cancel_many``: either ``task_ids``, or a ``status`` to purge."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="CancelManyRequest",
        json_schema_extra={"oneOf": [{"required": ["task_ids"]}, {"required": ["status"]}]},
    )

    # Not nullable: a field is given or left out (the schema's oneOf says which).
    task_ids: list[str] = Field(  # type: ignore[assignment]
        None,
        max_length=MAX_BATCH,
        description="Tasks to cancel (unknown, finished and other endpoints' ones are skipped).",
    )
    status: Literal["pending", "in_progress"] = Field(  # type: ignore[assignment]
        None, description='Cancel every task of the endpoint in this state ("pending": purge).'
    )

    @model_validator(mode="after")
    def _one_of(self) -> CancelManyRequest:
        if (self.task_ids is None) == (self.status is None):
            raise ValueError('give either "task_ids" or "status", not both and not neither')
        return self


class DeleteManyRequest(BaseModel):
    """``POST /NAME/delete_many``: either ``task_ids``, or a finished ``status`` (and an
    age) to clean up."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="DeleteManyRequest",
        json_schema_extra={"oneOf": [{"required": ["task_ids"]}, {"required": ["status"]}]},
    )

    task_ids: list[str] = Field(  # type: ignore[assignment]
        None,
        max_length=MAX_BATCH,
        description="Finished tasks to delete (unfinished and unknown ones are skipped).",
    )
    status: Literal["success", "failure", "cancelled"] = Field(  # type: ignore[assignment]
        None, description="Delete every task of the endpoint that finished in this state."
    )
    older_than_s: float = Field(
        0.0,
        ge=0,
        description="Only the tasks that finished at least this many seconds ago.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> DeleteManyRequest:
        if (self.task_ids is None) == (self.status is None):
            raise ValueError('give either "task_ids" or "status", not both and not neither')
        return self


class Queued(BaseModel):
    """One task of a ``submit_many`` answer."""

    task_id: str
    status: str


class SubmitManyAnswer(BaseModel):
    """``POST /NAME/submit_many``: the new tasks, in input order."""

    tasks: list[Queued]


class ItemError(BaseModel):
    """A task of ``status_many`` that has no status answer, and why."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    task_id: str
    error: str
    status_code: int = Field(description="What GET /NAME/status would have answered.")


class StatusManyAnswer(BaseModel):
    """``POST /status_many``: one entry per id asked, in order."""

    tasks: list[TaskState | ItemError]


class TaskPage(BaseModel):
    """``GET /NAME/tasks`` and ``GET /tasks``: a page of status answers, newest first."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    tasks: list[TaskState]
    next_cursor: str | None = Field(
        None, description="Pass it as `cursor` for the next page; null on the last one."
    )


class CancelManyAnswer(BaseModel):
    """``POST /NAME/cancel_many``: how many tasks this request cancelled."""

    cancelled: int


class DeleteManyAnswer(BaseModel):
    """``POST /NAME/delete_many``: how many tasks were deleted, and how many of the given
    ids were not (unfinished, unknown or not the endpoint's)."""

    deleted: int
    skipped: int


class UsageRow(BaseModel):
    """One row of ``GET /usage``: a tenant's finished tasks of one endpoint in one hour,
    or their sum over the keys the grouping leaves out (those are null)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    tenant: str | None
    endpoint: str | None
    hour: str | None = Field(description="The hour's start, ISO-8601 UTC.")
    tasks: int
    succeeded: int
    failed: int
    cancelled: int
    run_s: float = Field(description="Wall seconds the tasks ran, over all attempts.")
    gpu_s: float = Field(description="run_s times the deployment's num_gpus.")
    queue_s_p50: float | None
    queue_s_p99: float | None


class UsageAnswer(BaseModel):
    """``GET /usage``: what the tenants' finished tasks cost, kept 400 days."""

    usage: list[UsageRow]
