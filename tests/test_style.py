"""The code follows PEP 8 and ruff's default rules (ruff is pinned in the test extra)."""

import subprocess
import sys

import pytest
from conftest import ROOT


def test_ruff_finds_nothing():
    ruff = [sys.executable, "-m", "ruff"]
    if subprocess.run([*ruff, "--version"], capture_output=True, check=False).returncode:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    result = subprocess.run([*ruff, "check", "--no-cache", "netspec", "tests", "benchmarks",
                             "examples"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
