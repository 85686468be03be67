"""netspec's Python API end to end: load a spec, compile it, take SGD steps on real MNIST
batches and watch the loss fall. No CLI, no trainer: just the plan, the loss and the optimizer.

    python examples/train_api.py --data-dir ../shared/data/mnist [--spec specs/lenet.yaml]
"""

import argparse

import numpy as np

import netspec
from netspec.data import load_dataset, prepare

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--spec", default="specs/lenet.yaml")
parser.add_argument("--data-dir", default=None, help="directory with the MNIST files "
                    "(default: $NETSPEC_DATA, the cache, else download)")
parser.add_argument("--steps", type=int, default=200)
args = parser.parse_args()

spec = netspec.load(args.spec)                       # validated + shape-checked
plan = netspec.compile(spec)                         # float32 plan, params from spec.seed
optimizer = spec.train.optimizer.build(plan.params)  # torch.optim.SGD semantics
lr = spec.train.optimizer.lr
print(f"{spec.name}: {sum(p.size for p in plan.params.values()):,} parameters "
      f"({', '.join(list(plan.params)[:4])}, ...)")

data = prepare(load_dataset(spec.data.dataset, data_dir=args.data_dir), spec.data.normalize)
x_train, y_train = data["train"]                     # (60000, 1, 28, 28) float32, (60000,) int64
x_test, y_test = data["test"]
rng = np.random.default_rng(spec.seed)
batch = spec.train.batch_size

running = None
for step in range(1, args.steps + 1):
    idx = rng.integers(0, len(x_train), batch)
    logits = plan.forward(x_train[idx], train=True)  # (B, 1, 28, 28) -> (B, 10)
    loss, dlogits = spec.loss(logits, y_train[idx])  # mean loss, dloss/dlogits (B, 10)
    plan.backward(dlogits)                           # fills plan.grads
    optimizer.step(plan.grads, lr)
    running = loss if running is None else 0.95 * running + 0.05 * loss
    if step == 1 or step % 25 == 0:
        print(f"step {step:4d}  loss {loss:.4f}  (running {running:.4f})")

predictions = plan.forward(x_test[:2000]).argmax(axis=1)  # eval mode
print(f"test accuracy on 2,000 images after {args.steps} steps: "
      f"{np.mean(predictions == y_test[:2000]):.2%}")
