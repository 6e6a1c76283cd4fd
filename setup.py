"""Declares the Cython extension; everything else lives in pyproject.toml.

MQTTFAST_PURE=1 at build time installs the pure-Python codec only (no compiler needed; the wheel is
``py3-none-any``). Otherwise the C twin is built, and when it cannot be (no compiler, no Python
headers, no Cython) the install goes on with the pure twin, saying so in one line on stderr
(pip shows it with ``-v``; ``mqttfast.codec.IMPLEMENTATION`` tells afterwards) -- unless
MQTTFAST_REQUIRE_C=1, which makes that a failed build (the release wheels, CI).
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


PURE = _flag("MQTTFAST_PURE")
REQUIRE_C = _flag("MQTTFAST_REQUIRE_C")
if PURE and REQUIRE_C:
    sys.exit("mqttfast: MQTTFAST_PURE=1 and MQTTFAST_REQUIRE_C=1 contradict each other: unset one")


def _without_c(why: str) -> None:
    """The pure twin it is: one line that says so, or a failed build under MQTTFAST_REQUIRE_C."""
    why = " ".join(why.split())  # one line, whatever the compiler's message held
    why = why if len(why) <= 160 else why[:157] + "..."  # (its whole command line, say)
    if REQUIRE_C:
        sys.exit(f"mqttfast: cannot build the C codec ({why}); MQTTFAST_REQUIRE_C=1 forbids "
                 "the pure-Python fallback")
    print(f"mqttfast: cannot build the C codec ({why}): installing the pure-Python codec (slower)",
          file=sys.stderr)


class BuildExtOrPure(build_ext):
    """``build_ext`` that leaves the extension out, rather than failing, when it cannot compile."""

    def run(self) -> None:
        inplace = self.inplace  # (setuptools clears it while it builds)
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:
            if inplace:  # a developer's rebuild: falling back would leave a stale module in place
                raise
            _without_c(f"{type(exc).__name__}: {exc}")
            self.extensions = []  # nothing built, so nothing for the wheel or an editable install to list


def extensions() -> list:
    if PURE:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:  # only without build isolation: Cython is a build requirement
        _without_c(f"Cython is not installed: {exc}")
        return []

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


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtOrPure})
