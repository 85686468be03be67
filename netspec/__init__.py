"""netspec: declare a neural network in YAML; validate, compile, gradient-check and train it.

    import netspec
    spec = netspec.load("specs/lenet.yaml")        # validated + shape-checked, or SpecError
    plan = netspec.compile(spec, dtype="float64")  # Plan: params, forward, backward
    with netspec.Model("specs/lenet.yaml") as model:   # or netspec.load_model(RUN_DIR)
        model.fit(); model.predict(["digit.png"])  # train as `netspec train`; predict files
"""

from netspec.errors import (
                            CheckpointError,
                            DataError,
                            NetspecError,
                            OutputError,
                            Problem,
                            SpecError,
                            TrainingError,
)
from netspec.model import Model, load_model
from netspec.plan.compiler import Plan, compile
from netspec.plan.options import PlanOptions
from netspec.spec.model import NetSpec, load, loads
from netspec.version import __version__

__all__ = ["CheckpointError", "DataError", "Model", "NetSpec", "NetspecError", "OutputError",
           "Plan", "PlanOptions", "Problem", "SpecError", "TrainingError", "__version__",
           "compile", "load", "load_model", "loads"]
