"""Layer registry. Every module in this package is imported here, so its @register runs.

Adding a layer means adding one file next to this one; no list needs editing.
"""

import importlib
import pkgutil

from netspec.nn.layers.base import LAYERS, Ctx, Layer, ShapeError, Workspace, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["LAYERS", "Ctx", "Layer", "ShapeError", "Workspace", "register"]
