"""One endpoint: a marked method, its input model, its output schema and its encoding.

The input model is derived from the method's signature with pydantic, so a submit is
validated before anything is queued; the same model re-validates the stored (JSON-safe)
arguments on the replica, which turns them back into the Python types the method expects.

HTTP bodies are parsed and validated in one step by pydantic's JSON parser, in strict mode:
a JSON value is taken for what JSON says it is, so ``true`` is not an ``int``, ``"5"`` is
not a number (``3.0`` is an ``int``, as JSON Schema says), and NaN or Infinity are refused
for ``float`` arguments unless the annotation allows them
(``Annotated[float, Field(allow_inf_nan=True)]``). That parser also bounds what
a hostile body can cost: :data:`MAX_JSON_DEPTH` nested levels and integers of at most
:data:`MAX_INT_DIGITS` digits.
"""

from __future__ import annotations

import inspect
import io
import typing
from collections.abc import Callable
from functools import cached_property
from typing import Annotated, Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from .config import TaskOptions
from .decorators import EndpointSpec, get_spec
from .errors import (
    ConfigError,
    InvalidInputError,
    MalformedRequestError,
    ResultEncodingError,
    validation_reasons,
)

SERVICE_ROUTES = frozenset(
    {
        "schema.json",
        "openapi.json",
        "docs.json",
        "docs",
        "readyz",
        "livez",
        "healthz",
        "metrics",
        "queue",
        "dashboard",
    }
)
"""The app-wide routes the ingress serves, so no endpoint may take their names."""
BATCH_ROUTES = frozenset({"tasks", "status_many", "usage"})
"""App-wide routes of task control (``GET /tasks``, ``POST /status_many``, ``GET /usage``):
reserved too."""
MAX_BATCH = 1000
"""Items one ``submit_many``, ``status_many`` or ``cancel_many`` request may carry."""

MAX_JSON_DEPTH = 201
"""Levels of nested arrays and objects a request body may have, the body itself included
(pydantic's JSON parser's fixed limit)."""
MAX_INT_DIGITS = 4300
"""Digits an integer in a request body may have (Python's ``int_max_str_digits``)."""


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
        if self.name in SERVICE_ROUTES | BATCH_ROUTES or "/" in self.name:
            raise ConfigError(f"endpoint name {self.name!r} is reserved or not a path segment")
        self.is_async = inspect.iscoroutinefunction(func)
        # A generator method streams: each yielded value is a chunk (SPEC 10).
        self.streams = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
        if self.streams and self.kind != "task":
            raise ConfigError(f"{self.name}: a generator method must be a @raytask.task")
        self._batch: TypeAdapter[list[Any]] | None = None
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
        config = ConfigDict(  # type: ignore[typeddict-item]
            extra=extra, arbitrary_types_allowed=True, allow_inf_nan=False
        )
        return create_model(f"{self.name}_input", __config__=config, **fields)

    @cached_property
    def return_type(self) -> Any:
        """The method's return annotation (``Any`` when missing); for a generator, a list
        of its chunk type (``Iterator[T]`` and the like declare ``T``)."""
        annotation = self._hints.get("return", Any)
        if not self.streams:
            return annotation
        args = typing.get_args(annotation)
        return list[args[0]] if args else list[Any]  # type: ignore[valid-type]

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
            raise self._invalid(exc) from None
        return self._stored(model)

    def validate_json(self, body: bytes) -> dict[str, Any]:
        """Parse and validate an HTTP body (strict JSON types); return the stored arguments.

        An empty body means no arguments.

        Raises:
            MalformedRequestError: the body is not JSON, or nests or counts past the limits.
            InvalidInputError: the JSON does not match the signature.
        """
        body = body.strip() or b"{}"
        try:
            model = self.input_model.model_validate_json(body, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            for error in errors:
                if error["type"] == "json_invalid":
                    reason = str(error["msg"]).removeprefix("Invalid JSON: ")
                    raise MalformedRequestError(
                        f"request body is not valid JSON: {reason} (limits: "
                        f"{MAX_JSON_DEPTH} nested levels, {MAX_INT_DIGITS}-digit integers)"
                    ) from None
            if not all(map(_integral_float, errors)):
                raise self._invalid(exc) from None
            # JSON Schema's "integer" includes 3.0, which strict mode refuses; only such
            # values failed, so lax mode (which takes them) changes nothing else.
            model = self.input_model.model_validate_json(body)
        return self._stored(model)

    def validate_json_many(self, body: bytes) -> list[dict[str, Any]]:
        """Parse and validate the body of ``submit_many``: a JSON array of at most
        ``MAX_BATCH`` input objects, all checked before any is used.

        Raises:
            MalformedRequestError: the body is not JSON.
            InvalidInputError: not an array of objects, too long, or some items are bad
                (the message names each bad index; ``detail`` has each error's ``loc``,
                which starts with the index).
        """
        adapter = self._batch_adapter()
        try:
            models = adapter.validate_json(body.strip() or b"null", strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if any(error["type"] == "json_invalid" for error in errors):
                raise MalformedRequestError("request body is not valid JSON") from None
            if not all(map(_integral_float, errors)):
                raise self._invalid_many(exc) from None
            models = adapter.validate_json(body)
        return [self._stored(model) for model in models]

    def _batch_adapter(self) -> TypeAdapter[list[Any]]:
        if self._batch is None:
            self._batch = TypeAdapter(
                Annotated[list[self.input_model], Field(max_length=MAX_BATCH)]  # type: ignore[name-defined]
            )
        return self._batch

    def _invalid_many(self, exc: ValidationError) -> InvalidInputError:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(not error["loc"] for error in errors):  # the body itself is wrong
            return InvalidInputError(
                f"the body of {self.name}/submit_many must be a JSON array of at most "
                f"{MAX_BATCH} objects of its arguments ({errors[0]['msg']})"
            )
        bad = sorted({error["loc"][0] for error in errors})
        reasons = "; ".join(
            f"[{e['loc'][0]}] {'.'.join(map(str, e['loc'][1:])) or 'item'}: {e['msg']}"
            for e in errors[:5]
        )
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return InvalidInputError(
            f"invalid input for {self.name} at index {', '.join(map(str, bad[:20]))}"
            f"{' ...' if len(bad) > 20 else ''}: {reasons}{more}; nothing was queued",
            errors,
        )

    def _invalid(self, exc: ValidationError) -> InvalidInputError:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if len(errors) == 1 and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            return InvalidInputError(
                f"the body of {self.name} must be a JSON object of its arguments"
            )
        # The reasons go in the message too: most people read only the message.
        reasons = validation_reasons(errors, "body")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return InvalidInputError(f"invalid input for {self.name}: {reasons}{more}", errors)

    @staticmethod
    def _stored(model: BaseModel) -> dict[str, Any]:
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

    def input_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        """The JSON schema of the input (``properties`` and ``required``); nested models
        are ``$defs`` referred to with ``ref_template``."""
        try:
            schema = self.input_model.model_json_schema(ref_template=ref_template)
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

    def output_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
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
            return TypeAdapter(rtype).json_schema(ref_template=ref_template)
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


def _integral_float(error: Any) -> bool:
    value = error.get("input")
    return error["type"] == "int_type" and isinstance(value, float) and value.is_integer()


def _json_fallback(value: Any) -> Any:
    # Arrays and tensors (numpy, torch, ...) have a lossless JSON form: their values.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} has no JSON form")


def encode_result(value: Any) -> tuple[bytes, str]:
    """The HTTP body and media type for a method's return value.

    ``bytes`` go out raw, ``str`` as UTF-8 text, PIL images as PNG, anything else
    (pydantic models, dataclasses, containers, numbers, arrays with ``tolist()``) as JSON
    (a float NaN or infinity as the ``NaN``/``Infinity`` that Python's ``json`` reads).

    Raises:
        ResultEncodingError: the value has no such form (a string with a lone surrogate,
            an object JSON cannot carry); a replica checks this before calling a task a
            success, so the task ends in ``failure`` with this reason instead.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        try:
            return value.encode(), "text/plain; charset=utf-8"
        except UnicodeEncodeError as exc:
            raise ResultEncodingError(f"the result is a string UTF-8 cannot carry: {exc}") from None
    if _is_pil_image(value):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    try:
        return pydantic_core.to_json(value, fallback=_json_fallback), "application/json"
    except pydantic_core.PydanticSerializationError as exc:
        reason = str(exc).removeprefix("Error serializing to JSON: ")
        raise ResultEncodingError(
            f"a result of type {type(value).__name__} cannot be sent as JSON: {reason}"
        ) from None


def encode_chunk(value: Any) -> bytes:
    """A streamed chunk as JSON: the ``data`` of its ``output`` event (bytes as base64).

    Raises:
        ResultEncodingError: the chunk has no JSON form.
    """
    try:
        return pydantic_core.to_json(value, fallback=_json_fallback, bytes_mode="base64")
    except (pydantic_core.PydanticSerializationError, UnicodeDecodeError) as exc:
        raise ResultEncodingError(
            f"a chunk of type {type(value).__name__} cannot be sent as JSON: {exc}"
        ) from None


def check_result(value: Any) -> None:
    """Raise :class:`ResultEncodingError` if ``value`` has no HTTP body (PNG skipped: cheap
    to trust, dear to encode twice)."""
    if not _is_pil_image(value):
        encode_result(value)


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
