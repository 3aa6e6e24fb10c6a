"""``GET /docs``: the app's API as one self-contained HTML page, rendered from its OpenAPI
document (the same declaration as ``/openapi.json``: :mod:`raytask.core.wire` and the
endpoints' signatures).

Written here rather than served by Swagger UI or Redoc: those load scripts from a CDN (no
network on many GPU clusters) or ship megabytes of JavaScript, and need the document
fetched with the token; this page is rendered on the server, has no script at all, and
works offline and under any route prefix. With API tokens on it needs the token, as
``/openapi.json`` does (the endpoints and their arguments are the app's to disclose).
"""

from __future__ import annotations

import html
import json
from typing import Any

DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:1rem 2rem;
color:#1d2330}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccd;padding-bottom:.2rem;margin-top:2rem}
code{background:#f1f3f7;padding:0 .25rem;border-radius:3px}
table{border-collapse:collapse;margin:.4rem 0 1rem;width:100%}
th,td{border:1px solid #dde;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f7fa}.op{margin:.8rem 0 .2rem}.method{font-weight:700;color:#2456a6}
.muted{color:#667}pre{white-space:pre-wrap;margin:.3rem 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def type_of(schema: dict[str, Any]) -> str:
    """A JSON schema as a short type name (``integer``, ``array of string``, ``a | b``)."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_of(s) for s in schema[key])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {type_of(schema.get('items') or {})}"
    return " | ".join(kind) if isinstance(kind, list) else str(kind)


def _default(schema: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    return "" if schema.get("default") is None else _e(json.dumps(schema["default"]))


def _fields(schema: dict[str, Any]) -> str:
    """A table of an object schema's properties (name, type, default, description)."""
    properties = schema.get("properties") or {}
    if not properties:
        return '<p class="muted">No arguments.</p>'
    required = set(schema.get("required") or ())
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{_e(type_of(field))}</td>"
        f"<td>{_default(field, name in required)}</td>"
        f"<td>{_e(field.get('description', ''))}</td></tr>"
        for name, field in properties.items()
    )
    return (
        "<table><tr><th>argument</th><th>type</th><th>default</th><th>description</th></tr>"
        f"{rows}</table>"
    )


def _parameters(parameters: list[dict[str, Any]]) -> str:
    if not parameters:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(p['name'])}</code> <span class=muted>({_e(p['in'])})</span></td>"
        f"<td>{_e(type_of(p.get('schema') or {}))}</td>"
        f"<td>{_default(p.get('schema') or {}, bool(p.get('required')))}</td>"
        f"<td>{_e(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    return (
        "<table><tr><th>parameter</th><th>type</th><th>default</th><th>description</th></tr>"
        f"{rows}</table>"
    )


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    codes = ", ".join(operation.get("responses", {}))
    body = operation.get("requestBody") or {}
    schema = (body.get("content", {}).get("application/json") or {}).get("schema") or {}
    body_text = ""
    if body:
        body_text = f'<p class="muted">Body: {_e(body.get("description", ""))}'
        body_text += f" ({_e(type_of(schema))})</p>" if schema else "</p>"
    return (
        f'<div class="op" id="{_e(operation.get("operationId", ""))}"><span class="method">'
        f"{_e(method.upper())}</span> <code>{_e(path)}</code> — {_e(operation['summary'])}</div>"
        f"{_parameters(operation.get('parameters') or [])}{body_text}"
        f'<p class="muted">Answers: {_e(codes)}</p>'
    )


def docs_page(document: dict[str, Any], links: dict[str, str], secured: bool) -> str:
    """The HTML page of ``document`` (an app's OpenAPI document), with ``links`` (name to
    URL: the app's other pages, the other apps) in its header."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["service"])[0]
            by_tag.setdefault(tag, []).append((path, method, operation))
    sections = []
    for tag, operations in by_tag.items():
        if tag in ("tasks", "service"):
            continue
        call = next(op for _, _, op in operations if op["operationId"].startswith("call_"))
        schema = call["requestBody"]["content"]["application/json"]["schema"]
        doc = call.get("description") or "(no docstring)"
        task = any(op["operationId"].startswith("submit_") for _, _, op in operations)
        kind = "task endpoint" if task else "endpoint (synchronous only)"
        sections.append(
            f'<section id="endpoint-{_e(tag)}"><h2><code>{_e(tag)}</code> '
            f'<span class="muted">{kind}</span></h2><pre>{_e(doc)}</pre>'
            f"{_fields(schema)}{''.join(_operation(*op) for op in operations)}</section>"
        )
    for tag, title in (("tasks", "Tasks of every endpoint"), ("service", "The app")):
        ops = "".join(_operation(*op) for op in by_tag.get(tag, ()))
        sections.append(f'<section id="{tag}"><h2>{title}</h2>{ops}</section>')
    anchors = " · ".join(f'<a href="{_e(url)}">{_e(name)}</a>' for name, url in links.items())
    token = (
        "<p>Every route but the health checks and the dashboard's page needs "
        "<code>Authorization: Bearer &lt;token&gt;</code>.</p>"
        if secured
        else ""
    )
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>raytask API</title>'
        f"<style>{_STYLE}</style><body><h1>raytask API</h1><p>{anchors}</p>{token}"
        "<p>Submit a task with <code>POST …/NAME/submit</code> (the arguments as a JSON "
        "object), then read it with <code>GET …/NAME/status?task_id=ID</code> and "
        "<code>GET …/NAME/get?task_id=ID&amp;wait_s=30</code>.</p>"
        f"{''.join(sections)}</body></html>"
    )
