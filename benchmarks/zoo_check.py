"""Full-size checks of the zoo that are too slow for the test suite: torchvision's nets exported
by torch.onnx.export import into netspec and compute PyTorch's outputs; the specs in specs/zoo/
that use torchvision's names load those imported weights by name and compute the same outputs.

Usage (from the repository root; needs torch and torchvision's model definitions):

    python benchmarks/zoo_check.py                    # all seven nets
    python benchmarks/zoo_check.py resnet50 alexnet   # some of them
    python benchmarks/zoo_check.py --opset 17 --keep /tmp/onnx

torchvision's compiled operators are not needed: when `import torchvision` fails (a wheel built
for another torch), its pure-Python model definitions are loaded without them
(`pip install torchvision --no-deps` is enough).

For each net, with torch's default initialisation under a fixed seed and random batchnorm
parameters and statistics: export (opset --opset, batch axis dynamic, batchnorm kept as
BatchNormalization rather than folded into the convs, so that the parameters keep torchvision's
names), `netspec import`'s code path, the imported plan's float32 forward against torch's on a
batch of 2 at 3x224x224, parameter counts
(netspec's shape table against torch's numel), netspec's MACs, and where a zoo spec exists, that
spec compiled from the imported weights by name against torch's outputs too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (torchvision module, constructor, keyword arguments, spec in specs/zoo/ with its names or None)
NETS = {
    "resnet50": ("resnet", {}, "resnet50"),
    "densenet121": ("densenet", {}, "densenet121"),
    "alexnet": ("alexnet", {}, None),  # specs/zoo/alexnet.yaml is Caffe's grouped AlexNet
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": True}, None),
    "squeezenet1_0": ("squeezenet", {}, "squeezenet"),
    "shufflenet_v2_x1_0": ("shufflenetv2", {}, "shufflenet_v2"),
    "mobilenet_v2": ("mobilenetv2", {}, "mobilenet_v2"),
}


def torchvision_models(module: str):
    """torchvision.models.<module>, without torchvision's compiled operators if need be."""
    try:
        return importlib.import_module(f"torchvision.models.{module}")
    except Exception:  # noqa: BLE001 -- e.g. its C++ ops built for another torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        found = importlib.util.find_spec("torchvision")
        if found is None or found.origin is None:
            sys.exit("torchvision is not installed: pip install torchvision --no-deps")
        root = os.path.dirname(found.origin)
        for name, path in (("torchvision", root), ("torchvision.models",
                                                   os.path.join(root, "models"))):
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
        return importlib.import_module(f"torchvision.models.{module}")


def check(name: str, opset: int, keep: Path | None) -> dict:
    import torch

    import netspec
    from netspec.interop.onnx_import import import_model, state_of

    module, kwargs, zoo = NETS[name]
    torch.manual_seed(0)
    net = getattr(torchvision_models(module), name)(**kwargs).eval()
    with torch.no_grad():  # random batchnorm, so that it is not the identity and no two
        for m in net.modules():  # layers' tensors are equal (the exporter shares equal ones)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, 3, 224, 224)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, x, buf, dynamo=False, opset_version=opset, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}},  # PRESERVE: batchnorm stays a node
                          training=torch.onnx.TrainingMode.PRESERVE)
    folder = keep or Path(tempfile.mkdtemp())
    path = folder / f"{name}.onnx"
    path.write_bytes(buf.getvalue())
    imported = import_model(path, name=name)
    state = state_of(imported)
    plan = netspec.compile(imported.spec, "float32", state=state)
    with torch.no_grad():
        want = net(x).numpy()
    scale = float(np.abs(want).max())
    got = plan.forward(x.numpy())
    infos = imported.spec.infos
    row = {"net": name, "layers": len(infos), "params": sum(i.params for i in infos),
           "torch_params": sum(p.numel() for p in net.parameters()),
           "gmacs": round(sum(i.macs for i in infos) / 1e9, 3),
           "rel_err": float(np.abs(got - want).max()) / scale}
    if zoo:
        spec = netspec.load(ROOT / "specs" / "zoo" / f"{zoo}.yaml")
        zplan = netspec.compile(spec, "float32", state=state)  # by name and shape
        row["zoo_spec"] = f"specs/zoo/{zoo}.yaml"
        row["zoo_rel_err"] = float(np.abs(zplan.forward(x.numpy()) - want).max()) / scale
    if keep:
        (folder / f"{name}.yaml").write_text(imported.text)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nets", nargs="*", choices=[[], *NETS], default=[])
    parser.add_argument("--opset", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="write the ONNX files and imported specs here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.nets or NETS:
        row = check(name, args.opset, args.keep)
        ok = row["params"] == row["torch_params"] and row["rel_err"] < 1e-5 and \
            row.get("zoo_rel_err", 0) < 1e-5
        failed |= not ok
        zoo = (f"; {row['zoo_spec']} from the imported weights: rel err {row['zoo_rel_err']:.1e}"
               if "zoo_spec" in row else "")
        print(f"{'ok  ' if ok else 'FAIL'} {name:20s} {row['layers']:4d} layers, "
              f"{row['params']:,} params (torch {row['torch_params']:,}), "
              f"{row['gmacs']} GMAC; max rel err vs torch {row['rel_err']:.1e}{zoo}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
