#!/usr/bin/env python
"""The pre-training measurement on one GPU machine, from the folder `lab/experiments/pretraining_bundle.py` packs.

MVLM pre-training of MiniLM-L6-H384 (text and layout) on three corpora - `debian` (Debian PDF pages), `funsd` (the
119 FUNSD training pages, labels dropped) and `both` - then, from MiniLM as it ships (`none`) and from each result,
the FUNSD fine-tunes every issue-10 row uses (119 / 30 split seed 0, lr 5e-5, 6 epochs, batch 4, 10 % warm-up):
token labelling text only, token labelling with the ImageNet MobileNetV2 visual branch, and the linking model text
only; seeds 0, 1, 2. The runs go many at a time on the one GPU (`--parallel`); the fine-tunes of a corpus start as
its pre-training ends. Whatever finished by `--deadline` seconds is summarized:

    python lab/experiments/pretraining_gpu_runs.py --bundle .devcarry --runs /tmp/runs --steps 1500 --batch 32
    python lab/experiments/summarize_pretraining_runs.py /tmp/runs --output lab/experiments/results_funsd_pretraining_gpu
"""

import argparse
import concurrent.futures as futures
import lzma
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from pretraining_bundle import own_folder  # lab/experiments/pretraining_bundle.py

REPO = Path(__file__).resolve().parents[2]
CORPORA = ("debian", "funsd", "both")
SEEDS = (0, 1, 2)


def restore(bundle: Path, work: Path) -> dict:
    """Float32 MiniLM and MobileNetV2, the FUNSD folder and the three page datasets under `work`."""
    import datasets
    import torch
    from safetensors.torch import load, save_file

    minilm = work / "minilm"
    minilm.mkdir(parents=True, exist_ok=True)
    for file in (bundle / "minilm").iterdir():
        if file.suffix != ".xz":
            (minilm / file.name).write_bytes(file.read_bytes())
    with lzma.open(bundle / "minilm" / "model.fp16.safetensors.xz") as f:
        save_file({k: v.float() for k, v in load(f.read()).items()}, str(minilm / "model.safetensors"))
    weights = torch.load(bundle / "mobilenet_v2.pt", map_location="cpu")
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, work / "mobilenet_v2.pt")
    with tarfile.open(bundle / "funsd.tar") as tar:
        tar.extractall(work, filter="data")
    with tarfile.open(work / "annotations.tar.xz") as tar:
        tar.extractall(work, filter="data")
    with tarfile.open(bundle / "pages.tar.xz") as tar:
        tar.extractall(work, filter="data")
    pages = {name: str(work / f"pages_{name}") for name in ("funsd", "debian")}
    both = datasets.concatenate_datasets(
        [datasets.load_from_disk(pages["funsd"]), datasets.load_from_disk(pages["debian"])]
    )
    both.save_to_disk(str(work / "pages_both"))
    pages["both"] = str(work / "pages_both")
    return {"minilm": str(minilm), "mobilenet": str(work / "mobilenet_v2.pt"), "funsd": str(work / "training_data"),
            "pages": pages}  # fmt: skip


def launch(args: list[str], log: Path, deadline: float) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            return process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            out.write("\nkilled at the deadline\n")
            return -9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--work", default="/tmp/pretraining-work")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--learning_rate", default="1e-4")
    parser.add_argument("--parallel", type=int, default=12)
    parser.add_argument("--deadline", type=float, default=480, help="Seconds from the start; later runs are killed.")
    parser.add_argument("--epochs", default="6")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kinds", default="text,mobilenet,link")
    parser.add_argument("--finetune_args", default="", help="Extra train.py flags (smoke tests: --max_steps 2).")
    args = parser.parse_args()
    start = time.time()
    deadline = start + args.deadline
    runs, work = own_folder(Path(args.runs), "--runs"), own_folder(Path(args.work), "--work")
    parts = restore(Path(args.bundle), work)
    print(f"restored in {time.time() - start:.0f} s", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    kinds = args.kinds.split(",")

    def pretrain(corpus: str) -> int:
        every = max(1, args.steps // 5)
        code = launch(["scripts/pretrain.py", "--dataset", parts["pages"][corpus], "--words_column", "words",
                       "--boxes_column", "bboxes", "--words_from", "text", "--text_model", parts["minilm"],
                       "--text_only", "true", "--learning_rate", args.learning_rate, "--max_steps", str(args.steps),
                       "--per_device_train_batch_size", str(args.batch), "--per_device_eval_batch_size", "64",
                       "--eval_steps", str(every), "--save_steps", str(args.steps), "--logging_steps", "50",
                       "--validation_windows", "128", "--num_workers", "2", "--cache_dir", str(work / "cache"),
                       "--seed", "0", "--disable_tqdm", "true", "--output_dir", str(runs / f"mvlm-{corpus}")],
                      runs / f"mvlm-{corpus}.log", deadline)  # fmt: skip
        print(f"pretrain {corpus}: exit {code} at {time.time() - start:.0f} s", flush=True)
        return code

    def finetune(start_from: str, kind: str, seed: int) -> int:
        text = parts["minilm"] if start_from == "none" else str(runs / f"mvlm-{start_from}" / "final")
        name = {"text": "funsd-ft", "mobilenet": "funsd-ftmob", "link": "funsd-ftlink"}[kind]
        extra = {
            "text": ["--use_visual_features", "false"],
            "mobilenet": ["--backbone", "mobilenet_v2", "--backbone_weights", parts["mobilenet"]],
            "link": ["--task", "linking", "--use_visual_features", "false", "--metric_for_best_model", "link_f1"],
        }[kind]
        out = runs / f"{name}-{start_from}-s{seed}"
        code = launch(["scripts/train.py", "--dataset", parts["funsd"], "--validation_size", "30", "--split_seed", "0",
                       "--text_model", text, "--learning_rate", "5e-5", "--num_train_epochs", args.epochs,
                       "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
                       "--warmup_steps", "0.1", "--weight_decay", "0.01", "--seed", str(seed), "--disable_tqdm", "true",
                       "--save_total_limit", "1", *extra, *args.finetune_args.split(), "--output_dir", str(out)],
                      runs / f"{out.name}.log", deadline)  # fmt: skip
        print(f"finetune {out.name}: exit {code} at {time.time() - start:.0f} s", flush=True)
        return code

    with futures.ThreadPoolExecutor(args.parallel) as pool:
        jobs = []
        corpora = [c for c in args.corpora.split(",") if c]
        pre = {pool.submit(pretrain, corpus): corpus for corpus in corpora}
        for kind in kinds:
            jobs += [pool.submit(finetune, "none", kind, seed) for seed in seeds]
        for done in futures.as_completed(pre):
            if done.result() == 0:
                jobs += [pool.submit(finetune, pre[done], kind, seed) for kind in kinds for seed in seeds]
        futures.wait(jobs)
    print(f"all done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
