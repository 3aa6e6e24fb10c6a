"""The import path Serve's YAML names: ``raytask.autoscaling:QueueDepthPolicy``.

The policy lives in :mod:`raytask.server.autoscaling`; this module only keeps the short
path that configs use.
"""

from .server.autoscaling import QueueDepthPolicy, desired_replicas

__all__ = ["QueueDepthPolicy", "desired_replicas"]
