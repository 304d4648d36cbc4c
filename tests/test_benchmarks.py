"""The prepared GPU check still runs (here as its CPU dry run), so a session lent a GPU can use it at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_on_the_cpu_writes_its_report(tmp_path):
    out = tmp_path / "gpu_check.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                             "--samples", "32", "--budget", "0.01", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    assert "all checks passed" in text
    for section in ("Perturbations at 32x32", "Perturbations at 224x224", "Sweep", "Throughput at 224x224"):
        assert section in text
    assert text.count("| frost |") == 4 and text.count("| gaussian_noise |") == 4   # every table lists them
