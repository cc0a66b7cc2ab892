"""Only the optional C extension; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a compiler the install goes on, and shards/partials.py
        # computes the same sums in NumPy.
        Extension("shards._sums", ["shards/_sums.c"], optional=True, extra_compile_args=["-O3"]),
    ]
)
