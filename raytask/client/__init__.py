"""What runs in the user's process: the HTTP clients, task handles and the in-cluster client.

The HTTP clients need only httpx, pydantic and tqdm (``pip install raytask``);
:mod:`raytask.client.cluster` also needs Ray. Nothing here imports :mod:`raytask.server`.
"""
