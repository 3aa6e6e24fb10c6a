"""The unit tier: no Ray (tests/conftest.py refuses ray.init) and a fake clock (``clock``)."""
