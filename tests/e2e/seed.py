"""The seed page's snippets, and a driver that runs them from a client-only install.

Imported by the e2e tests (the snippets against a real app), and run as a script by the
interpreter of ``.venv-client`` (``pip install raytask`` without extras: no Ray)::

    python tests/e2e/seed.py URL   -> prints one JSON object of observations

It imports nothing but the standard library and raytask, so it runs in that venv.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys

# The seed page's three snippets, verbatim but for `bentoml` -> `raytask` and the URL.
SEED_SUBMIT = """
import raytask

prompt = "a scenic mountain view that ..."
client = raytask.SyncHTTPClient('http://localhost:3000')
# The arguments are the same as the Service method, just call with `.submit()`
task = client.long_running_image_generation.submit(prompt=prompt)
print("Task submitted, ID:", task.id)
"""
SEED_STATUS = """
# Use the following code at a later time
status = task.get_status()
if status.value == 'success':
    print("The task runs successfully. The result is", task.get())
elif status.value == 'failure':
    print("The task run failed.")
else:
    print("The task is still running.")
"""
SEED_RETRY = """
status = task.get_status()
if status.value == 'failure':
    print("Task failed, retrying...")
    new_task = task.retry()
    new_status = new_task.get_status()
    print("New task status:", new_status.value)
"""


def run_snippet(code: str, namespace: dict, url: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace("http://localhost:3000", url), namespace)
    return out.getvalue()


def check_seed_snippets(url: str) -> None:
    """Run the three snippets in one namespace, as a user's script would, and check what
    they print (the retry snippet on a task that failed)."""
    namespace: dict = {}
    try:
        _check(namespace, url)
    finally:
        if "client" in namespace:
            namespace["client"].close()  # the snippets leave it open, as a script may


def _check(namespace: dict, url: str) -> None:
    printed = run_snippet(SEED_SUBMIT, namespace, url)
    assert printed.startswith("Task submitted, ID: ") and len(namespace["task"].id) == 32
    namespace["task"].wait(timeout=60)
    printed = run_snippet(SEED_STATUS, namespace, url)
    assert printed.startswith("The task runs successfully. The result is b'\\x89PNG")

    # the retry snippet, on a task that failed
    namespace["task"] = namespace["client"].long_running_image_generation.submit(
        prompt="fail please"
    )
    namespace["task"].wait(timeout=60)
    assert run_snippet(SEED_STATUS, namespace, url) == "The task run failed.\n"
    printed = run_snippet(SEED_RETRY, namespace, url)
    assert printed.startswith("Task failed, retrying...\nNew task status: ")
    assert printed.split(": ")[-1].strip() in {"pending", "in_progress", "failure"}
    assert namespace["new_task"].id != namespace["task"].id


def main(url: str) -> None:
    import raytask

    try:
        raytask.app  # noqa: B018 (touching it is the test)
        server_side_error = ""
    except ImportError as exc:
        server_side_error = str(exc)
    check_seed_snippets(url)
    print(
        json.dumps(
            {
                "ray_importable": importlib.util.find_spec("ray") is not None,
                "server_side_error": server_side_error,
                "snippets": "ok",
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
