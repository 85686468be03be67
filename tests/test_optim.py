"""Optimizers and learning-rate schedules: hand-derived values, state round trips, validation,
and (when torch is installed) parity with torch.optim on random tensors.

Every expected number below is worked out by hand in the comment next to it from the update
rule (torch.optim's documented algorithms), not copied from netspec's output.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

import netspec

BASE = """\
input: {shape: [784]}
layers: [{type: linear, name: fc, out_features: 10}]
"""


def spec_with(optimizer: str | None = None, schedule: str | None = None, epochs: int = 10):
    """A minimal spec whose train section holds the given flow-style YAML entries."""
    overrides = [f"train.epochs={epochs}"]
    if optimizer:
        overrides.append(f"train.optimizer={optimizer}")
    if schedule:
        overrides.append(f"train.schedule={schedule}")
    return netspec.loads(BASE, "test.yaml", overrides)


def opt_for(optimizer: str, params: dict):
    spec = spec_with(optimizer)
    return spec.train.optimizer.build(params), spec.train.optimizer.lr


def arr(*v):
    return np.array(v, dtype=np.float64)


# ------------------------------------------------------------------ SGD


def test_sgd_plain_one_step():
    p = {"w": arr(1.0, -2.0)}
    opt, lr = opt_for("{type: sgd, lr: 0.1}", p)
    opt.step({"w": arr(0.5, 0.25)}, lr)
    # p - lr g = [1 - 0.05, -2 - 0.025]
    np.testing.assert_allclose(p["w"], [0.95, -2.025], rtol=1e-15)


def test_sgd_momentum_two_steps():
    p = {"w": arr(0.0, 0.0)}
    opt, lr = opt_for("{type: sgd, lr: 0.1, momentum: 0.9}", p)
    opt.step({"w": arr(1.0, -2.0)}, lr)
    # buf1 = g1 = [1, -2];  p1 = -0.1 * buf1 = [-0.1, 0.2]
    np.testing.assert_allclose(p["w"], [-0.1, 0.2], rtol=1e-15)
    opt.step({"w": arr(0.5, 0.5)}, lr)
    # buf2 = 0.9 * [1, -2] + [0.5, 0.5] = [1.4, -1.3];  p2 = p1 - 0.1 * buf2 = [-0.24, 0.33]
    np.testing.assert_allclose(p["w"], [-0.24, 0.33], rtol=1e-14)


def test_sgd_nesterov_two_steps():
    p = {"w": arr(0.0, 0.0)}
    opt, lr = opt_for("{type: sgd, lr: 0.1, momentum: 0.9, nesterov: true}", p)
    opt.step({"w": arr(1.0, -2.0)}, lr)
    # buf1 = [1, -2];  d = g1 + 0.9 buf1 = [1.9, -3.8];  p1 = [-0.19, 0.38]
    np.testing.assert_allclose(p["w"], [-0.19, 0.38], rtol=1e-14)
    opt.step({"w": arr(0.5, 0.5)}, lr)
    # buf2 = [1.4, -1.3];  d = g2 + 0.9 buf2 = [1.76, -0.67];  p2 = p1 - 0.1 d = [-0.366, 0.447]
    np.testing.assert_allclose(p["w"], [-0.366, 0.447], rtol=1e-14)


def test_sgd_weight_decay_is_added_to_the_gradient():
    p = {"w": arr(2.0, -4.0)}
    opt, lr = opt_for("{type: sgd, lr: 0.5, weight_decay: 0.1}", p)
    opt.step({"w": arr(0.0, 1.0)}, lr)
    # d = g + 0.1 p = [0.2, 0.6];  p - 0.5 d = [1.9, -4.3]
    np.testing.assert_allclose(p["w"], [1.9, -4.3], rtol=1e-15)


def test_sgd_updates_every_param_in_place():
    w, b = arr(1.0), arr(2.0)
    params = {"fc.weight": w, "fc.bias": b}
    opt, lr = opt_for("{type: sgd, lr: 1.0}", params)
    opt.step({"fc.weight": arr(0.5), "fc.bias": arr(-1.0)}, lr)
    assert params["fc.weight"] is w and params["fc.bias"] is b  # the plan's own arrays
    assert (w[0], b[0]) == (0.5, 3.0)


# ------------------------------------------------------------------ Adam / AdamW


def test_adam_first_step_moves_each_param_by_about_lr_against_the_gradient_sign():
    g = arr(3.0, -0.5, 1e-3, -200.0)
    p = {"w": arr(1.0, 1.0, 1.0, 1.0)}
    opt, lr = opt_for("{type: adam, lr: 0.01}", p)
    opt.step({"w": g}, lr)
    # step 1: m^ = g, v^ = g^2, so the update is lr * g / (|g| + eps), ~ lr * sign(g)
    np.testing.assert_allclose(p["w"], 1.0 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-14)
    # |move| = lr / (1 + eps/|g|): within 1e-5 of lr even for |g| = 1e-3
    np.testing.assert_allclose(1.0 - p["w"], 0.01 * np.sign(g), rtol=1.1e-5)


def test_adam_two_steps_by_hand():
    p = {"w": arr(0.0)}
    opt, lr = opt_for("{type: adam, lr: 0.1, betas: [0.5, 0.5], eps: 1.0e-300}", p)
    opt.step({"w": arr(2.0)}, lr)
    # m1 = 0.5 * 2 = 1, v1 = 0.5 * 4 = 2; m^ = 1 / 0.5 = 2, v^ = 2 / 0.5 = 4; p1 = -0.1 * 2 / 2
    np.testing.assert_allclose(p["w"], [-0.1], rtol=1e-15)
    opt.step({"w": arr(4.0)}, lr)
    # m2 = 0.5 * 1 + 0.5 * 4 = 2.5, v2 = 0.5 * 2 + 0.5 * 16 = 9; bias corrections 1 - 0.25 = 0.75
    # m^ = 10/3, v^ = 12;  p2 = -0.1 - 0.1 * (10/3) / sqrt(12)
    np.testing.assert_allclose(p["w"], [-0.1 - 0.1 * (10 / 3) / math.sqrt(12)], rtol=1e-14)


def test_adam_weight_decay_is_l2_on_the_gradient_adamw_is_decoupled():
    # zero gradient: Adam sees g = wd * p = 1 and moves by ~lr; AdamW only shrinks p by lr * wd
    p = {"w": arr(2.0)}
    opt, lr = opt_for("{type: adam, lr: 0.1, weight_decay: 0.5}", p)
    opt.step({"w": arr(0.0)}, lr)
    np.testing.assert_allclose(p["w"], [2.0 - 0.1 * 1.0 / (1.0 + 1e-8)], rtol=1e-15)

    p = {"w": arr(2.0)}
    opt, lr = opt_for("{type: adamw, lr: 0.1, weight_decay: 0.25}", p)
    opt.step({"w": arr(0.0)}, lr)
    # p (1 - lr wd) = 2 * 0.975; the Adam part is 0 / (0 + eps) = 0
    np.testing.assert_allclose(p["w"], [1.95], rtol=1e-15)


def test_adamw_default_weight_decay_is_torchs():
    assert spec_with("{type: adamw}").train.optimizer.weight_decay == 0.01  # torch's default
    assert spec_with("{type: adam}").train.optimizer.weight_decay == 0.0


# ------------------------------------------------------------------ optimizer state round trip


@pytest.mark.parametrize("optimizer", [
    "{type: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01}",
    "{type: adam, lr: 0.01, weight_decay: 0.01}",
    "{type: adamw, lr: 0.01}",
])
def test_state_dict_round_trip_gives_identical_steps(optimizer):
    rng = np.random.default_rng(0)
    grads = [{"a.weight": rng.normal(size=(3, 2)), "a.bias": rng.normal(size=3)}
             for _ in range(5)]
    p = {"a.weight": rng.normal(size=(3, 2)), "a.bias": rng.normal(size=3)}
    opt, lr = opt_for(optimizer, p)
    for g in grads[:2]:
        opt.step(g, lr)

    buf = io.BytesIO()  # as a checkpoint would: through an .npz file
    np.savez(buf, **opt.state_dict())
    buf.seek(0)
    saved = dict(np.load(buf))
    assert int(saved["steps"]) == 2
    q = {k: v.copy() for k, v in p.items()}
    resumed, _ = opt_for(optimizer, q)
    resumed.load_state_dict(saved)
    control = {k: v.copy() for k, v in p.items()}
    fresh, _ = opt_for(optimizer, control)  # same params, no optimizer state

    fresh.step(grads[2], lr)
    for g in grads[2:]:
        opt.step(g, lr)
        resumed.step(g, lr)
        for k, v in p.items():
            np.testing.assert_array_equal(q[k], v, err_msg=k)
        if g is grads[2]:  # without the loaded state, the third step differs
            assert not np.allclose(control["a.weight"], p["a.weight"], rtol=1e-6, atol=0)
    assert resumed.steps == opt.steps == 5
    assert set(resumed.state_dict()) == set(saved)


# ------------------------------------------------------------------ schedules


def lr_at(schedule: str, epoch: int, base: float, epochs: int = 10) -> float:
    return spec_with(schedule=schedule, epochs=epochs).train.schedule.lr(epoch, base, epochs)


def test_constant():
    assert [lr_at("{type: constant}", e, 0.3) for e in (0, 5, 9)] == [0.3, 0.3, 0.3]


def test_step():
    s = "{type: step, step_size: 3, gamma: 0.5}"
    got = [lr_at(s, e, 0.8) for e in range(10)]
    # 0.8 for epochs 0-2, halved at 3, 6, 9
    np.testing.assert_allclose(got, [0.8] * 3 + [0.4] * 3 + [0.2] * 3 + [0.1], rtol=1e-15)


def test_multistep():
    s = "{type: multistep, milestones: [2, 5], gamma: 0.1}"
    got = [lr_at(s, e, 1.0) for e in range(7)]
    # x0.1 once from epoch 2, twice from epoch 5
    np.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-15)


def test_exponential():
    s = "{type: exponential, gamma: 0.5}"
    np.testing.assert_allclose([lr_at(s, e, 0.8) for e in range(4)], [0.8, 0.4, 0.2, 0.1],
                               rtol=1e-15)


def test_cosine():
    got = [lr_at("{type: cosine}", e, 1.0, epochs=4) for e in range(4)]
    # (1 + cos(pi e / 4)) / 2 = 1, (1 + sqrt(2)/2) / 2, 1/2, (1 - sqrt(2)/2) / 2
    r = math.sqrt(2) / 2
    np.testing.assert_allclose(got, [1.0, (1 + r) / 2, 0.5, (1 - r) / 2], rtol=1e-15)
    # with min_lr 0.1 and base 1.1, halfway is 0.1 + 1.0 / 2
    assert lr_at("{type: cosine, min_lr: 0.1}", 2, 1.1, epochs=4) == pytest.approx(0.6, 1e-15)


def test_cosine_warmup():
    s = "{type: cosine, warmup_epochs: 2}"
    got = [lr_at(s, e, 0.3, epochs=6) for e in range(6)]
    # warmup 0.3 * 1/3, 0.3 * 2/3; then cosine over the remaining 4 epochs, starting at 0.3
    r = math.sqrt(2) / 2
    want = [0.1, 0.2, 0.3, 0.3 * (1 + r) / 2, 0.15, 0.3 * (1 - r) / 2]
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_cosine_per_step_with_fractional_warmup():
    s = "{type: cosine, warmup_epochs: 0.5, interval: step}"
    sched = spec_with(schedule=s, epochs=2).train.schedule
    # 4 steps per epoch: warmup round(0.5 * 4) = 2 steps of 1/3, 2/3; cosine over 8 - 2 = 6
    at = [sched.position(e, k, 4, 2) for e in range(2) for k in range(4)]  # (t, total = 8)
    got = [sched.lr(t, 0.3, total, 4) for t, total in at]
    want = [0.1, 0.2] + [0.3 * (1 + math.cos(math.pi * i / 6)) / 2 for i in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert sched.depends_on_length()
    assert not spec_with(schedule="{type: step, step_size: 2}").train.schedule.depends_on_length()


def test_epoch_schedules_dump_as_before_interval_existed():
    """Digests (and so resuming older checkpoints) depend on the dump: the default interval is
    left out and a whole warmup stays an int."""
    dumped = spec_with(schedule="{type: cosine, warmup_epochs: 2}").model_dump(mode="json")
    assert dumped["train"]["schedule"] == {"type": "cosine", "warmup_epochs": 2, "min_lr": 0.0}
    per_step = spec_with(schedule="{type: cosine, warmup_epochs: 0.5, interval: step}")
    assert per_step.model_dump(mode="json")["train"]["schedule"]["interval"] == "step"


@pytest.mark.parametrize("schedule,epochs,words", [
    ("{type: cosine, warmup_epochs: 3}", 3, ["warmup_epochs (3)", "train.epochs = 3", "shorten"]),
    ("{type: cosine, warmup_epochs: 2.5, interval: step}", 2, ["warmup_epochs (2.5)"]),
    ("{type: cosine, warmup_epochs: 0.5}", 4, ["whole number", "interval: step"]),
    ("{type: cosine, interval: iteration}", 4, ["interval", "epoch, step"]),
])
def test_bad_warmup_or_interval_is_a_spec_error_that_says_why(schedule, epochs, words):
    with pytest.raises(netspec.SpecError) as e:
        spec_with(schedule=schedule, epochs=epochs)
    for word in words:
        assert word in str(e.value), str(e.value)


def test_trainer_steps_the_lr_per_batch_with_interval_step(tiny_splits):
    """The optimizer sees a new lr at every step (epoch interval: one lr per epoch)."""
    from netspec.train.trainer import Trainer

    seen = {}
    for interval in ("epoch", "step"):
        spec = spec_with("{type: sgd, lr: 0.1}", f"{{type: exponential, gamma: 0.9, "
                         f"interval: {interval}}}", epochs=2)
        trainer = Trainer(spec, tiny_splits)
        lrs = []
        step = trainer.optimizer.step
        trainer.optimizer.step = lambda grads, lr, lrs=lrs, step=step: (lrs.append(lr),
                                                                       step(grads, lr))
        trainer.train_epoch()
        trainer.train_epoch()
        seen[interval] = lrs
    spe = len(seen["step"]) // 2
    np.testing.assert_allclose(seen["step"], 0.1 * 0.9 ** np.arange(2 * spe), rtol=1e-14)
    np.testing.assert_allclose(seen["epoch"], [0.1] * spe + [0.09] * spe, rtol=1e-14)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("entry,words", [
    ("optimizer: {type: sgd, lr: 0.1, nesterov: true}", ["nesterov", "momentum"]),
    ("optimizer: {type: adam, betas: [0.9, 1.0]}", ["betas", "[0, 1)"]),
    ("optimizer: {type: adamw, betas: [-0.1, 0.999]}", ["betas"]),
    ("optimizer: {type: sgd, lr: 0}", ["lr", "greater than 0"]),
    ("optimizer: {type: sgd, momentum: 1.5}", ["momentum"]),
    ("optimizer: {type: rmsprop}", ["rmsprop", "sgd"]),
    ("schedule: {type: multistep, milestones: [5, 3]}", ["milestones", "increasing"]),
    ("schedule: {type: multistep, milestones: [3, 3, 8]}", ["milestones", "increasing"]),
    ("schedule: {type: step}", ["step_size"]),
])
def test_invalid_options_are_spec_errors_at_their_line(entry, words):
    text = BASE + "train:\n  epochs: 3\n  " + entry + "\n"
    with pytest.raises(netspec.SpecError) as e:
        netspec.loads(text, "bad.yaml")
    message = str(e.value)
    assert message.startswith("bad.yaml:5:"), message  # line 5 holds the entry
    for word in words:
        assert word in message, message


def test_exponent_without_dot_reads_as_a_number():
    # PyYAML reads 1e-4 as a string (YAML 1.1); the spec files write weight_decay: 1e-4
    spec = netspec.loads(BASE + "train:\n  optimizer: {type: sgd, weight_decay: 1e-4}\n")
    assert spec.train.optimizer.weight_decay == 1e-4


# ------------------------------------------------------------------ parity with torch.optim


OPTIMIZERS = [
    "{type: sgd, lr: 0.1}",
    "{type: sgd, lr: 0.1, momentum: 0.9}",
    "{type: sgd, lr: 0.1, momentum: 0.9, nesterov: true}",
    "{type: sgd, lr: 0.1, momentum: 0.8, weight_decay: 0.05}",
    "{type: adam, lr: 0.01}",
    "{type: adam, lr: 0.01, betas: [0.8, 0.95], eps: 1.0e-6, weight_decay: 0.05}",
    "{type: adamw, lr: 0.01}",
    "{type: adamw, lr: 0.01, weight_decay: 0.2}",
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_matches_torch(optimizer):
    """6 steps on random tensors, with the lr changed between steps as a schedule would."""
    torch = pytest.importorskip("torch", reason="parity with torch.optim needs PyTorch")
    from netspec.interop.torch_bridge import torch_optimizer

    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}
    theirs = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(p[k])) for k in p])
    spec = spec_with(optimizer)
    ours = spec.train.optimizer.build(p)
    topt = torch_optimizer(spec, theirs)
    for k in range(6):
        lr = spec.train.optimizer.lr * (1.0, 0.5, 0.25)[k % 3]
        grads = {name: rng.normal(size=v.shape) for name, v in p.items()}
        ours.step(grads, lr)
        for group in topt.param_groups:
            group["lr"] = lr
        for t, g in zip(theirs, grads.values(), strict=True):
            t.grad = torch.tensor(g)
        topt.step()
        for t, (name, v) in zip(theirs, p.items(), strict=True):
            err = np.max(np.abs(v - t.detach().numpy())) / np.max(np.abs(t.detach().numpy()))
            assert err <= 1e-12, f"step {k + 1}: {name}: relative error {err:.3g}"


SCHEDULES = [
    "{type: constant}",
    "{type: step, step_size: 6, gamma: 0.3}",
    "{type: multistep, milestones: [3, 7, 15], gamma: 0.5}",
    "{type: exponential, gamma: 0.85}",
    "{type: cosine}",
    "{type: cosine, min_lr: 0.001}",
    "{type: cosine, warmup_epochs: 3, min_lr: 0.0005}",
    "{type: cosine, warmup_epochs: 1}",
]
STEP_SCHEDULES = [  # stepped per optimizer step, 7 steps per epoch
    "{type: constant, interval: step}",
    "{type: step, step_size: 10, gamma: 0.5, interval: step}",
    "{type: multistep, milestones: [5, 40, 90], gamma: 0.5, interval: step}",
    "{type: exponential, gamma: 0.98, interval: step}",
    "{type: cosine, interval: step}",
    "{type: cosine, warmup_epochs: 1.5, min_lr: 0.0005, interval: step}",
    "{type: cosine, warmup_epochs: 0.3, interval: step}",
]


@pytest.mark.parametrize("schedule", SCHEDULES + STEP_SCHEDULES)
def test_schedule_matches_torch(schedule):
    """netspec's closed form vs the torch scheduler's get_last_lr() over 20 epochs, the
    scheduler stepped per epoch or, with interval 'step', per iteration (7 per epoch)."""
    torch = pytest.importorskip("torch", reason="parity with torch schedulers needs PyTorch")
    from netspec.interop.torch_bridge import torch_optimizer, torch_scheduler

    epochs, base = 20, 0.1
    spec = spec_with(f"{{type: sgd, lr: {base}}}", schedule, epochs)
    s = spec.train.schedule
    spe = 7 if s.interval == "step" else 1
    params = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))])
    opt = torch_optimizer(spec, params)
    sched = torch_scheduler(spec, opt, spe)
    ours, theirs = [], []
    for epoch in range(epochs):
        for step in range(spe):
            t, total = s.position(epoch, step, spe, epochs)
            ours.append(s.lr(t, base, total, spe))
            theirs.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
    ours, theirs = np.array(ours), np.array(theirs)
    err = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert err <= 1e-12, f"relative error {err:.3g}\nnetspec {ours}\ntorch   {theirs}"
    if s.type != "constant":
        assert theirs.min() < 0.5 * theirs.max()  # the schedule really moves
