"""netspec: declare a neural network in YAML; validate, compile, gradient-check and train it.

    import netspec
    spec = netspec.load("specs/lenet.yaml")        # validated + shape-checked, or SpecError
    plan = netspec.compile(spec, dtype="float64")  # Plan: params, forward, backward
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
from netspec.plan import Plan, compile
from netspec.spec import NetSpec, load, loads

__version__ = "0.1.0"

__all__ = ["CheckpointError", "DataError", "NetSpec", "NetspecError", "OutputError", "Plan",
           "Problem", "SpecError", "TrainingError", "compile", "load", "loads"]
