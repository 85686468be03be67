"""Inference speed of imported zoo nets against onnxruntime and PyTorch; depthwise and grouped
layers against PyTorch's; the peak memory of a ResNet-50 forward pass.

Usage (from the repository root, with the venv that has torch, onnx and onnxruntime):

    python benchmarks/zoo_speed.py                       # ResNet-50 and GoogLeNet, batch 1 and 16
    python benchmarks/zoo_speed.py --nets resnet50 --batches 16 --repeats 9 --threads 2
    python benchmarks/zoo_speed.py --json benchmarks/results/zoo-speed.json
    python benchmarks/zoo_speed.py --eval-conv auto    # inference's Winograd (plan option)
    OPENBLAS_CORETYPE=SkylakeX python benchmarks/zoo_speed.py   # NumPy's AVX-512 GEMMs

What is timed:
* nets: specs/zoo/<net>.yaml with seeded random weights (random batchnorm statistics too) is
  exported to ONNX by netspec and imported back (`netspec import`'s code path); the imported
  plan's eval forward (float32), onnxruntime on that same ONNX file (one intra-op pool of
  --threads threads, sequential), and the PyTorch twin of the imported spec with the same
  weights (torch_bridge, under no_grad, --threads threads) run on the same input. NumPy's BLAS
  gets --threads threads (threadpoolctl), and the plan is told so (PlanOptions(blas_threads=)),
  with the plan option eval_conv from --eval-conv. The three are interleaved: each repeat
  times one forward of each, in an order that rotates, and the tables show medians.
* layers: every depthwise and grouped conv2d of specs/zoo/mobilenet_v2.yaml, shufflenet.yaml and
  alexnet.yaml at batch 16 (distinct configurations once), netspec's layer alone (eval forward;
  training forward and backward) against torch's Conv2d with the same groups, interleaved in
  an order that rotates, after two warm-up calls of each.
* memory: a fresh process compiles ResNet-50 and runs one forward at batch 16; its peak
  resident set (VmHWM) before and after the forward, for netspec and for torch.

Every run prints the machine's load average: the numbers are only comparable on a quiet machine.
The JSON also holds the BLAS library's kernel (threadpoolctl's "architecture": OpenBLAS picks
Haswell's AVX2 kernels on CPUs it does not know, unless OPENBLAS_CORETYPE says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_ms(times):
    return 1e3 * statistics.median(times)


def random_state(plan, seed=0):
    rng = np.random.default_rng(seed)
    for name, v in {**plan.params, **plan.buffers}.items():
        if name.endswith("running_var"):
            v[...] = rng.uniform(0.5, 2.0, v.shape)
        elif name.endswith(("running_mean", "bias")):
            v[...] = rng.normal(0, 0.1, v.shape)


def imported(net, options=None):
    """(imported spec, its plan, the ONNX model bytes) of specs/zoo/<net>.yaml."""
    import netspec
    from netspec.interop.onnx_export import to_onnx
    from netspec.interop.onnx_import import import_model, state_of

    spec = netspec.load(ROOT / "specs" / "zoo" / f"{net}.yaml")
    plan = netspec.compile(spec)
    random_state(plan)
    model = to_onnx(spec, plan, {"normalize": "none"})
    back = import_model(model)
    plan = netspec.compile(back.spec, options=options, state=state_of(back))
    return back.spec, plan, model.SerializeToString()


def time_nets(nets, batches, repeats, threads, eval_conv="im2col"):
    import onnxruntime as ort
    import torch
    from threadpoolctl import threadpool_limits

    import netspec
    from netspec.interop.torch_bridge import to_torch

    torch.set_num_threads(threads)
    plan_options = netspec.PlanOptions(blas_threads=threads, eval_conv=eval_conv)
    rows = []
    for net in nets:
        spec, plan, model = imported(net, plan_options)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        module = to_torch(spec, plan).eval()
        for batch in batches:
            x = np.random.default_rng(1).standard_normal(
                (batch, *spec.input.shape)).astype(np.float32)
            xt = torch.from_numpy(x)

            def run_netspec(x=x, plan=plan):
                return plan.forward(x)

            def run_ort(x=x, session=session):
                return session.run(None, {"input": x})[0]

            def run_torch(xt=xt, module=module):
                with torch.no_grad():
                    return module(xt).numpy()

            runs = {"netspec": run_netspec, "onnxruntime": run_ort, "torch": run_torch}
            with threadpool_limits(threads, user_api="blas"):
                outs = {k: f() for k, f in runs.items()}  # warm-up, and the outputs agree
                scale = float(np.max(np.abs(outs["torch"])))
                agree = {k: float(np.max(np.abs(v - outs["torch"]))) / scale
                         for k, v in outs.items()}
                times = {k: [] for k in runs}
                order = list(runs)
                for r in range(repeats):
                    for k in order[r % 3:] + order[:r % 3]:
                        t = time.perf_counter()
                        runs[k]()
                        times[k].append(time.perf_counter() - t)
            med = {k: median_ms(v) for k, v in times.items()}
            rows.append({"net": net, "batch": batch, **{f"{k}_ms": round(v, 1)
                                                         for k, v in med.items()},
                         "vs_torch": round(med["netspec"] / med["torch"], 2),
                         "vs_onnxruntime": round(med["netspec"] / med["onnxruntime"], 2),
                         "max_rel_diff_vs_torch": max(agree.values())})
            print(f"{net:10s} batch {batch:3d}: netspec {med['netspec']:8.1f} ms  onnxruntime "
                  f"{med['onnxruntime']:8.1f} ms  torch {med['torch']:8.1f} ms  "
                  f"(netspec/torch {rows[-1]['vs_torch']:.2f}, "
                  f"netspec/onnxruntime {rows[-1]['vs_onnxruntime']:.2f})", flush=True)
    return rows


def time_layers(repeats, threads, batch=16):
    import torch

    import netspec
    from netspec.plan.shapes import infer

    torch.set_num_threads(threads)
    seen, rows = set(), []
    for net in ("mobilenet_v2", "shufflenet", "alexnet"):
        spec = netspec.load(ROOT / "specs" / "zoo" / f"{net}.yaml")
        for info in spec.infos:
            layer = info.layer
            if info.type != "conv2d" or layer.groups == 1:
                continue
            key = (layer.model_dump_json(exclude={"name", "inputs"}), tuple(info.in_shape))
            if key in seen:
                continue
            seen.add(key)
            rows.append(time_layer(net, info.name, layer, info, repeats, threads, batch))
            c, g = info.in_shape[0], layer.groups
            if g < c:  # a grouped conv: also one group of it as a plain conv, for comparison
                plain = layer.model_copy(update={"groups": 1,
                                                 "out_channels": layer.out_channels // g})
                (one,) = infer((c // g, *info.in_shape[1:]), [plain])
                rows.append(time_layer(net, f"{info.name} (one group)", plain, one, repeats,
                                       threads, batch))
    return rows


def time_layer(net, name, layer, info, repeats, threads, batch):
    """netspec's layer against torch's conv with the same groups: eval, and train forward plus
    backward, interleaved medians (ms). Each timed call follows an untimed call of the same
    function: right after a call of the other library its idle threads still spin (OpenMP's
    and OpenBLAS's wait policy) and take the cores a threaded kernel needs."""
    import torch
    from threadpoolctl import threadpool_limits

    from netspec.plan.compiler import layer_plan

    plan = layer_plan(layer, info.in_shape, "float32")
    step = plan.steps[0]
    x = np.random.default_rng(0).standard_normal(
        (batch, *info.in_shape)).astype(np.float32)
    xi = plan.to_internal(x)
    conv = layer.torch_module(info, torch.nn)
    xt = torch.from_numpy(x)
    xr = xt.clone().requires_grad_(True)

    def ns_eval(xi=xi, step=step):
        step.forward(xi, False)

    def ns_train(xi=xi, step=step):
        y = step.forward(xi, True)
        step.backward(np.ones_like(y), True)

    def t_eval(conv=conv, xt=xt):
        with torch.no_grad():
            conv(xt)

    def t_train(conv=conv, xr=xr):
        y = conv(xr)
        y.backward(torch.ones_like(y))

    runs = {"ns_eval": ns_eval, "t_eval": t_eval, "ns_train": ns_train,
            "t_train": t_train}
    with threadpool_limits(threads, user_api="blas"):
        for f in (*runs.values(), *runs.values()):
            f()
        times = {k: [] for k in runs}
        order = list(runs)
        for r in range(repeats):
            for k in order[r % 4:] + order[:r % 4]:
                runs[k]()  # untimed: the other library's threads stop spinning meanwhile
                t = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - t)
    med = {k: median_ms(v) for k, v in times.items()}
    o, c = layer.out_channels, info.in_shape[0]
    kind = ("depthwise" if layer.groups == c > 1 else
            "plain" if layer.groups == 1 else f"groups {layer.groups}")
    row = {"net": net, "layer": name, "kind": kind,
           "shape": f"{c}->{o} {info.in_shape[1]}x{info.in_shape[2]}",
           **{f"{k}_ms": round(v, 2) for k, v in med.items()},
           "eval_vs_torch": round(med["ns_eval"] / med["t_eval"], 2),
           "train_vs_torch": round(med["ns_train"] / med["t_train"], 2)}
    print(f"{net:12s} {name:28s} {kind:10s} {row['shape']:18s} eval "
          f"{med['ns_eval']:7.2f} / {med['t_eval']:7.2f} ms ({row['eval_vs_torch']:.2f})"
          f"  train {med['ns_train']:7.2f} / {med['t_train']:7.2f} ms "
          f"({row['train_vs_torch']:.2f})", flush=True)
    return row


PEAK = r"""
import re, sys, numpy as np
def peak():  # kB; VmHWM is the process's own (ru_maxrss carries the parent's peak over exec)
    return int(re.search(r"VmHWM:\s*(\d+)", open("/proc/self/status").read()).group(1))
sys.path.insert(0, {root!r})
import netspec
spec = netspec.load({spec!r})
x = np.random.default_rng(0).standard_normal(({batch}, *spec.input.shape)).astype(np.float32)
if {torch!r}:
    import torch
    from netspec.interop.torch_bridge import to_torch
    torch.set_num_threads({threads})
    module = to_torch(spec).eval()
    xt = torch.from_numpy(x)
    before = peak()
    with torch.no_grad():
        module(xt)
else:
    plan = netspec.compile(spec)
    before = peak()
    plan.forward(x)
after = peak()
print(before, after)
"""


def peak_memory(batch, threads):
    rows = {}
    for engine in ("netspec", "torch"):
        code = PEAK.format(root=str(ROOT), spec=str(ROOT / "specs" / "zoo" / "resnet50.yaml"),
                           batch=batch, torch=engine == "torch", threads=threads)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "OPENBLAS_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout.split()
        before, after = (int(v) / 1024 for v in out)  # kB -> MB
        rows[engine] = {"peak_before_forward_mb": round(before), "peak_mb": round(after),
                        "forward_adds_mb": round(after - before)}
        print(f"ResNet-50 forward at batch {batch}, {engine}: peak resident {after:,.0f} MB "
              f"({after - before:,.0f} MB more than before the forward)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["resnet50", "googlenet"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-conv", default="im2col", choices=["im2col", "auto"],
                        help="the plan option eval_conv of the nets' plans")
    parser.add_argument("--skip", nargs="*", default=[], choices=["nets", "layers", "memory"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')}"
            for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores, {args.threads} threads "
          f"each; NumPy's BLAS: {', '.join(blas)}; eval_conv {args.eval_conv}", flush=True)
    result = {"load_average": os.getloadavg(), "threads": args.threads, "numpy_blas": blas,
              "eval_conv": args.eval_conv}
    if "nets" not in args.skip:
        result["nets"] = time_nets(args.nets, args.batches, args.repeats, args.threads,
                                   args.eval_conv)
    if "layers" not in args.skip:
        result["layers"] = time_layers(args.repeats, args.threads)
    if "memory" not in args.skip:
        result["memory"] = peak_memory(16, args.threads)
    result["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
