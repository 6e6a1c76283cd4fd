"""Declares the Cython extension; everything else lives in pyproject.toml.

MQTTFAST_PURE=1 at build time installs the pure-Python codec only (no compiler needed).
"""
import os

from setuptools import Extension, setup


def extensions() -> list:
    if os.environ.get("MQTTFAST_PURE", "").lower() not in ("", "0", "false", "no"):
        return []
    from Cython.Build import cythonize

    ext = Extension(
        "mqttfast._codec",
        ["mqttfast/_codec.pyx"],
        extra_compile_args=["-O3"] if os.name != "nt" else [],
    )
    return cythonize(
        [ext],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions())
