"""What the image branch costs: text-only LayoutLM vs the FUNSD tutorial's design vs this package.

Measured in one process, interleaved round by round (the order rotates each round), with the same shapes and the
same weights, for each batch shape:

- `text`: `transformers.LayoutLMForTokenClassification` (the floor);
- `tutorial`: the FUNSD image-embedding tutorial's design as written (`TutorialLayoutLMWithImage` below): every
  token, padding included, pooled from a per-document list of boxes, `aligned=False`, raw projection added;
- `ours`: `LayoutLMRoIAlignForTokenClassification` with its default fast path;
- `layoutlmv3`: what a user would pick instead of this package for text + layout + pixels,
  `transformers.LayoutLMv3ForTokenClassification` at base size (`LayoutLMv3Config()`'s defaults, with the base
  checkpoint's 514 positions; random weights), the same batch with its page at 224 px: its 196 image patches (+1)
  join every sequence, so the encoder attends over 709 tokens where the others attend over 512.

Reported: inference time (forward under `torch.inference_mode`), training step time (forward + backward + AdamW)
and peak memory, as medians over the repeats and as ratios to `text`. Peak memory is measured in a fresh
subprocess per (variant, mode): on CPU the process's peak resident set size (Linux `VmHWM`) minus its resident size
before the model is built, i.e. weights + gradients + optimizer state + activations; on CUDA
`torch.cuda.max_memory_allocated()`. Nothing here needs a GPU; `--device cuda` adds absolute GPU numbers.

    python lab/benchmarks/bench.py                      # full run, ~8 min on 2 idle CPU cores
    python lab/benchmarks/bench.py --quick              # tiny models, < 1 min smoke run
    python lab/benchmarks/bench.py --output lab/benchmarks/results.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchvision.ops import RoIAlign  # noqa: E402
from transformers import (  # noqa: E402
    LayoutLMConfig,
    LayoutLMForTokenClassification,
    LayoutLMModel,
    LayoutLMv3Config,
    LayoutLMv3ForTokenClassification,
)

from layoutlm_roialign import LayoutLMRoIAlignConfig, LayoutLMRoIAlignForTokenClassification  # noqa: E402
from layoutlm_roialign.checks_layoutlm_roialign import check_inputs as _check_inputs  # noqa: E402

VARIANTS = ("text", "tutorial", "ours", "layoutlmv3")
# Training only: `ours` with its backbone frozen (`--backbone_learning_rate 0`, the cheap option for small data), so
# backward stops at the RoI features instead of running through the backbone.
FROZEN = "ours, backbone frozen"
NUM_LABELS = 7
BASE_TEXT = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
)
TINY_TEXT = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
LAYOUTLMV3_IMAGE_SIZE = 224  # LayoutLMv3's input_size: 14 x 14 patches of 16 px
# LayoutLMv3's 2-D position embeddings are concatenated: 4 * coordinate_size + 2 * shape_size == hidden_size.
TINY_V3_SPATIAL = dict(coordinate_size=10, shape_size=12)


@dataclass
class Shape:
    name: str
    batch_size: int
    seq_len: int
    lengths: tuple[int, ...]  # real tokens per sequence ([CLS] ... [SEP]), the rest is padding
    image_size: int
    train: bool  # also time training steps
    dtype: str = "fp32"  # "fp32" or "bf16-autocast"


FULL_SHAPES = [
    Shape("funsd-4x512", 4, 512, (470, 330, 210, 150), 224, train=True),
    Shape("funsd-4x512", 4, 512, (470, 330, 210, 150), 224, train=False, dtype="bf16-autocast"),
    Shape("full-8x512", 8, 512, (512,) * 8, 224, train=False),
    Shape("funsd-4x512", 4, 512, (470, 330, 210, 150), 448, train=False),
]
QUICK_SHAPES = [
    Shape("funsd-4x64", 4, 64, (60, 42, 27, 19), 64, train=True),
    Shape("funsd-4x64", 4, 64, (60, 42, 27, 19), 64, train=False, dtype="bf16-autocast"),
]


class TutorialLayoutLMWithImage(nn.Module):
    """The FUNSD image-embedding tutorial's model, as written (the baseline; not part of the package).

    LayoutLM, then ResNet-101 up to `layer3` (`list(resnet.children())[:-3]`, train-mode BatchNorm), `RoIAlign`
    (3x3, scale 1/16, sampling ratio 2, `aligned=False`) over a per-document list of every token's box (padding
    included), `Linear(1024 * 9, hidden)` added to the (dropped-out) sequence output, then the classifier.
    """

    def __init__(self, text_config: LayoutLMConfig, backbone: str = "resnet101"):
        super().__init__()
        self.layoutlm = LayoutLMModel(text_config)
        self.dropout = nn.Dropout(text_config.hidden_dropout_prob)
        self.classifier = nn.Linear(text_config.hidden_size, NUM_LABELS)
        resnet = getattr(torchvision.models, backbone)(weights=None)
        self.backbone = nn.Sequential(*list(resnet.children())[:-3])
        channels = resnet.layer3[-1].conv1.in_channels  # layer3's output channels: 1024 for ResNet-101
        self.pool = RoIAlign(output_size=(3, 3), spatial_scale=1 / 16, sampling_ratio=2, aligned=False)
        self.projection = nn.Linear(channels * 9, text_config.hidden_size)

    def forward(
        self, input_ids, bbox, attention_mask, resized_images, resized_and_aligned_bounding_boxes, labels=None
    ):
        outputs = self.layoutlm(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask)
        sequence_output = self.dropout(outputs.last_hidden_state)
        batch_size, seq_len = input_ids.shape
        feature_maps = self.backbone(resized_images)
        pooled = self.pool(feature_maps, resized_and_aligned_bounding_boxes)  # (B * L, C, 3, 3)
        sequence_output = sequence_output + self.projection(pooled.view(batch_size, seq_len, -1))
        logits = self.classifier(sequence_output)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, NUM_LABELS), labels.view(-1))
        return transformers.modeling_outputs.TokenClassifierOutput(loss=loss, logits=logits)


def tutorial_boxes(bbox: torch.Tensor, image_size: int) -> list[torch.Tensor]:
    """The tutorial's RoIs (built by its dataset): boxes scaled to the image, rounded, widened by 0.5 px."""
    boxes = (bbox.float() * image_size / 1000).round()
    boxes = boxes + torch.tensor([-0.5, -0.5, 0.5, 0.5])
    return list(boxes)  # one (L, 4) tensor per document


def make_batch(shape: Shape, vocab_size: int, seed: int = 0) -> dict:
    """A FUNSD-like batch: words of 1-2 sub-word tokens (1.5 on average) sharing the word's box, in reading order."""
    g = torch.Generator().manual_seed(seed)
    b, n = shape.batch_size, shape.seq_len
    input_ids = torch.zeros(b, n, dtype=torch.long)
    bbox = torch.zeros(b, n, 4, dtype=torch.long)
    attention_mask = torch.zeros(b, n, dtype=torch.long)
    labels = torch.full((b, n), -100, dtype=torch.long)
    for i, length in enumerate(shape.lengths):
        attention_mask[i, :length] = 1
        input_ids[i, :length] = torch.randint(5, vocab_size, (length,), generator=g)
        labels[i, :length] = torch.randint(0, NUM_LABELS, (length,), generator=g)
        j, x, y = 1, 20, 20
        while j < length - 1:
            width = int(torch.randint(20, 120, (1,), generator=g))
            if x + width > 980:
                x, y = 20, min(y + 25, 960)
            k = min(length - 1, j + int(torch.randint(1, 3, (1,), generator=g)))
            bbox[i, j:k] = torch.tensor([x, y, x + width, y + 18])
            x, j = x + width + 10, k
        bbox[i, length - 1] = 1000  # [SEP]
    pixel_values = torch.randn(b, 3, shape.image_size, shape.image_size, generator=g)
    v3_pixel_values = torch.randn(b, 3, LAYOUTLMV3_IMAGE_SIZE, LAYOUTLMV3_IMAGE_SIZE, generator=g)
    return dict(
        input_ids=input_ids,
        bbox=bbox,
        attention_mask=attention_mask,
        pixel_values=pixel_values,
        v3_pixel_values=v3_pixel_values,
        labels=labels,
    )


def variant_inputs(name: str, batch: dict, image_size: int, labels: bool) -> dict:
    inputs = {k: batch[k] for k in ("input_ids", "bbox", "attention_mask")}
    if name == "tutorial":
        inputs["resized_images"] = batch["pixel_values"]
        inputs["resized_and_aligned_bounding_boxes"] = tutorial_boxes(batch["bbox"], image_size)
    elif name == "ours":
        inputs["pixel_values"] = batch["pixel_values"]
    elif name == "layoutlmv3":
        inputs["pixel_values"] = batch["v3_pixel_values"]
    if labels:
        inputs["labels"] = batch["labels"]
    return inputs


def build_models(quick: bool, names=VARIANTS, seed: int = 0) -> dict[str, nn.Module]:
    """The variants named, sharing the text encoder, backbone, projection and classifier weights when built together.

    A variant built alone (the memory subprocesses) allocates nothing but itself.
    """
    text_kwargs = TINY_TEXT if quick else BASE_TEXT
    backbone = "resnet18" if quick else "resnet101"
    torch.manual_seed(seed)
    models = {}
    if "ours" in names:
        # A pretrained backbone gets frozen batch norm (`from_pretrained_parts(backbone_weights=...)`); say so here,
        # since the Hub and torchvision's weight downloads are out of reach.
        config = LayoutLMRoIAlignConfig(
            backbone=backbone, backbone_norm="frozen_batch_norm", num_labels=NUM_LABELS, **text_kwargs
        )
        models["ours"] = LayoutLMRoIAlignForTokenClassification(config)
        visual = models["ours"].layoutlm_roialign.visual_embeddings
        if visual.gate is not None:  # `visual_init="zero_gate"`: a trained gate is not 0
            nn.init.normal_(visual.gate, std=1.0)
        else:  # the default zero-initialized projection: a trained one is not 0
            nn.init.normal_(visual.projection.weight, std=0.02)
    if "text" in names:
        models["text"] = LayoutLMForTokenClassification(LayoutLMConfig(num_labels=NUM_LABELS, **text_kwargs))
    if "tutorial" in names:
        models["tutorial"] = TutorialLayoutLMWithImage(LayoutLMConfig(**text_kwargs), backbone)
    if "layoutlmv3" in names:
        v3_kwargs = {**TINY_TEXT, **TINY_V3_SPATIAL} if quick else {}  # full: LayoutLMv3Config()'s base sizes
        config = LayoutLMv3Config(num_labels=NUM_LABELS, max_position_embeddings=514, **v3_kwargs)
        models["layoutlmv3"] = LayoutLMv3ForTokenClassification(config)
    if "ours" in models:
        ours = models["ours"]
        visual = ours.layoutlm_roialign.visual_embeddings
        for name, model in models.items():
            if name in ("text", "tutorial"):
                model.layoutlm.load_state_dict(ours.layoutlm_roialign.layoutlm.state_dict())
                model.classifier.load_state_dict(ours.classifier.state_dict())
        if "tutorial" in models:
            load_tutorial_backbone(models["tutorial"].backbone, visual.backbone.state_dict())
            models["tutorial"].projection.load_state_dict(visual.projection.state_dict())
    return {name: models[name] for name in names}


def load_tutorial_backbone(sequential: nn.Module, state: dict) -> None:
    """Our backbone's weights (torchvision names: `conv1`, `bn1`, `layer1`...) into the tutorial's
    `nn.Sequential(*list(resnet.children())[:-3])`, whose children are numbered (`0` = conv1, ..., `6` = layer3)."""
    numbers = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}
    renamed = {numbers[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in state.items()}
    result = sequential.load_state_dict(renamed, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]  # frozen batch norm has none
    if missing or result.unexpected_keys:
        raise RuntimeError(f"tutorial backbone: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def attn_implementation(model: nn.Module) -> str:
    if hasattr(model, "layoutlmv3"):
        return model.layoutlmv3.config._attn_implementation
    inner = model.layoutlm_roialign.layoutlm if hasattr(model, "layoutlm_roialign") else model.layoutlm
    return inner.config._attn_implementation


def autocast(device: str, dtype: str):
    if dtype == "bf16-autocast":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(model: nn.Module, inputs: dict, mode: str, device: str, dtype: str):
    """A closure running one inference forward or one training step (forward + backward + AdamW)."""
    if mode == "infer":

        def step():
            model.eval()
            with torch.inference_mode(), autocast(device, dtype):
                model(**inputs)

        return step
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def step():
        model.train()
        with autocast(device, dtype):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def interleaved(steps: dict, warmup: int, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per step; every round runs each step once, the order rotating from round to round."""
    names = list(steps)
    times = {name: [] for name in names}
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = timed(steps[name], device)
            if r >= warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def to_device(inputs: dict, device: str) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else [t.to(device) for t in v]) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------------- memory


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(spec: dict) -> None:
    """Runs in a fresh process: build one variant, run `steps` steps, print its peak memory in MiB (JSON)."""
    torch.set_num_threads(spec["threads"])
    device, shape = spec["device"], Shape(**spec["shape"])
    rss_before = _rss_kib("VmRSS")
    variant = "ours" if spec["variant"] == FROZEN else spec["variant"]
    model = build_models(spec["quick"], names=(variant,))[variant].to(device)
    if spec["variant"] == FROZEN:
        model.layoutlm_roialign.visual_embeddings.backbone.requires_grad_(False)
    batch = make_batch(shape, (TINY_TEXT if spec["quick"] else BASE_TEXT)["vocab_size"])
    inputs = to_device(variant_inputs(variant, batch, shape.image_size, spec["mode"] == "train"), device)
    step = make_step(model, inputs, spec["mode"], device, shape.dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for _ in range(spec["steps"]):
            step()
        torch.cuda.synchronize()
        result = {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "method": "cuda max_memory_allocated"}
    else:
        try:  # reset the peak RSS (Linux >= 4.0) so that building the model does not count
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            method = "VmHWM - VmRSS before build"
        except OSError:
            method = "ru_maxrss - VmRSS before build"
        for _ in range(spec["steps"]):
            step()
        if method.startswith("VmHWM"):
            peak = _rss_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = {"peak_mib": (peak - rss_before) / 1024, "method": method}
    print("MEMORY " + json.dumps(result))


def measure_memory(variant: str, mode: str, shape: Shape, args) -> tuple[float, str]:
    spec = dict(
        variant=variant,
        mode=mode,
        shape=asdict(shape),
        quick=args.quick,
        device=args.device,
        threads=torch.get_num_threads(),
        steps=2 if mode == "train" else 1,
    )
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    for line in out.stdout.splitlines():
        if line.startswith("MEMORY "):
            result = json.loads(line[len("MEMORY ") :])
            return result["peak_mib"], result["method"]
    raise RuntimeError(f"memory subprocess failed for {variant}/{mode}:\n{out.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------------ FLOPs etc.


def flop_budget(models: dict, shape: Shape) -> dict:
    """Analytic split of the image branch's cost: backbone per page, projection per RoI, text encoder per batch."""
    ours = models["ours"]
    visual = ours.layoutlm_roialign.visual_embeddings
    batch = make_batch(shape, ours.config.vocab_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        visual.backbone(batch["pixel_values"][:1])
    backbone = counter.get_total_flops()
    one = {k: batch[k][:1] for k in ("input_ids", "bbox")}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        models["text"](**one)
    text = counter.get_total_flops() * shape.batch_size  # the encoder runs every position, padding included
    rois, _, _ = visual.rois(batch["bbox"], batch["attention_mask"], shape.image_size, shape.image_size)
    projection = 2 * rois.shape[0] * visual.projection.in_features * visual.projection.out_features
    all_tokens = 2 * shape.batch_size * shape.seq_len * visual.projection.in_features * visual.projection.out_features
    return dict(
        backbone_gflop_per_page=backbone / 1e9,
        text_gflop=text / 1e9,
        projection_gflop=projection / 1e9,
        projection_gflop_all_tokens=all_tokens / 1e9,
        num_rois=rois.shape[0],
        num_tokens=int(batch["attention_mask"].sum()),
        flop_ratio=(text + backbone * shape.batch_size + projection) / text,
    )


def check_inputs_cost(models: dict, shape: Shape) -> float:
    """Seconds per `_check_inputs` call (its one host sync included)."""
    ours = models["ours"]
    batch = make_batch(shape, ours.config.vocab_size)
    args = (ours.config, batch["input_ids"], None, batch["bbox"], batch["attention_mask"], batch["pixel_values"])
    start = time.perf_counter()
    for _ in range(200):
        _check_inputs(*args)
    return (time.perf_counter() - start) / 200


ABLATIONS = {
    "ours, no channels_last": {"channels_last": False},
    "ours, no share_boxes": {"share_boxes": False},
    "ours, no skip_padding": {"skip_padding": False},
    "ours, all switches off": {"channels_last": False, "share_boxes": False, "skip_padding": False},
}


def switched(model, switches: dict, step):
    visual = model.layoutlm_roialign.visual_embeddings

    def run():
        saved = {k: getattr(visual, k) for k in switches}
        for k, v in switches.items():
            setattr(visual, k, v)
        try:
            step()
        finally:
            for k, v in saved.items():
                setattr(visual, k, v)

    return run


# ------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and shapes, one repeat: a smoke run")
    parser.add_argument("--output", default=None, help="write the markdown report here")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3 inference, 2 training)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")

    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    infer_repeats = args.repeats or (1 if args.quick else 3)
    train_repeats = args.repeats or (1 if args.quick else 2)
    device = args.device
    wall = time.perf_counter()
    models = {k: m.to(device) for k, m in build_models(args.quick).items()}
    threads = torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    if device == "cpu" and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"{cpu}, {threads} threads"
    header = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}; "
        f"{hardware}"
    )
    print(header, flush=True)
    attn = {name: attn_implementation(m) for name, m in models.items()}

    rows, notes = [], []
    for shape in shapes:
        batch = make_batch(shape, models["ours"].config.vocab_size)
        result = {}
        for mode in ("infer", "train") if shape.train else ("infer",):
            steps = {}
            for name, model in models.items():
                inputs = to_device(variant_inputs(name, batch, shape.image_size, mode == "train"), device)
                steps[name] = make_step(model, inputs, mode, device, shape.dtype)
            if mode == "train":
                frozen = copy.deepcopy(models["ours"])
                frozen.layoutlm_roialign.visual_embeddings.backbone.requires_grad_(False)
                inputs = to_device(variant_inputs("ours", batch, shape.image_size, True), device)
                steps[FROZEN] = make_step(frozen, inputs, mode, device, shape.dtype)
            repeats = infer_repeats if mode == "infer" else train_repeats
            result[mode] = interleaved(steps, warmup=1, repeats=repeats, device=device)
            print(f"{shape.name} {shape.image_size}px {shape.dtype} {mode}: {result[mode]}", flush=True)
        memory = {}
        if shape is shapes[0] and not args.no_memory:
            for mode in ("infer", "train"):
                for name in VARIANTS + ((FROZEN,) if mode == "train" else ()):
                    memory[(name, mode)], method = measure_memory(name, mode, shape, args)
                    print(f"  memory {name} {mode}: {memory[(name, mode)]:.0f} MiB ({method})", flush=True)
            notes.append(f"Peak memory: {method}, in a fresh process per (variant, mode), one shape only.")
        for name in VARIANTS + ((FROZEN,) if "train" in result else ()):
            row = dict(
                shape=f"{shape.name}, {shape.image_size}px",
                dtype=shape.dtype,
                attn=attn[name if name in attn else "ours"],
                threads=threads,
                variant=name,
            )
            for mode in ("infer", "train"):
                if mode in result and name in result[mode]:
                    row[mode] = result[mode][name]
                    row[mode + "_ratio"] = result[mode][name] / result[mode]["text"]
                if (name, mode) in memory:
                    row[mode + "_mem"] = memory[(name, mode)]
                    row[mode + "_mem_ratio"] = memory[(name, mode)] / memory[("text", mode)]
            rows.append(row)

    # Each switch of the fast path, measured against the others on the first shape (inference).
    shape = shapes[0]
    batch = make_batch(shape, models["ours"].config.vocab_size)
    ours = models["ours"]
    inputs = to_device(variant_inputs("ours", batch, shape.image_size, False), device)
    base_step = make_step(ours, inputs, "infer", device, "fp32")
    steps = {
        "text": make_step(
            models["text"], to_device(variant_inputs("text", batch, 0, False), device), "infer", device, "fp32"
        ),
        "ours": base_step,
    }
    steps.update({name: switched(ours, sw, base_step) for name, sw in ABLATIONS.items()})
    ablation = interleaved(steps, warmup=1, repeats=infer_repeats, device=device)
    ours.eval()
    with torch.inference_mode():
        reference = ours(**inputs).logits
        diffs = {}
        for name, sw in ABLATIONS.items():
            out = {}
            switched(ours, sw, lambda out=out: out.setdefault("l", ours(**inputs).logits))()
            diffs[name] = (out["l"] - reference).abs().max().item()
    print("ablation:", ablation, diffs, flush=True)

    budgets = {}
    if device == "cpu":
        for s in shapes:
            key = (s.name, s.image_size)
            if key not in budgets:
                budgets[key] = flop_budget(models, s)
    check_cost = check_inputs_cost(models, shapes[0]) if device == "cpu" else None
    wall = time.perf_counter() - wall

    report = render(rows, ablation, diffs, budgets, check_cost, header, notes, shapes[0], args, wall)
    print(report)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report)
        print(f"wrote {args.output}")


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def render(rows, ablation, diffs, budgets, check_cost, header, notes, shape0, args, wall) -> str:
    command = "python lab/benchmarks/bench.py" + (" --quick" if args.quick else "")
    command += f" --output {args.output}" if args.output else ""
    lines = [
        f"Command: `{command}` ({wall / 60:.1f} min). {header}.",
        "",
        "| shape | dtype | attention | threads | variant | inference ms | x text | train step ms | x text "
        "| peak MiB infer | x text | peak MiB train | x text |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = {k: (r[k] * 1000 if k in r else None) for k in ("infer", "train")}
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['attn']} | {r['threads']} | {r['variant']} "
            f"| {_fmt(ms['infer'], '.0f')} | {_fmt(r.get('infer_ratio'), '.2f')} "
            f"| {_fmt(ms['train'], '.0f')} | {_fmt(r.get('train_ratio'), '.2f')} "
            f"| {_fmt(r.get('infer_mem'), '.0f')} | {_fmt(r.get('infer_mem_ratio'), '.2f')} "
            f"| {_fmt(r.get('train_mem'), '.0f')} | {_fmt(r.get('train_mem_ratio'), '.2f')} |"
        )
    lines += [
        "",
        f"Fast-path switches of `ours` ({shape0.name}, {shape0.image_size}px, fp32 inference, same run; max |logits "
        "difference| to the default path):",
        "",
        "| variant | inference ms | x text | max abs logits diff |",
        "|---|---:|---:|---:|",
    ]
    for name, t in ablation.items():
        lines.append(
            f"| {name} | {t * 1000:.0f} | {t / ablation['text']:.2f} | {_fmt(diffs.get(name), '.1e') or '-'} |"
        )
    if budgets:
        lines += [
            "",
            "FLOPs (torch.utils.flop_counter; the text encoder runs every position, padding included):",
            "",
            "| shape | text GFLOP | backbone GFLOP/page | RoIs (tokens) | projection GFLOP (all tokens) "
            "| (text + image) / text |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for (name, size), b in budgets.items():
            lines.append(
                f"| {name}, {size}px | {b['text_gflop']:.0f} | {b['backbone_gflop_per_page']:.1f} "
                f"| {b['num_rois']} ({b['num_tokens']}) | {b['projection_gflop']:.1f} "
                f"({b['projection_gflop_all_tokens']:.1f}) | {b['flop_ratio']:.3f} |"
            )
    if check_cost is not None:
        lines += ["", f"`_check_inputs` (value checks, one host sync): {check_cost * 1e6:.0f} us per call."]
    lines += (
        [""]
        + [f"{n}" for n in notes]
        + [
            "Times are medians over interleaved rounds (order rotated each round, one warm-up round); training is "
            "forward + backward + AdamW. `ours` uses frozen batch norm in the backbone (what a pretrained backbone "
            "gets) and random weights; `tutorial` shares the text, backbone, projection and classifier weights; "
            f"`layoutlmv3` (LayoutLMv3-base sizes, random weights; tiny with --quick) reads each page at "
            f"{LAYOUTLMV3_IMAGE_SIZE} px whatever the shape's image size, as {(LAYOUTLMV3_IMAGE_SIZE // 16) ** 2} "
            "patches + 1 added to every sequence.",
            "",
        ]
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
