"""Per-layer forward/backward timing table of specs (netspec.plan.bench.time_layers), as
`caffe time` gives.

Usage (from the repository root):

    python benchmarks/profile_layers.py                       # lenet, lenet-max, mlp; batch 64
    python benchmarks/profile_layers.py --specs lenet --repeats 100 --threads 1
    python benchmarks/profile_layers.py --markdown            # tables for a README or report

Inputs are random (the timing does not depend on the data); each step is forward, the spec's
loss, backward (the first layer skips dL/dx, as in training) and the spec's optimizer step.
Times are medians over the repeats in milliseconds per batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=["lenet", "lenet-max", "mlp"],
                   help="spec names in specs/ or YAML paths")
    p.add_argument("--batch-size", type=int, default=None, help="default: the spec's")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (threadpoolctl)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--json", metavar="FILE", help="also write the reports as JSON")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import netspec
    from netspec.plan.bench import time_layers

    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.threads, user_api="blas")
    reports = {}
    for name in args.specs:
        path = Path(name) if name.endswith((".yaml", ".yml")) else ROOT / "specs" / f"{name}.yaml"
        spec = netspec.load(path)
        plan = netspec.compile(spec)
        batch = args.batch_size or spec.train.batch_size
        report = time_layers(plan, batch, args.repeats, np.random.default_rng(0),
                             loss=spec.loss, optimizer=spec.train.optimizer)
        reports[spec.name] = report
        print(format_report(spec.name, report, args.markdown))
        print()
    if limiter is not None:
        limiter.restore_original_limits()
    if args.json:
        Path(args.json).write_text(json.dumps({k: r.to_dict() for k, r in reports.items()},
                                              indent=2) + "\n")
    return 0


def format_report(name: str, r, markdown: bool) -> str:
    rows = [(t.name, t.type, f"{t.forward_ms:.3f}", f"{t.backward_ms:.3f}",
             f"{100 * t.share:.1f}%") for t in r.layers]
    total = r.forward_ms + r.backward_ms + r.loss_ms + r.optimizer_ms
    rows += [("loss", "", f"{r.loss_ms:.3f}", "", f"{100 * r.loss_ms / total:.1f}%"),
             ("optimizer", "", "", f"{r.optimizer_ms:.3f}",
              f"{100 * r.optimizer_ms / total:.1f}%"),
             ("sum", "", f"{r.forward_ms + r.loss_ms:.3f}",
              f"{r.backward_ms + r.optimizer_ms:.3f}", "100%")]
    title = (f"{name}: batch {r.batch_size}, {r.repeats} repeats; whole step {r.step_ms:.2f} ms "
             f"[{r.step_min_ms:.2f}, {r.step_max_ms:.2f}], {r.images_per_s:,.0f} images/s")
    header = ("layer", "type", "forward ms", "backward ms", "share")
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    head = "  {:<14}{:<11}{:>11}{:>13}{:>8}".format(*header)
    lines = [title, head]
    lines += [f"  {a:<14}{b:<11}{c:>11}{d:>13}{e:>8}" for a, b, c, d, e in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
