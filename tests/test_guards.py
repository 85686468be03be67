"""Guards against inputs that used to hang, crawl or run silently wrong."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, cli

import netspec
from netspec.train.trainer import Trainer

NET = f"""
name: g
input: {{shape: [1, 28, 28]}}
layers:
  - {{type: conv2d, name: conv1, out_channels: 2, kernel_size: 5, stride: 3}}
  - {{type: batchnorm, name: bn1}}
  - {{type: flatten}}
  - {{type: linear, name: fc1, out_features: 10}}
data: {{dataset: {TINY}}}
train: {{epochs: 1, batch_size: 64}}
"""
FLAT_BN = NET.replace("  - {type: batchnorm, name: bn1}\n  - {type: flatten}\n",
                      "  - {type: flatten}\n  - {type: batchnorm, name: bn1}\n")


def test_validate_dev_zero_stops_at_the_size_cap():
    proc = subprocess.run([sys.executable, "-m", "netspec", "validate", "/dev/zero"], cwd=ROOT,
                          check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "/dev/zero is larger than 1 MiB" in proc.stderr + proc.stdout


def test_a_spec_over_the_cap_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(netspec.SpecError, match="larger than 1 MiB"):
        netspec.load(big)


def test_more_workers_than_cores_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr("netspec.plan.options.available_cores", lambda: 2)
    spec = tmp_path / "g.yaml"
    spec.write_text(NET.replace("  - {type: batchnorm, name: bn1}\n", ""))
    result = cli("train", spec, "--workers", "3", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "3 workers but netspec may use 2 cores" in result.output
    assert not (tmp_path / "r").exists()


def test_a_batch_larger_than_the_training_set_is_refused(tiny_splits):
    spec = netspec.loads(NET, "g.yaml", ["train.batch_size=600"])  # tiny has 512
    with pytest.raises(netspec.DataError, match="larger than the training set.*at most 512"):
        Trainer(spec, tiny_splits)


def test_flat_batchnorm_with_batch_one_is_refused(tiny_splits):
    spec = netspec.loads(FLAT_BN, "g.yaml", ["train.batch_size=1"])
    with pytest.raises(netspec.DataError, match="single value per channel.*bn1"):
        Trainer(spec, tiny_splits)


def test_spatial_batchnorm_sees_many_values_per_channel_even_in_a_batch_of_one(tiny_splits):
    # (2, 8, 8) input: 64 values per channel per sample, so batches of 1 are well defined,
    # as in PyTorch, and so is a last batch of 1 (512 = 511 + 1)
    one = tiny_splits["train"][0][:1]
    for batch in ("1", "511"):
        spec = netspec.loads(NET, "g.yaml", [f"train.batch_size={batch}"])
        trainer = Trainer(spec, tiny_splits)
        try:
            start = {k: p.copy() for k, p in trainer.plan.params.items()}
            # one sample: each channel is normalised over its 8x8 positions
            trainer.plan.forward(one, train=True)
            bn = trainer.plan.outputs[[s.name for s in trainer.plan.steps].index("bn1")]
            assert bn.shape == (2, 8, 8, 1)
            np.testing.assert_allclose(bn.mean(axis=(1, 2, 3)), 0, atol=1e-5)
            np.testing.assert_allclose(bn.var(axis=(1, 2, 3)), 1, rtol=1e-3)
            stats = trainer.train_epoch()  # every batch, the last one of 511 and 1 included
        finally:
            trainer.close()
        assert stats.images == 512 and not stats.stopped
        assert np.isfinite(stats.loss)
        assert all(np.isfinite(p).all() for p in trainer.plan.params.values())
        assert not np.array_equal(trainer.plan.params["bn1.weight"], start["bn1.weight"])


def test_flat_batchnorm_with_a_last_batch_of_one_is_refused(tiny_splits):
    spec = netspec.loads(FLAT_BN, "g.yaml", ["train.batch_size=511"])
    with pytest.raises(netspec.DataError, match="last training batch would hold 1 of 512"):
        Trainer(spec, tiny_splits)


def test_a_named_pipe_as_spec_does_not_wait_for_a_writer(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "netspec", "validate", str(fifo)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "the file is empty" in proc.stderr


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_a_pipe_with_a_writer_is_read_like_a_file():
    """`netspec validate <(make-spec)`: the shell passes /dev/fd/N, a pipe whose writer is
    still producing the text."""
    import threading
    import time

    read_end, write_end = os.pipe()

    def write():
        time.sleep(0.2)  # the reader must wait for the data, not take the pipe as empty
        os.write(write_end, NET.encode())
        os.close(write_end)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        spec = netspec.load(f"/dev/fd/{read_end}")
    finally:
        writer.join(10)
        os.close(read_end)
    assert spec.name == "g"
