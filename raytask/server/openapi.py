"""The OpenAPI 3.1 document of an app's routes (``GET /openapi.json``).

The status answer's schema is generated from :class:`~raytask.core.state.TaskState` and the
error body's from :class:`ErrorBody`, so the document cannot drift from what is sent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..core.endpoint import Endpoint
from ..core.state import TaskState

_REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """The JSON body of every error answer."""

    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="What went wrong, for programs (e.g. task_not_found).")
    detail: Any = Field(None, description="More detail, e.g. pydantic's validation errors.")


def _schemas(*schemas: dict[str, Any]) -> dict[str, Any]:
    """Component schemas by title, with the models' nested ``$defs`` hoisted beside them."""
    components: dict[str, Any] = {}
    for schema in schemas:
        components.update(schema.pop("$defs", {}))
        components[schema["title"]] = schema
    return components


def openapi_document(endpoints: list[Endpoint], prefix: str = "") -> dict[str, Any]:
    """A small OpenAPI 3.1 document of the app's routes."""
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    }
    task_id_param = [
        {"name": "task_id", "in": "query", "required": True, "schema": {"type": "string"}}
    ]
    task_state = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskState"}}}
    }
    paths: dict[str, Any] = {}
    for e in endpoints:
        body = {"required": True, "content": {"application/json": {"schema": e.input_schema()}}}
        result = {"description": "the result", "content": {"*/*": {"schema": e.output_schema()}}}
        base = f"{prefix}/{e.name}"
        paths[base] = {
            "post": {
                "summary": f"call {e.name}",
                "requestBody": body,
                "responses": {"200": result, "422": error, "500": error},
            }
        }
        if not e.is_task:
            continue
        paths[f"{base}/submit"] = {
            "post": {
                "summary": f"submit a {e.name} task",
                "requestBody": body,
                "responses": {"200": task_state, "422": error, "429": error},
            }
        }
        paths[f"{base}/status"] = {
            "get": {
                "parameters": task_id_param,
                "responses": {"200": task_state, "404": error, "410": error},
            }
        }
        paths[f"{base}/get"] = {
            "get": {
                "parameters": task_id_param,
                "responses": {
                    "200": result,
                    "400": error,
                    "404": error,
                    "410": error,
                    "500": error,
                },
            }
        }
        for verb in ("cancel", "retry"):
            op = {
                "parameters": task_id_param,
                "responses": {"200": task_state, "404": error, "409": error},
            }
            paths[f"{base}/{verb}"] = {"post": op, "put": op}
    return {
        "openapi": "3.1.0",
        "info": {"title": "raytask", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": _schemas(
                ErrorBody.model_json_schema(ref_template=_REF),
                TaskState.model_json_schema(mode="serialization", ref_template=_REF),
            )
        },
    }
