"""scripts/label.py under `accelerate launch` with two CPU processes: each writes its shard, `--merge` joins them, and
the union equals what one process writes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from helpers import assert_same_records, make_archive, run_script, save_tiny_checkpoint

from layoutlm_roialign.labelling import read_complete

pytest.importorskip("accelerate", reason="several processes need accelerate (the `train` extra)")
pytest.importorskip("pypdfium2", reason="the labeller's PDF inputs need pypdfium2 (the `pdf` extra)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "final")


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_write_shards_whose_union_is_the_one_process_output(
    checkpoint, tmp_path
):
    make_archive(tmp_path / "in")
    common = ["--model", checkpoint, "--inputs", str(tmp_path / "in"), "--words_from", "text", "--quiet",
              "--max_length", "16", "--stride", "4", "--num_workers", "1"]  # fmt: skip
    run_script(*common, "--output", str(tmp_path / "one.jsonl"), check_exit=1)

    # accelerate 1.x's `--cpu --num_processes 2` starts one process; `--multi_gpu` without GPUs starts two (gloo).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts" / "label.py"), *common, "--output", str(tmp_path / "two.jsonl")]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0, result.stderr[-4000:]  # the two unreadable files fail: the launch says so
    shards = sorted(p.name for p in tmp_path.glob("two.shard-*-of-00002.jsonl"))
    assert shards == ["two.shard-00000-of-00002.jsonl", "two.shard-00001-of-00002.jsonl"], result.stderr[-4000:]
    written = [read_complete(tmp_path / name) + read_complete(tmp_path / name.replace(".jsonl", ".failures.jsonl"))
               for name in shards]  # fmt: skip
    keys = [(r["source"], r["page"]) for part in written for r in part]
    assert all(written) and len(keys) == len(set(keys)) == 10  # documents split between the processes, none twice

    status, log = run_script("--merge", "--output", str(tmp_path / "two.jsonl"))
    assert "merged 2 shards: 2 pages, 8 failures" in log
    assert_same_records(read_complete(tmp_path / "one.jsonl"), read_complete(tmp_path / "two.jsonl"))
    failures = {(r["source"], r["page"]) for r in read_complete(tmp_path / "two.failures.jsonl")}
    assert failures == {(r["source"], r["page"]) for r in read_complete(tmp_path / "one.failures.jsonl")}
