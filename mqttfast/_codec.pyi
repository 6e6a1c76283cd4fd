# The Cython twin has exactly the pure twin's interface; type checkers read the typed pure module.
from ._codec_py import *  # noqa: F403
from ._codec_py import __all__ as __all__
