"""Only the optional C extension; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a compiler the install goes on, and shards/partials.py
        # computes the same sums in NumPy.
        Extension("shards._sums", ["shards/_sums.c"], optional=True, extra_compile_args=["-O3"]),
        # optional: the loader's workers decode JPEGs with the system libjpeg (the one
        # pillow-simd is built against); without it, with Pillow (the same pixels).
        Extension(
            "training._jpeg",
            ["training/_jpeg.c"],
            optional=True,
            libraries=["jpeg"],
            extra_compile_args=["-O2"],
        ),
    ]
)
