"""l3edge: find the L3 vertebra slice in CT scans on a CPU.

    >>> import l3edge
    >>> result = l3edge.locate("scan_folder/")          # one-shot
    >>> locator = l3edge.L3Locator.load()               # or load once, predict many times
    >>> result = locator.predict("scan_folder/")

The heavy imports (OpenVINO, pydicom) happen on first use of the API, so ``import l3edge`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from l3edge.errors import InputError, L3EdgeError, ModelError, UsageError

__version__ = "0.1.0"

_LAZY = {
    "L3Locator": "l3edge.locator",
    "locate": "l3edge.locator",
    "L3Result": "l3edge.result",
    "LevelResult": "l3edge.result",
    "PredictOptions": "l3edge.options",
    "OVModel": "l3edge.runtime",
    "ModelMetadata": "l3edge.metadata",
}

if TYPE_CHECKING:
    from l3edge.locator import L3Locator, locate
    from l3edge.metadata import ModelMetadata
    from l3edge.options import PredictOptions
    from l3edge.result import L3Result, LevelResult
    from l3edge.runtime import OVModel

__all__ = [
    "InputError",
    "L3EdgeError",
    "L3Locator",
    "L3Result",
    "LevelResult",
    "ModelError",
    "ModelMetadata",
    "OVModel",
    "PredictOptions",
    "UsageError",
    "__version__",
    "locate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'l3edge' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
