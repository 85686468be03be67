"""netspec vs PyTorch in float64: every spec, every layer example, every optimizer.

Each spec in specs/*.yaml (collected by glob) is compiled in float64 and rebuilt in torch with
the same parameters (netspec.interop.torch_bridge). On a real MNIST batch from
tests/fixtures/mnist-tiny the two must agree, per tensor, to REL (relative error max|a - b| /
max|b|) on: the logits, the loss value and dloss/dlogits (torch's
CrossEntropyLoss(label_smoothing) / MSELoss on one-hot targets), the input gradient and every
parameter gradient (see GRAD_FLOOR), in train mode and in eval mode, and batchnorm running
statistics after each train forward. Every registered layer's `examples` get the same
forward/backward comparison on random data, and a few train steps with each optimizer must leave
the same parameters. (Schedules: tests/test_optim.py.)

Dropout masks come from different random generators, so train-mode comparisons (forward,
backward, optimizer steps) load the spec with every dropout layer's p overridden to 0; eval mode
uses the spec as written. Eval mode follows a train forward of the plan on other data (so no
train-mode cache may leak into it) and random running statistics, the same in both (so
batchnorm's eval path is not the identity).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import pytest

import netspec
from netspec.nn.layers import LAYERS, Layer
from netspec.plan.compiler import layer_plan
from netspec.plan.shapes import LayerInfo

torch = pytest.importorskip("torch", reason="torch parity tests need PyTorch (pip install torch)")
bridge = pytest.importorskip("netspec.interop.torch_bridge")

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
FIXTURE = ROOT / "tests" / "fixtures" / "mnist-tiny"
BATCH = 16
LARGE = 256  # an eval batch big enough to be split into chunks by the plan
REL = 1e-8
# A parameter gradient that is zero in exact arithmetic (the bias of a layer feeding a train-mode
# batchnorm) is rounding noise in both libraries, so its relative error means nothing: the scale
# of each parameter gradient is floored at GRAD_FLOOR x the largest parameter-gradient entry.
GRAD_FLOOR = 1e-4


def rel(a, b, floor: float = 0.0) -> float:
    """max|a - b| / max(max|b|, floor) over one tensor (b is the torch reference)."""
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.max(np.abs(b)) if b.size else 0.0, floor)
    err = np.max(np.abs(a - b)) if a.size else 0.0
    return float(err / scale) if scale > 0 else float(err)


def assert_close(a, b, what: str, tol: float = REL) -> None:
    e = rel(a, b)
    assert e <= tol, f"{what}: relative error {e:.3g} > {tol:g}"


# ------------------------------------------------------------------ data and set-up


@pytest.fixture(scope="module", autouse=True)
def single_threaded():
    """One thread for torch and (when threadpoolctl is there) numpy's BLAS, restored afterwards.

    These are tiny float64 ops on a shared 2-core machine: torch's and OpenBLAS's thread pools
    only contend with each other (measured: conv backward ~100x slower with 2 torch threads
    under load, a 16-sample MLP step ~50x slower in numpy once torch has run)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (the bench extra); only speed depends on it
        threadpool_limits = None
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    if threadpool_limits is None:
        yield
    else:
        with threadpool_limits(1, user_api="blas"):
            yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist():
    """The fixture's train split: images (N, 1, 28, 28) float64 standardized, labels (N,)."""
    from netspec.data import load_dataset, prepare

    prepared = prepare(load_dataset(FIXTURE, download_missing=False), "standardize",
                       dtype="float64")
    return prepared["train"]


# MNIST's flat background makes exact ties in max pooling, and which tied input wins depends on
# the last bit of the convolution below it, which differs between BLAS kernels (OpenBLAS on Zen vs
# Skylake): one library then routes the gradient to the other tied input. A little seeded noise
# makes the batch tie-free, so parity holds on any CPU. Tie routing itself is tested, on exact
# ties both libraries see, in tests/test_maxpool_ties.py.
JITTER = 1e-3


def inputs_for(spec, mnist, start: int, n: int) -> np.ndarray:
    """n MNIST samples reshaped to the spec's input shape; for a spec of another input size
    (colour images, table rows), seeded standard-normal samples of its shape."""
    shape = tuple(spec.input.shape)
    if np.prod(shape) == 28 * 28:
        return mnist[0][start:start + n].reshape(n, *shape)  # (N, 1, 28, 28) -> (N, *in)
    return np.random.default_rng(1000 + start).standard_normal((n, *shape))


def batch_for(spec, mnist, start: int = 0):
    """A BATCH-sample batch (plus JITTER noise) of the spec's input shape, and its labels."""
    x = inputs_for(spec, mnist, start, BATCH)
    x = x + np.random.default_rng(start).normal(0.0, JITTER, x.shape)
    classes = spec.infos[-1].out_shape[0]
    return np.ascontiguousarray(x), mnist[1][start:start + BATCH] % classes


def load(path: Path | str, train_mode: bool, overrides=()):
    """The spec at `path` (or YAML text); in train mode with every dropout's p set to 0."""
    text = path.read_text() if isinstance(path, Path) else path
    spec = netspec.loads(text, str(path), overrides)
    if train_mode:
        zero = sorted({f"{written_at(spec, i)}.p=0" for i, layer in enumerate(spec.layers)
                       if layer.type == "dropout"})
        if zero:
            spec = netspec.loads(text, str(path), [*overrides, *zero])
    return spec


def written_at(spec, i: int) -> str:
    """The --set key of expanded layer i where it is written: layers[3], blocks.b.layers[1]."""
    origins = getattr(spec.source, "origins", None)
    path = origins[i].path if origins else ("layers", i)
    return "".join(f"[{p}]" if isinstance(p, int) else ("." if k else "") + p
                   for k, p in enumerate(path))


def build(spec):
    """(float64 plan, torch module holding the same parameters and buffers)."""
    plan = netspec.compile(spec, dtype="float64")
    module = bridge.to_torch(spec, plan)
    return plan, module


def randomize_buffers(plan, module, seed: int = 1) -> None:
    """The same random running statistics in both (variances in [0.5, 2])."""
    rng = np.random.default_rng(seed)
    for name, buf in plan.buffers.items():
        if name.endswith("var"):
            buf[...] = rng.uniform(0.5, 2.0, buf.shape)
        else:
            buf[...] = rng.normal(0.0, 0.5, buf.shape)
    bridge.load_state_dict(module, plan.state_dict())


def as_after_training(plan, module, x_other) -> None:
    """Set up an eval-mode comparison: a train forward of the plan on other data first (what
    any layer caches in train mode must not leak into the eval backward), then the same random
    running statistics in both."""
    plan.forward(x_other, train=True)
    randomize_buffers(plan, module)


def torch_loss(loss_spec, logits, labels):
    """torch's loss for a netspec loss: CrossEntropyLoss, MSELoss on one-hot targets, NLLLoss."""
    if loss_spec.type == "cross_entropy":
        fn = torch.nn.CrossEntropyLoss(label_smoothing=loss_spec.label_smoothing)
        return fn(logits, labels)
    if loss_spec.type == "mse":
        one_hot = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return torch.nn.MSELoss()(logits, one_hot)
    if loss_spec.type == "nll":  # NLLLoss takes log-probabilities; of probabilities, their log
        logp = logits if loss_spec.input == "log_probabilities" else torch.log(logits)
        return torch.nn.NLLLoss()(logp, labels)
    raise NotImplementedError(f"no torch loss for '{loss_spec.type}' in this test")


def forward_backward(spec, plan, module, x, y, train: bool) -> dict[str, float]:
    """Run both, assert agreement on everything, return {tensor: relative error}."""
    module.train(train)
    module.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y)
    logits_t = module(xt)
    logits_t.retain_grad()
    loss_t = torch_loss(spec.loss, logits_t, yt)
    loss_t.backward()

    logits = plan.forward(x, train=train)
    loss, dlogits = spec.loss(logits, y)
    dx = plan.backward(dlogits)

    errors = {"logits": rel(logits, logits_t), "loss": rel(loss, loss_t),
              "dlogits": rel(dlogits, logits_t.grad), "dx": rel(dx, xt.grad)}
    torch_params = dict(module.named_parameters())
    assert sorted(torch_params) == sorted(plan.grads)
    floor = GRAD_FLOOR * max(p.grad.abs().max().item() for p in torch_params.values())
    for name, p in torch_params.items():
        errors[f"grad {name}"] = rel(plan.grads[name], p.grad, floor)
    torch_buffers = {k: v for k, v in module.named_buffers()
                     if k.rsplit(".", 1)[-1] not in bridge.TORCH_ONLY}
    assert sorted(torch_buffers) == sorted(plan.buffers)
    for name, b in torch_buffers.items():
        errors[f"buffer {name}"] = rel(plan.buffers[name], b)
    bad = {k: e for k, e in errors.items() if not e <= REL}
    assert not bad, f"{'train' if train else 'eval'} mode: relative errors above {REL:g}: {bad}"
    return errors


# ------------------------------------------------------------------ whole specs


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_forward_backward(path, train, mnist):
    spec = load(path, train)
    plan, module = build(spec)
    if not train:
        as_after_training(plan, module, batch_for(spec, mnist, start=BATCH)[0])
    x, y = batch_for(spec, mnist)
    forward_backward(spec, plan, module, x, y, train)
    if train and plan.buffers:  # a second batch: running statistics accumulate in both
        x, y = batch_for(spec, mnist, start=BATCH)
        forward_backward(spec, plan, module, x, y, train)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_eval_large_batch(path, mnist):
    """Eval-mode logits on LARGE samples, which the plan may run in chunks (plan.py).

    Forward only: backward after a chunked forward recomputes the whole batch, which is
    correct but slow at this size, and test_spec_forward_backward covers eval backward."""
    spec = load(path, False)
    plan, module = build(spec)
    as_after_training(plan, module, batch_for(spec, mnist)[0])
    x = np.ascontiguousarray(inputs_for(spec, mnist, 0, LARGE))
    module.eval()
    with torch.no_grad():
        assert_close(plan.forward(x, train=False), module(torch.tensor(x)), "eval logits")


# What the spec files may not cover: a bias feeding batchnorm (its gradient is zero in exact
# arithmetic, see GRAD_FLOOR), batchnorm on a flat input after a conv net, and the other losses.
BIAS_BEFORE_BN = """\
input: {shape: [1, 28, 28]}
layers:
  - {type: conv2d, name: conv1, out_channels: 4, kernel_size: 3, stride: 2}
  - {type: batchnorm, name: bn1, momentum: 0.3}
  - {type: relu}
  - {type: flatten}
  - {type: linear, name: fc1, out_features: 12}
  - {type: batchnorm, name: bn2, eps: 1.0e-3}
  - {type: sigmoid}
  - {type: linear, name: fc2, out_features: 10}
"""
VARIANTS = {
    "bias-before-batchnorm": (BIAS_BEFORE_BN, []),
    "label-smoothing": (ROOT / "specs" / "lenet.yaml",
                        ["loss={type: cross_entropy, label_smoothing: 0.1}"]),
    "mse": (ROOT / "specs" / "lenet.yaml", ["loss={type: mse}"]),
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_variant_forward_backward(variant, train, mnist):
    source, overrides = VARIANTS[variant]
    spec = load(source, train, overrides)
    plan, module = build(spec)
    if not train:
        as_after_training(plan, module, batch_for(spec, mnist, start=BATCH)[0])
    x, y = batch_for(spec, mnist)
    forward_backward(spec, plan, module, x, y, train)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_fresh_buffers_match_torch_defaults(path):
    """netspec's initial buffers (e.g. running_var = 1) are torch's defaults."""
    spec = netspec.load(path)
    plan = netspec.compile(spec, dtype="float64")
    fresh = bridge.to_torch(spec, dtype="float64")  # torch's own initialisation
    state = {k: v for k, v in fresh.state_dict().items()
             if k.rsplit(".", 1)[-1] not in bridge.TORCH_ONLY}
    assert sorted(state) == sorted(plan.state_dict())
    for name in plan.buffers:
        np.testing.assert_array_equal(plan.buffers[name], state[name].numpy(), err_msg=name)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_checkpoint_state_dict_loads_into_torch_by_name(path, mnist):
    spec = netspec.load(path)
    plan = netspec.compile(spec, dtype="float64")
    rng = np.random.default_rng(2)
    for name, value in plan.state_dict().items():  # a "trained" state, unlike either init
        value = value + rng.normal(0.0, 0.1, value.shape)
        plan.load_state_dict({**plan.state_dict(), name: np.abs(value)
                              if name.endswith("var") else value})
    module = bridge.to_torch(spec, dtype="float64")  # torch's init, then netspec's state
    bridge.load_state_dict(module, plan.state_dict())
    for name, value in plan.state_dict().items():
        np.testing.assert_array_equal(module.state_dict()[name].numpy(), value, err_msg=name)
    x, _ = batch_for(spec, mnist)
    module.eval()
    with torch.no_grad():
        assert_close(plan.forward(x, train=False), module(torch.tensor(x)), "eval logits")

    # and back: torch's state_dict (without its torch-only keys) loads into a fresh plan
    other = netspec.compile(spec, dtype="float64")
    other.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()
                           if k.rsplit(".", 1)[-1] not in bridge.TORCH_ONLY})
    for name, value in plan.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value, err_msg=name)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_checkpoint_file_loads_into_plain_torch(path, mnist, tmp_path):
    """A netspec .npz checkpoint loads into torch by name with nothing but numpy and torch."""
    from netspec import checkpoint

    spec = netspec.load(path)
    plan = netspec.compile(spec, dtype="float32")  # what training writes
    optimizer = spec.train.optimizer.build(plan.params)
    x, y = batch_for(spec, mnist)
    for _ in range(2):  # two train steps, so parameters, buffers and moments are all non-trivial
        _, dlogits = spec.loss(plan.forward(x, train=True), y)
        plan.backward(dlogits)
        optimizer.step(plan.grads, spec.train.optimizer.lr)
    file = checkpoint.save(tmp_path / "last.npz", plan.state_dict(), optimizer.state_dict(),
                           {"epoch": 1})

    module = bridge.to_torch(spec, dtype="float32")  # torch's own init
    with np.load(file, allow_pickle=False) as archive:
        tensors = {k: torch.from_numpy(archive[k]) for k in archive.files
                   if k != checkpoint.META and not k.startswith(checkpoint.OPTIM)}
    result = module.load_state_dict(tensors, strict=False)
    assert result.unexpected_keys == []
    assert all(k.rsplit(".", 1)[-1] in bridge.TORCH_ONLY for k in result.missing_keys)
    module.eval()
    with torch.no_grad():
        assert_close(plan.forward(x, train=False), module(torch.tensor(x, dtype=torch.float32)),
                     "float32 eval logits", tol=1e-5)

    again = bridge.to_torch(spec, dtype="float32")  # the same through the bridge's strict load
    bridge.load_state_dict(again, checkpoint.load(file).state)
    for name, value in again.state_dict().items():
        assert torch.equal(value, module.state_dict()[name]), name


def test_load_state_dict_is_strict():
    spec = netspec.load(ROOT / "specs" / "mlp.yaml")
    plan = netspec.compile(spec, dtype="float32")
    module = bridge.to_torch(spec, plan)
    assert module[0].weight.dtype == torch.float32
    state = plan.state_dict()
    with pytest.raises(netspec.CheckpointError, match="missing: fc1.bias"):
        bridge.load_state_dict(module, {k: v for k, v in state.items() if k != "fc1.bias"})
    with pytest.raises(netspec.CheckpointError, match="unexpected: fc9.weight"):
        bridge.load_state_dict(module, {**state, "fc9.weight": state["fc1.weight"]})
    with pytest.raises(netspec.CheckpointError, match="shape mismatch: fc2.weight"):
        bridge.load_state_dict(module, {**state, "fc2.weight": state["fc2.weight"].T})


def test_unknown_layer_type_names_it():
    class Mystery(Layer):  # a layer the bridge has no entry for (deliberately not registered)
        type: Literal["mystery"] = "mystery"

    info = LayerInfo(0, "odd", Mystery(), (4,), (4,), {}, {}, 0)
    with pytest.raises(NotImplementedError, match="'mystery'.*'odd'"):
        bridge.to_torch(SimpleNamespace(infos=[info]))


# ------------------------------------------------------------------ every layer example


LAYER_CASES = [(tag, i) for tag, cls in sorted(LAYERS.items()) for i in range(len(cls.examples))]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("tag,i", LAYER_CASES, ids=[f"{t}-{i}" for t, i in LAYER_CASES])
def test_layer_example(tag, i, train):
    """Each registered layer's examples, alone, on random input and a random upstream gradient."""
    fields, in_shape = LAYERS[tag].examples[i]
    layer = LAYERS[tag].model_validate({"type": tag, **fields})
    if train and tag == "dropout":
        layer = layer.model_copy(update={"p": 0.0})
    plan = layer_plan(layer, in_shape, "float64")
    module = bridge.to_torch(SimpleNamespace(infos=[s.info for s in plan.steps]), plan)
    rng = np.random.default_rng(i)
    if not train:
        as_after_training(plan, module, rng.normal(size=(5, *in_shape)))
    module.train(train)
    x = rng.normal(size=(5, *in_shape))
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    dy = rng.normal(size=tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    y = plan.forward(x, train=train)
    assert_close(y, yt, "y")
    assert_close(plan.backward(dy), xt.grad, "dx")
    for name, p in module.named_parameters():
        assert_close(plan.grads[name], p.grad, f"grad {name}")
    for name, b in module.named_buffers():
        if name.rsplit(".", 1)[-1] not in bridge.TORCH_ONLY:
            assert_close(plan.buffers[name], b, f"buffer {name}")


# ------------------------------------------------------------------ optimizers


OPTIMIZERS = {
    "sgd": "{type: sgd, lr: 0.05}",
    "sgd-momentum": "{type: sgd, lr: 0.05, momentum: 0.9}",
    "sgd-nesterov": "{type: sgd, lr: 0.05, momentum: 0.9, nesterov: true}",
    "sgd-weight-decay": "{type: sgd, lr: 0.05, momentum: 0.5, weight_decay: 0.01}",
    "adam": "{type: adam, lr: 0.001}",
    "adam-weight-decay": "{type: adam, lr: 0.002, betas: [0.8, 0.99], weight_decay: 0.01}",
    "adamw": "{type: adamw, lr: 0.002, weight_decay: 0.1, eps: 1.0e-6}",
}
# a plain MLP and a conv net with batchnorm (lenet if that spec is gone)
OPTIM_SPECS = ([p for p in SPECS if p.stem == "mlp"]
               + ([p for p in SPECS if p.stem == "convnet-bn"]
                  or [p for p in SPECS if p.stem == "lenet"]))
STEPS = 3


@pytest.mark.parametrize("path", OPTIM_SPECS, ids=[p.name for p in OPTIM_SPECS])
@pytest.mark.parametrize("opt", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_optimizer_steps(opt, path, mnist):
    """STEPS train steps (forward, backward, update) on successive batches; same params."""
    spec = load(path, True, [f"train.optimizer={OPTIMIZERS[opt]}"])
    plan, module = build(spec)
    module.train()
    ours = spec.train.optimizer.build(plan.params)
    theirs = bridge.torch_optimizer(spec, module)
    for k in range(STEPS):
        x, y = batch_for(spec, mnist, start=k * BATCH)
        theirs.zero_grad()
        torch_loss(spec.loss, module(torch.tensor(x)), torch.tensor(y)).backward()
        theirs.step()
        _, dlogits = spec.loss(plan.forward(x, train=True), y)
        plan.backward(dlogits)
        ours.step(plan.grads, spec.train.optimizer.lr)
        for name, p in module.named_parameters():
            assert_close(plan.params[name], p, f"step {k + 1}: {name}")
        for name, b in module.named_buffers():
            if name.rsplit(".", 1)[-1] not in bridge.TORCH_ONLY:
                assert_close(plan.buffers[name], b, f"step {k + 1}: {name}")
