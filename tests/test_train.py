"""The trainer, the run directory and its robustness.

Resume (mid-epoch too), SIGKILL, Ctrl-C, NaN, corrupt and mismatched checkpoints.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, TINY, cli, finished_run, resumed_run, stopped_run, tiny_conv_spec

import netspec
from netspec import checkpoint
from netspec.plan.options import resolve_workers
from netspec.train.trainer import Trainer, confusion_matrix

# A small LeNet-like net with dropout, so resume also has to draw the same dropout masks again.
SPEC = tiny_conv_spec("tiny", 3, dropout=0.25, epochs=3,
                      optimizer="{type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}",
                      schedule="{type: step, step_size: 2, gamma: 0.5}")


def spec(**overrides):
    return netspec.loads(SPEC, "tiny.yaml", [f"{k}={v}" for k, v in overrides.items()])


def write_spec(tmp_path, text=SPEC):
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def one_epoch_run(spec_path, run_dir):
    """Train the spec for one epoch into run_dir through the CLI."""
    result = cli("train", spec_path, "--set", "train.epochs=1", "--out", run_dir)
    assert result.exit_code == 0, result.output


def params_of(path):
    ckpt = checkpoint.load(path)
    return {k: v for k, v in ckpt.state.items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs"


# ------------------------------------------------------------------ library


def test_training_reduces_loss_and_beats_chance(tiny_splits):
    trainer = Trainer(spec(), tiny_splits)
    before = trainer.evaluate(*tiny_splits["test"])
    for _ in range(3):
        trainer.train_epoch()
    after = trainer.evaluate(*tiny_splits["test"])
    assert after.loss < 0.7 * before.loss
    assert after.accuracy > 0.3  # 10 classes: chance is 0.1


def test_same_seed_same_parameters_different_seed_different(tiny_splits):
    runs = []
    for seed in (3, 3, 4):
        trainer = Trainer(spec(seed=seed), tiny_splits)
        trainer.train_epoch()
        runs.append(trainer.plan.state_dict())
    assert_same_params(runs[0], runs[1])
    assert not np.array_equal(runs[0]["fc1.weight"], runs[2]["fc1.weight"])


def test_resume_mid_epoch_is_bit_identical(tmp_path, tiny_splits):
    reference = finished_run(spec(), tiny_splits, tmp_path / "a")

    interrupted = stopped_run(spec(), tiny_splits, tmp_path / "b", 21)  # mid epoch 2
    saved = checkpoint.load(interrupted.last_path).meta["progress"]
    assert (saved["epoch"], saved["step"]) == (1, 5)  # 16 steps per epoch

    resumed = resumed_run(spec(), tiny_splits, tmp_path / "b")
    assert_same_params(params_of(reference.last_path), params_of(resumed.last_path))
    ref_lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    new_lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    drop = ("train_seconds", "images_per_second", "eval_seconds")
    for x, y in zip(ref_lines, new_lines, strict=True):
        x, y = json.loads(x), json.loads(y)
        assert {k: v for k, v in x.items() if k not in drop} == {
            k: v for k, v in y.items() if k not in drop}


def test_confusion_matrix_counts():
    m = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


# ------------------------------------------------------------------ CLI and run directory


def test_train_writes_a_complete_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", write_spec(tmp_path), "--out", run_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    resolved = netspec.load(run_dir / "spec.yaml")
    assert resolved.digest() == spec().digest()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                "train_seconds", "eval_seconds", "workers"):
        assert all(key in r for r in records), key
    expected_workers = resolve_workers("auto", spec().infos)[0]  # the CLI's default
    assert [r["workers"] for r in records] == [expected_workers] * 3
    assert f"plan: {resolve_workers('auto', spec().infos)[1]}" in result.output
    assert [r["lr"] for r in records] == pytest.approx([0.05, 0.05, 0.025])
    last = checkpoint.load(run_dir / "checkpoints" / "last.npz")
    assert {"conv1.weight", "conv1.bias", "fc1.weight", "fc2.bias"} <= last.state.keys()
    assert last.state["conv1.weight"].shape == (4, 1, 5, 5)  # PyTorch layout
    assert any(k.startswith("momentum.") for k in last.optimizer)
    assert last.meta["spec_sha256"] and last.meta["progress"]["epoch"] == 3
    best = checkpoint.load(run_dir / "checkpoints" / "best.npz")
    best_epoch = max(records, key=lambda r: r["test_acc"])["epoch"]
    assert best.meta["progress"]["epoch"] == best_epoch
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # atomic writes leave nothing


def test_set_overrides_are_validated_like_the_file(tmp_path):
    result = cli("train", write_spec(tmp_path), "--set", "train.epochs=0", "--out",
                 tmp_path / "r")
    assert result.exit_code == 1
    assert "train.epochs" in result.output


def test_refuses_to_overwrite_a_run(tmp_path):
    path = write_spec(tmp_path)
    one_epoch_run(path, tmp_path / "r")
    result = cli("train", path, "--set", "train.epochs=1", "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "--resume" in result.output


def test_resume_with_changed_spec_names_the_change(tmp_path):
    path = write_spec(tmp_path)
    one_epoch_run(path, tmp_path / "r")
    ok = cli("train", path, "--set", "train.epochs=2", "--resume", tmp_path / "r")
    assert ok.exit_code == 0, ok.output  # epochs may change
    result = cli("train", path, "--set", "train.epochs=3", "--set", "train.optimizer.lr=0.1",
                 "--resume", tmp_path / "r")
    assert result.exit_code == 1
    assert "train.optimizer.lr: 0.05 -> 0.1" in result.output


def as_format_1(last) -> None:
    """Rewrite a checkpoint as format 1 wrote it: no "format" key in its meta."""
    old = checkpoint.load(last)
    meta = {k: v for k, v in old.meta.items() if k != "format"}
    np.savez(last, **old.state, **{checkpoint.OPTIM + k: v for k, v in old.optimizer.items()},
             **{checkpoint.META: np.array(json.dumps(meta))})


def test_a_checkpoint_of_format_1_with_dropout_is_not_resumed_with_another_meaning(tmp_path):
    # Format 1 drew dropout masks from the run's generator; format 2 keys them by the step.
    path = write_spec(tmp_path)  # SPEC has a dropout layer
    one_epoch_run(path, tmp_path / "r")
    last = tmp_path / "r" / "checkpoints" / "last.npz"
    as_format_1(last)
    result = cli("train", path, "--set", "train.epochs=2", "--resume", tmp_path / "r")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "checkpoint format 1" in text and "(seed, step, position" in text
    assert "new run" in text
    assert cli("eval", "-c", last).exit_code == 0  # its weights still evaluate


def test_a_checkpoint_of_format_1_without_dropout_resumes(tmp_path):
    path = write_spec(tmp_path, SPEC.replace("  - {type: dropout, p: 0.25}\n", ""))
    one_epoch_run(path, tmp_path / "r")
    as_format_1(tmp_path / "r" / "checkpoints" / "last.npz")
    result = cli("train", path, "--set", "train.epochs=2", "--resume", tmp_path / "r")
    assert result.exit_code == 0, result.output


def test_resume_refuses_new_epochs_when_the_schedule_depends_on_them(tmp_path):
    cosine = SPEC.replace("{type: step, step_size: 2, gamma: 0.5}", "{type: cosine}")
    path = write_spec(tmp_path, cosine)
    one_epoch_run(path, tmp_path / "r")
    result = cli("train", path, "--set", "train.epochs=3", "--resume", tmp_path / "r")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "cosine schedule" in text and "the run started with 1" in text
    assert "--set train.epochs=1" in text
    assert checkpoint.load(tmp_path / "r" / "checkpoints" / "last.npz").meta["progress"][
        "epoch"] == 1  # nothing trained


def test_schedules_say_whether_they_depend_on_the_run_length():
    from netspec.nn.schedules import Constant, Cosine, Exponential, MultiStep, Step

    assert Cosine().depends_on_length() and Cosine(warmup_epochs=20).depends_on_length()
    for fixed in (Constant(), Step(step_size=2), MultiStep(milestones=[3, 5]),
                  Exponential(gamma=0.9)):
        assert not fixed.depends_on_length(), fixed


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = write_spec(tmp_path)
    one_epoch_run(path, tmp_path / "r")
    last = tmp_path / "r" / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:1000])
    result = cli("train", path, "--resume", tmp_path / "r")
    assert result.exit_code == 1
    assert "corrupt" in result.output and "last.npz" in result.output


def test_checkpoint_of_another_network_is_rejected(tmp_path, tiny_splits):
    path = write_spec(tmp_path)
    one_epoch_run(path, tmp_path / "r")
    other = write_spec(tmp_path, SPEC.replace("out_features: 32", "out_features: 16"))
    result = cli("eval", other, "-c", tmp_path / "r" / "checkpoints" / "last.npz", "--force")
    assert result.exit_code == 1
    assert "fc1.weight: (32, 144) there, (16, 144) here" in result.output  # 4 x 6 x 6 inputs


@pytest.mark.parametrize("how", ["spec", "set"])
def test_eval_refuses_a_spec_that_evaluates_differently_from_the_checkpoints(tmp_path, how):
    path = write_spec(tmp_path)
    one_epoch_run(path, tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoints" / "last.npz"
    if how == "spec":
        (tmp_path / "other").mkdir()
        args = [write_spec(tmp_path / "other", SPEC.replace(
            f"data: {{dataset: {TINY}}}", f"data: {{dataset: {TINY}, normalize: scale}}"))]
    else:
        args = ["--set", "data.normalize=scale"]
    result = cli("eval", *args, "-c", ckpt, "--workers", "1")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert 'data.normalize: "standardize" -> "scale"' in text
    assert "--force" in text and "spec stored in" in text
    forced = cli("eval", *args, "-c", ckpt, "--workers", "1", "--force")
    assert forced.exit_code == 0, forced.output
    # changes that do not affect evaluation are fine: training settings, the seed, the name
    same = cli("eval", path, "-c", ckpt, "--workers", "1", "--set", "train.optimizer.lr=0.5",
               "--set", "seed=9", "--set", "name=renamed")
    assert same.exit_code == 0, same.output


def test_eval_prints_accuracy_and_confusion_matrix(tmp_path):
    path = write_spec(tmp_path)
    assert cli("train", path, "--out", tmp_path / "r").exit_code == 0
    ckpt = tmp_path / "r" / "checkpoints" / "best.npz"
    result = cli("eval", "-c", ckpt)  # the spec stored in the checkpoint is used
    assert result.exit_code == 0, result.output
    best = max((json.loads(line) for line in
                (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()),
               key=lambda r: r["test_acc"])
    assert f"accuracy {100 * best['test_acc']:.2f}%" in result.output
    assert "rows are true" in result.output
    train_split = cli("eval", path, "-c", ckpt, "--split", "train")
    assert train_split.exit_code == 0 and "on train (512 images)" in train_split.output
    one = cli("eval", path, "-c", ckpt, "--split", "train", "--workers", "1")
    assert one.exit_code == 0
    assert _accuracy_lines(one.output) == _accuracy_lines(train_split.output)
    assert cli("eval", path, "-c", ckpt, "--workers", "0").exit_code == 2


def _accuracy_lines(output: str) -> list[str]:
    """The confusion matrix and accuracy lines of `netspec eval`, timings cut out."""
    lines = [re.sub(r"\([^()]*img/s\)", "", line) for line in output.splitlines()]
    assert any("accuracy" in line for line in lines)
    return lines


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    exploding = SPEC.replace("{type: step, step_size: 2, gamma: 0.5}",
                             "{type: exponential, gamma: 1.0e+8}")
    result = cli("train", write_spec(tmp_path, exploding), "--out", tmp_path / "r",
                 "--no-progress")
    assert result.exit_code == 1
    assert "loss became" in result.output and "epoch 2, step" in result.output
    assert "lower learning rate" in result.output
    kept = checkpoint.load(tmp_path / "r" / "checkpoints" / "last.npz")
    assert kept.meta["progress"]["epoch"] == 1
    assert all(np.isfinite(v).all() for v in kept.state.values())


# ------------------------------------------------------------------ signals (real processes)


def _start(args, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "netspec", *map(str, args)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own process group


def _wait_for_epochs(run_dir, proc, count, timeout=60):
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.stdout.read()}")
        time.sleep(0.005)
    pytest.fail("training did not reach the first epoch in time")


SIGNAL_EPOCHS = ["--set", "train.epochs=12", "--set", "train.batch_size=16", "--no-progress"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    path = write_spec(tmp)
    result = cli("train", path, *SIGNAL_EPOCHS, "--out", tmp / "run")
    assert result.exit_code == 0, result.output
    return path, params_of(tmp / "run" / "checkpoints" / "last.npz")


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130),
                                       (signal.SIGTERM, 143)],
                         ids=["SIGKILL", "SIGINT", "SIGTERM"])
def test_killed_or_interrupted_run_resumes_bit_identically(tmp_path, reference_run, sig, code):
    spec_path, expected = reference_run
    run_dir = tmp_path / "run"
    proc = _start(["train", spec_path, *SIGNAL_EPOCHS, "--out", run_dir], tmp_path)
    _wait_for_epochs(run_dir, proc, 1)
    # To the whole process group, worker processes included, as a terminal's Ctrl-C or
    # Slurm's scancel do (Kubernetes signals the main process only: the same for netspec).
    os.killpg(proc.pid, sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, output
    assert "Traceback" not in output
    if sig != signal.SIGKILL:
        assert "checkpoint saved" in output and "--resume" in output
        assert f"({sig.name})" in output
    progress = checkpoint.load(run_dir / "checkpoints" / "last.npz").meta["progress"]
    assert progress["epoch"] < 12  # really stopped before the end
    result = cli("train", "--resume", run_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    assert_same_params(expected, params_of(run_dir / "checkpoints" / "last.npz"))


def test_batchnorm_with_a_final_batch_of_one_fails_before_training(tiny_splits):
    bn = SPEC.replace("  - {type: dropout, p: 0.25}\n", "  - {type: batchnorm}\n")
    spec = netspec.loads(bn, "bn.yaml", ["train.batch_size=511"])  # 512 = 511 + 1
    with pytest.raises(netspec.DataError, match="batch_size"):
        Trainer(spec, tiny_splits)


# ------------------------------------------------------------------ labels


def test_labels_beyond_the_networks_classes_fail_before_training(tmp_path):
    five = SPEC.replace(f"data: {{dataset: {TINY}}}", f"data: {{dataset: {TINY}, num_classes: 5}}")
    five = five.replace("name: fc2, out_features: 10", "name: fc2, out_features: 5")
    result = cli("train", write_spec(tmp_path, five), "--out", tmp_path / "r", "--no-progress")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"{TINY}: the train split has labels 5, 6, 7, 8, 9" in text
    assert "data.num_classes is 5" in text and "its last layer, linear 'fc2'" in text
    assert "set data.num_classes and the last layer's width to 10" in text
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_a_custom_dataset_label_out_of_range_is_named(tiny_splits):
    x, y = tiny_splits["test"]
    y = y.copy()
    y[[3, 40]] = 200
    with pytest.raises(netspec.DataError, match=r"the test split has labels 200 \(2 samples\).*"
                                                r"width to 201"):
        Trainer(spec(), {**tiny_splits, "test": (x, y)})
    y[3] = -1
    with pytest.raises(netspec.DataError, match=r"labels -1, 200 .*negative labels"):
        Trainer(spec(), {**tiny_splits, "test": (x, y)})


def test_evaluation_changes_ignore_what_evaluation_does_not_compute():
    stored = spec().model_dump(mode="json")
    changed = spec(**{"data.validation": 100, "data.dataset": "mnist", "seed": 1,
                      "train.epochs": 9}).model_dump(mode="json")
    assert checkpoint.evaluation_changes(stored, changed) == []
    changed = spec(**{"data.normalize": "none", "layers[4].out_features": 16,
                      "seed": 1}).model_dump(mode="json")
    assert checkpoint.evaluation_changes(stored, changed) == [
        "layers[4].out_features: 32 -> 16", 'data.normalize: "standardize" -> "none"']
    assert stored["data"]["dataset"] == str(TINY)  # the copies did not cut the originals
    assert checkpoint.evaluation_changes({}, changed) == []  # no stored spec: nothing to check


def test_spec_changes_of_a_different_network_stay_short():
    # a graph spec vs an MLP printed both whole layer lists (thousands of characters)
    old = netspec.load(ROOT / "specs" / "resnet-mini.yaml").model_dump(mode="json")
    new = netspec.load(ROOT / "specs" / "mlp.yaml").model_dump(mode="json")
    changes = checkpoint.evaluation_changes(old, new)
    assert len(changes) == checkpoint.MAX_CHANGES + 1 and changes[-1].endswith("more changes")
    assert "layers: 28 items -> 5 items" in changes
    assert all(len(c) < 160 for c in changes), changes
    assert "input.shape: [1, 28, 28] -> [784]" in changes  # short lists stay whole
