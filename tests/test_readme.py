"""The plan-level API snippet (docs/api.md, "The plan underneath") runs as written (from the
checkout's root), and what it computes is right: the gradients it fills are the loss's
derivatives (central differences along random directions), dx is dL/dx, and its optimizer step
is the SGD update that lowers the batch's loss."""

import re

import numpy as np
from conftest import ROOT

import netspec


def python_blocks(section: str) -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def run_snippet(monkeypatch):
    """Execute the snippet; also return the plan's parameters as compiled (before its step)."""
    [snippet] = python_blocks("The plan underneath")
    monkeypatch.chdir(ROOT)
    compiled = []
    real_compile = netspec.compile

    def recording_compile(*args, **kwargs):
        plan = real_compile(*args, **kwargs)
        compiled.append({k: v.copy() for k, v in plan.params.items()})
        return plan

    monkeypatch.setattr(netspec, "compile", recording_compile)
    scope: dict = {}
    exec(compile(snippet, "docs/api.md (The plan underneath)", "exec"), scope)  # noqa: S102
    [initial] = compiled
    return scope, initial


def batch_loss(scope, params=None, x=None) -> float:
    plan, spec = scope["plan"], scope["spec"]
    if params is not None:
        for k, v in params.items():
            plan.params[k][...] = v
    logits = plan.forward(scope["x"] if x is None else x, train=True)
    return float(spec.loss(logits, scope["labels"])[0])


def test_python_api_snippet_runs_as_written(monkeypatch):
    scope, initial = run_snippet(monkeypatch)
    plan, spec = scope["plan"], scope["spec"]
    assert scope["logits"].shape == (8, 10)
    assert scope["predicted"].shape == (4,)
    assert set(scope["predicted"].tolist()) <= set(range(10))
    assert abs(float(scope["splits"]["train"][0].mean())) < 1e-3  # standardised
    grads = {k: g.copy() for k, g in plan.grads.items()}
    dx = np.array(scope["dx"], copy=True)
    stepped = {k: p.copy() for k, p in plan.params.items()}

    # the step: SGD's first update with momentum and L2 decay is p - lr * (g + wd * p)
    opt = spec.train.optimizer
    lr = spec.train.schedule.lr(0, opt.lr, spec.train.epochs)
    for k, p0 in initial.items():
        expected = p0 - lr * (grads[k] + opt.weight_decay * p0)
        np.testing.assert_allclose(stepped[k], expected, rtol=1e-12, atol=1e-15, err_msg=k)
    assert any(not np.array_equal(stepped[k], initial[k]) for k in initial)

    # the gradients, at the parameters they were computed for: central differences along
    # random directions (float64; LeNet's relus are far from their kinks at eps = 1e-6)
    rng = np.random.default_rng(0)
    eps = 1e-6
    before = batch_loss(scope, initial)
    assert abs(before - scope["loss"]) < 1e-12  # the snippet's loss, recomputed
    for _ in range(3):
        v = {k: rng.standard_normal(p.shape) for k, p in initial.items()}
        up = batch_loss(scope, {k: initial[k] + eps * v[k] for k in initial})
        down = batch_loss(scope, {k: initial[k] - eps * v[k] for k in initial})
        analytic = sum(float(np.sum(grads[k] * v[k])) for k in initial)
        assert abs((up - down) / (2 * eps) - analytic) <= 1e-6 * max(1.0, abs(analytic))
    u = rng.standard_normal(scope["x"].shape)
    up = batch_loss(scope, initial, scope["x"] + eps * u)
    down = batch_loss(scope, initial, scope["x"] - eps * u)
    analytic = float(np.sum(dx * u))
    assert abs((up - down) / (2 * eps) - analytic) <= 1e-6 * max(1.0, abs(analytic))

    # and the step lowered the loss on its batch
    assert batch_loss(scope, stepped) < before
