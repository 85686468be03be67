"""The API example in examples/ keeps working (run on the small fixture)."""

import subprocess
import sys

from conftest import ROOT, TINY


def test_train_api_example_runs_and_loss_falls(tmp_path):
    spec = (ROOT / "specs" / "lenet.yaml").read_text().replace("dataset: mnist",
                                                                f"dataset: {TINY}")
    (tmp_path / "lenet.yaml").write_text(spec)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_api.py"), "--spec",
         str(tmp_path / "lenet.yaml"), "--steps", "50"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    losses = [float(line.split()[3]) for line in result.stdout.splitlines()
              if line.startswith("step")]
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0]
