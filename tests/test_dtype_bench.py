"""lab/benchmarks/dtype_bench.py --quick runs every variant against float32 in one run, with oneDNN capped at AVX2
in a second process, where `dtype="auto"` must pick float32 (slow: two processes, three variants each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from layoutlm_roialign.compute_layoutlm_roialign import CPU_BF16_ENV


@pytest.mark.slow
def test_the_quick_dtype_benchmark_measures_every_variant_against_float32(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(CPU_BF16_ENV, None)  # `auto` as on a user's machine
    out = tmp_path / "dtype.md"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "lab" / "benchmarks" / "dtype_bench.py"), "--quick", "--onednn_isa", "AVX2",
         "--output", str(out)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    uncapped, avx2 = report["runs"]
    assert avx2["isa"] == "AVX2" and avx2["auto"] == "float32"  # oneDNN without bf16: never emulated bf16
    assert uncapped["auto"] in ("float32", "bfloat16")
    for run in report["runs"]:
        assert {"float32", "bfloat16", "int8"} <= set(run["variants"])
        for row in run["variants"].values():
            assert row["pdfs pages/s"] > 0 and row["pipeline s/page"] > 0
        assert run["train_step_s"]["float32"] > 0 and run["train_step_s"]["bfloat16"] > 0
    table = out.read_text()
    assert "| float32 | " in table and "| 1.00 |" in table and "`auto` picks float32" in table
    assert report["onnx_skipped"] or "onnx int8" in uncapped["variants"]
