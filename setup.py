"""Build the optional C extension; the package works without it (pure-Python masking)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("trio_ws.protocol._speedups", ["trio_ws/protocol/_speedups.c"], optional=True)
    ],
)
