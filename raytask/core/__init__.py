"""The pure core: task states, the task table, the dispatcher, errors and config.

Plain Python with an injectable clock. Nothing here imports Ray, Ray Serve, Starlette or
httpx (a test enforces it), so every rule is unit-tested in milliseconds and the HTTP
clients can use it without Ray installed.
"""
