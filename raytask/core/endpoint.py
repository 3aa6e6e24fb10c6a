"""One endpoint: a marked method, its input model, its output schema and its encoding.

The input model is derived from the method's signature with pydantic, so a submit is
validated before anything is queued; the same model re-validates the stored (JSON-safe)
arguments on the replica, which turns them back into the Python types the method expects.
"""

from __future__ import annotations

import inspect
import io
import typing
from collections.abc import Callable
from functools import cached_property
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from .config import TaskOptions
from .decorators import EndpointSpec, get_spec
from .errors import ConfigError, InvalidInputError

SERVICE_ROUTES = frozenset(
    {"schema.json", "openapi.json", "docs.json", "readyz", "livez", "healthz", "metrics", "queue"}
)
"""The app-wide routes the ingress serves, so no endpoint may take their names."""


def _is_pil_image(value_or_type: Any) -> bool:
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return any(
        c.__module__.startswith("PIL.") and c.__name__ == "Image"
        for c in getattr(cls, "__mro__", ())
    )


class Endpoint:
    """A ``@raytask.task`` or ``@raytask.api`` method of a model deployment.

    Args:
        func: the undecorated function (``Class.method``).
        spec: what the decorator recorded.
        deployment: the name of the Serve deployment that holds the method.
        defaults: the app-wide task options the decorator's options override.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        spec: EndpointSpec,
        deployment: str,
        defaults: TaskOptions | None = None,
    ) -> None:
        self.func = func
        self.method = func.__name__
        self.name = spec.name or func.__name__
        self.kind = spec.kind
        self.deployment = deployment
        self.options = (defaults or TaskOptions()).model_copy(update=spec.options)
        if self.name in SERVICE_ROUTES or "/" in self.name:
            raise ConfigError(f"endpoint name {self.name!r} is reserved or not a path segment")
        self.is_async = inspect.iscoroutinefunction(func)
        self._hints = self._resolve_hints()
        self._check_signature()

    @property
    def is_task(self) -> bool:
        """Whether the endpoint has task routes (submit/status/get/cancel/retry)."""
        return self.kind == "task"

    def _check_signature(self) -> None:
        for param in list(inspect.signature(self.func).parameters.values())[1:]:
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                raise ConfigError(f"{self.name}: *{param.name} cannot be sent as JSON")
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise ConfigError(f"{self.name}: positional-only {param.name!r} unsupported")

    def _resolve_hints(self) -> dict[str, Any]:
        try:
            hints = typing.get_type_hints(self.func, include_extras=True)
        except Exception as exc:
            raise ConfigError(f"cannot resolve the type hints of {self.name}: {exc}") from None
        # Replicas get the class by value (cloudpickle), with only the globals its code
        # names, so string annotations could not be resolved there: ship them resolved.
        self.func.__annotations__ = hints
        return hints

    @cached_property
    def input_model(self) -> type[BaseModel]:
        """A pydantic model of the method's keyword arguments (``self`` excluded)."""
        fields: dict[str, Any] = {}
        extra = "forbid"
        for param in list(inspect.signature(self.func).parameters.values())[1:]:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                extra = "allow"
                continue
            annotation = self._hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, default)
        config = ConfigDict(extra=extra, arbitrary_types_allowed=True)  # type: ignore[typeddict-item]
        return create_model(f"{self.name}_input", __config__=config, **fields)

    @cached_property
    def return_type(self) -> Any:
        """The method's return annotation (``Any`` when missing)."""
        return self._hints.get("return", Any)

    def validate(self, data: Any) -> dict[str, Any]:
        """Validate client input; return the stored, JSON-safe keyword arguments.

        Only the fields the client sent are kept, so the method's own defaults apply.

        Raises:
            InvalidInputError: ``data`` does not match the signature.
        """
        if not isinstance(data, dict):
            raise InvalidInputError(
                f"the body of {self.name} must be a JSON object of its arguments, "
                f"got {type(data).__name__}"
            )
        try:
            model = self.input_model.model_validate(data)
        except ValidationError as exc:
            detail = exc.errors(include_url=False, include_context=False, include_input=False)
            raise InvalidInputError(f"invalid input for {self.name}", detail) from None
        try:
            return model.model_dump(mode="json", exclude_unset=True)
        except pydantic_core.PydanticSerializationError:
            return model.model_dump(exclude_unset=True)

    def to_call_kwargs(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Turn stored keyword arguments back into the Python values the method takes."""
        model = self.input_model.model_validate(stored)
        kwargs = {name: getattr(model, name) for name in model.model_fields_set}
        kwargs.update(model.model_extra or {})
        return kwargs

    def input_schema(self) -> dict[str, Any]:
        """The JSON schema of the input (``properties`` and ``required``)."""
        try:
            schema = self.input_model.model_json_schema()
        except Exception:  # arbitrary types have no schema; keep the names at least
            schema = {
                "type": "object",
                "properties": {name: {} for name in self.input_model.model_fields},
            }
        schema.setdefault("properties", {})
        schema.setdefault(
            "required",
            [n for n, f in self.input_model.model_fields.items() if f.is_required()],
        )
        return schema

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of the result, as the HTTP body carries it."""
        rtype = self.return_type
        if rtype is str:
            return {"type": "string"}
        if rtype in (bytes, bytearray):
            return {
                "type": "string",
                "format": "binary",
                "contentMediaType": "application/octet-stream",
            }
        if _is_pil_image(rtype):
            return {"type": "string", "format": "binary", "contentMediaType": "image/png"}
        try:
            return TypeAdapter(rtype).json_schema()
        except Exception:
            return {}

    def route_info(self, prefix: str = "") -> dict[str, Any]:
        """This endpoint's entry in ``/schema.json`` (BentoML's client-discovery shape)."""
        return {
            "name": self.name,
            "route": f"{prefix}/{self.name}",
            "input": self.input_schema(),
            "output": self.output_schema(),
            "is_task": self.is_task,
            "is_stream": False,
        }


def encode_result(value: Any) -> tuple[bytes, str]:
    """The HTTP body and media type for a method's return value.

    ``bytes`` go out raw, ``str`` as UTF-8 text, PIL images as PNG, anything else
    (pydantic models, dataclasses, containers, numbers) as JSON.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    if _is_pil_image(value):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    return pydantic_core.to_json(value, serialize_unknown=True), "application/json"


def discover(cls: type, deployment: str, defaults: TaskOptions | None = None) -> list[Endpoint]:
    """Every marked method of a deployment class, as endpoints, in definition order."""
    endpoints = []
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            spec = get_spec(attr)
            if spec is not None and callable(attr):
                endpoints.append(Endpoint(attr, spec, deployment, defaults))
    # A subclass may override a marked method: keep the most derived definition.
    by_method: dict[str, Endpoint] = {}
    for endpoint in endpoints:
        by_method.pop(endpoint.method, None)
        by_method[endpoint.method] = endpoint
    return list(by_method.values())
