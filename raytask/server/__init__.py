"""What runs in the Ray cluster: the app builder, ingress, routes, task manager and runner.

Needs ``pip install "raytask[serve]"`` (Ray Serve and Starlette). Every private API of
Ray Serve that raytask relies on goes through :mod:`raytask.server.compat`.
"""
