"""sciml: scientific machine learning on differential equations, as PyTorch Lightning modules.

Subpackages: :mod:`sciml.solvers`, :mod:`sciml.regularizers`, :mod:`sciml.nn`,
:mod:`sciml.symbolic`, :mod:`sciml.data`, :mod:`sciml.metrics`, :mod:`sciml.models`; the ``sciml``
command is :mod:`sciml.cli`.
"""

from importlib.metadata import PackageNotFoundError, version

from . import data, metrics, models, nn, regularizers, solvers, symbolic

try:
    __version__ = version("sciml")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__",
    "data",
    "metrics",
    "models",
    "nn",
    "regularizers",
    "solvers",
    "symbolic",
]
