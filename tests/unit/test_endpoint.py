from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest
from pydantic import BaseModel

import raytask
from raytask.core.config import TaskOptions
from raytask.core.endpoint import Endpoint, discover, encode_result
from raytask.core.errors import ConfigError, InvalidInputError


class Box(BaseModel):
    width: int
    height: int = 1


class Model:
    @raytask.task(ttl_s=60, max_attempts=5)
    def generate(self, prompt: str, steps: int = 30, box: Box | None = None) -> bytes:
        return prompt.encode()

    @raytask.api
    async def describe(self, prompt: str) -> str:
        return prompt

    @raytask.task(name="area")
    def compute_area(self, box: Box) -> dict[str, int]:
        return {"area": box.width * box.height}

    def helper(self) -> None:
        """Not marked: not an endpoint."""


def test_discover_finds_marked_methods_in_order() -> None:
    endpoints = discover(Model, "Model", TaskOptions(ttl_s=7, timeout_s=9))
    assert [(e.name, e.method, e.kind) for e in endpoints] == [
        ("generate", "generate", "task"),
        ("describe", "describe", "api"),
        ("area", "compute_area", "task"),
    ]
    generate = endpoints[0]
    # decorator options override the app-wide defaults, the rest are inherited
    assert generate.options == TaskOptions(ttl_s=60, timeout_s=9, max_attempts=5)
    assert endpoints[1].is_async and not generate.is_async


def test_input_model_is_derived_from_the_signature() -> None:
    generate = discover(Model, "Model")[0]
    schema = generate.input_schema()
    assert set(schema["properties"]) == {"prompt", "steps", "box"}
    assert schema["required"] == ["prompt"]
    assert generate.validate({"prompt": "hi"}) == {"prompt": "hi"}  # defaults stay the method's
    stored = generate.validate({"prompt": "hi", "steps": "5", "box": {"width": 2}})
    assert stored == {"prompt": "hi", "steps": 5, "box": {"width": 2}}
    json.dumps(stored)  # stored kwargs are JSON-safe, so a journal can hold them
    call = generate.to_call_kwargs(stored)
    assert call["box"] == Box(width=2) and call["steps"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {},  # missing field
        {"prompt": 3},  # wrong type (strict enough: ints are not strings)
        {"prompt": "x", "steps": "many"},
        {"prompt": "x", "unknown": 1},  # unknown argument
        {"prompt": "x", "box": {"height": 2}},  # nested model missing a field
    ],
)
def test_invalid_input_is_rejected_with_details(body: dict[str, Any]) -> None:
    generate = discover(Model, "Model")[0]
    with pytest.raises(InvalidInputError) as info:
        generate.validate(body)
    assert info.value.status_code == 422
    assert info.value.detail and isinstance(info.value.detail, list)
    json.dumps(info.value.to_body())


def test_non_object_body_is_rejected() -> None:
    generate = discover(Model, "Model")[0]
    with pytest.raises(InvalidInputError, match="JSON object"):
        generate.validate(["hi"])


def test_output_schemas() -> None:
    generate, describe, area = discover(Model, "Model")
    assert describe.output_schema() == {"type": "string"}
    assert generate.output_schema()["format"] == "binary"
    assert area.output_schema()["type"] == "object"
    route = area.route_info("/app")
    assert route["route"] == "/app/area" and route["is_task"] is True


def test_encode_result_by_type() -> None:
    assert encode_result(b"\x00\x01") == (b"\x00\x01", "application/octet-stream")
    assert encode_result("héllo") == ("héllo".encode(), "text/plain; charset=utf-8")
    body, media = encode_result(Box(width=3))
    assert media == "application/json" and json.loads(body) == {"width": 3, "height": 1}
    assert json.loads(encode_result([1, {"a": None}])[0]) == [1, {"a": None}]


def test_dataclass_results_are_json() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        label: str

    body, media = encode_result(Point(2, "p"))
    assert media == "application/json" and json.loads(body) == {"x": 2, "label": "p"}


def test_pil_images_are_png() -> None:
    from PIL import Image as image_module  # Pillow: in the test extra

    image = image_module.new("RGB", (4, 3), (255, 0, 0))
    body, media = encode_result(image)
    assert media == "image/png" and body.startswith(b"\x89PNG")
    decoded = image_module.open(io.BytesIO(body))
    assert decoded.size == (4, 3) and decoded.getpixel((0, 0)) == (255, 0, 0)


def test_bad_signatures_and_names_are_config_errors() -> None:
    class Star:
        @raytask.task
        def f(self, *args: int) -> None: ...

    class Reserved:
        @raytask.task(name="readyz")
        def f(self) -> None: ...

    with pytest.raises(ConfigError, match=r"\*args"):
        discover(Star, "Star")
    with pytest.raises(ConfigError, match="reserved"):
        discover(Reserved, "Reserved")


def test_decorator_options_are_validated_at_decoration() -> None:
    with pytest.raises(ConfigError, match="ttl_s"):
        raytask.task(ttl_s=-1)
    with pytest.raises(ConfigError, match="max_attempts"):
        raytask.task(max_attempts=0)


def test_decorators_return_the_function_itself() -> None:
    def f(self: Any) -> int:
        return 1

    assert raytask.task(f) is f and raytask.api(name="g")(f) is f


def test_subclass_override_keeps_one_endpoint() -> None:
    class Child(Model):
        @raytask.task
        def generate(self, prompt: str) -> bytes:
            return b""

    names = [e.name for e in discover(Child, "Child")]
    assert names.count("generate") == 1


def test_unmarked_class_has_no_endpoints() -> None:
    assert discover(int, "x") == []


def test_endpoint_object_exposes_method_name() -> None:
    endpoint = Endpoint(
        Model.compute_area, raytask.core.decorators.get_spec(Model.compute_area), "M"
    )
    assert (endpoint.name, endpoint.method, endpoint.deployment) == ("area", "compute_area", "M")
    # the route and the client-discovery entry use the name, the replica calls the method
    assert endpoint.route_info("/p")["route"] == "/p/area"
    assert endpoint.route_info()["name"] == "area"


def test_unresolvable_hints_are_a_config_error_not_a_silent_any() -> None:
    class Broken:
        @raytask.task
        def f(self, x: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigError, match="type hints of f"):
        discover(Broken, "Broken")


def test_hints_survive_pickling_by_value() -> None:
    from ray import cloudpickle

    class Local:  # a local class is pickled by value, like a @serve.deployment class
        @raytask.task
        def f(self, x: Box) -> Box:
            return x

    discover(Local, "Local")  # resolves and ships the hints on the function
    copy = cloudpickle.loads(cloudpickle.dumps(Local))
    (endpoint,) = discover(copy, "Local")
    with pytest.raises(InvalidInputError):
        endpoint.validate({"x": {"width": "wide"}})
