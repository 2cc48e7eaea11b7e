"""`Trainer` with one learning rate per part of the model, freezing the backbone up to a stage, and the training
precision the scripts choose (`precision_defaults`) and check (`check_bf16`: bf16 only where the device computes it
natively).

The model says which parameters form each part (`parameter_groups()`, each one of `PARAMETER_GROUPS`: backbone,
visual, text, head) and what the backbone's stages are (`backbone_stages()`); this module only turns that into
optimizer groups and frozen parameters.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainingArguments

from .compute_layoutlm_roialign import cpu_native_bf16, native_bf16
from .modeling_layoutlm_roialign import PARAMETER_GROUPS

__all__ = [
    "LayoutLMRoIAlignTrainer",
    "PARAMETER_GROUPS",
    "CPU_BF16_BY_DEFAULT",
    "check_bf16",
    "check_resumed_precision",
    "freeze_backbone_until",
    "precision_defaults",
    "training_precision",
]

logger = logging.getLogger(__name__)


def _parameter_groups(model: torch.nn.Module) -> dict[str, str]:
    if not hasattr(model, "parameter_groups"):
        raise ValueError(
            f"{type(model).__name__} does not say which parameters form its parts (no `parameter_groups()`): load "
            "the checkpoint with this package's classes (without --trust_remote_code) to fine-tune it."
        )
    return model.parameter_groups()


def freeze_backbone_until(model: PreTrainedModel, stage: str) -> list[str]:
    """Freeze the backbone's parameters up to and including stage `stage` (e.g. `"layer2"`: conv1, bn1, layer1,
    layer2; the stages are the model's `backbone_stages()`). Returns the frozen parameter names.

    Raises:
        ValueError: naming `--freeze_backbone_until` and the known stages, if `stage` is not one.
    """
    stages = model.backbone_stages()
    if not stages:
        raise ValueError("--freeze_backbone_until needs the visual branch (--use_visual_features true).")
    if stage not in stages:
        raise ValueError(f"--freeze_backbone_until {stage!r} is not a stage of the backbone; stages: {list(stages)}.")
    names = list(stages)
    frozen = [name for s in names[: names.index(stage) + 1] for name in stages[s]]
    parameters = dict(model.named_parameters())
    for name in frozen:
        parameters[name].requires_grad_(False)
    return frozen


# bf16 training on a CPU stays opt-in (`--bf16 true`): with the README's results recipe (MiniLM-L6 + MobileNetV2) a
# training step was 1.15x faster under bf16 autocast on an AMX CPU, short of the 1.8x that would make it the default
# (docs/results.md).
CPU_BF16_BY_DEFAULT = False


def precision_defaults(gpu_bf16: bool = True) -> dict[str, Any]:
    """`TrainingArguments` defaults of the training scripts for this machine: with `gpu_bf16`, `bf16` (mixed
    precision) on a CUDA GPU with bf16; on a CPU, `bf16` where it computes bf16 natively (AMX or AVX512-BF16 that
    oneDNN may use, `compute_layoutlm_roialign.cpu_native_bf16`) only if `CPU_BF16_BY_DEFAULT`; and on a machine
    without an accelerator `use_cpu`, under which `Trainer` takes `--bf16 true` on its CPU."""
    if torch.cuda.is_available():
        return {"bf16": gpu_bf16 and native_bf16("cuda")}
    if torch.accelerator.is_available():  # MPS, XPU, ...: TrainingArguments' own defaults
        return {}
    return {"bf16": CPU_BF16_BY_DEFAULT and cpu_native_bf16(), "use_cpu": True}


def check_bf16(training_args: TrainingArguments) -> None:
    """Refuse `--bf16 true` on a CPU that does not compute bf16 natively (oneDNN would emulate it, slower than
    float32).

    Raises:
        ValueError: naming `--bf16` and the fix.
    """
    if training_args.bf16 and training_args.device.type == "cpu" and not cpu_native_bf16():
        raise ValueError(
            "--bf16 true: this CPU does not compute bf16 natively (no AMX or AVX512-BF16 that oneDNN may use), so "
            "bf16 would be emulated and slower than float32: leave --bf16 out (or give --bf16 false) to train in float32."
        )


def training_precision(training_args: TrainingArguments) -> str:
    """What a run computes in, for its model card: `"bf16 mixed precision"`, `"fp16 mixed precision"` or
    `"float32"`."""
    if training_args.bf16:
        return "bf16 mixed precision"
    return "fp16 mixed precision" if training_args.fp16 else "float32"


def check_resumed_precision(checkpoint: str | os.PathLike | None, training_args: TrainingArguments) -> None:
    """Refuse to resume `checkpoint` in another precision than the one it was trained in (its `training_args.bin`,
    which `Trainer` writes into every checkpoint; nothing is checked without one).

    Raises:
        ValueError: naming `--bf16` and the run's precision.
    """
    path = os.path.join(checkpoint, "training_args.bin") if isinstance(checkpoint, (str, os.PathLike)) else None
    if path is None or not os.path.isfile(path):
        return
    try:  # our own run's arguments, written by Trainer with torch.save
        before = torch.load(path, weights_only=False)
    except Exception as err:  # noqa: BLE001 - an unreadable file leaves the precision unchecked, said once
        logger.warning(f"{path} cannot be read ({err}): the resumed run's precision is not checked.")
        return
    then, now = training_precision(before), training_precision(training_args)
    if then != now:
        flag = "true" if before.bf16 else "false"
        raise ValueError(
            f"--bf16 {str(training_args.bf16).lower()}: the run in {os.path.dirname(os.path.abspath(path))} trained "
            f"in {then}, and this one would go on in {now}. Resume with --bf16 {flag}, or give another --output_dir "
            "to start a new run."
        )


class LayoutLMRoIAlignTrainer(Trainer):
    """`Trainer` whose optimizer gives each part of the model its own learning rate.

    Args:
        learning_rates: a part of the model (one of `PARAMETER_GROUPS`) -> its learning rate; a missing or `None`
            entry takes `args.learning_rate`, and 0 freezes that part (its parameters stop requiring gradients and stay
            out of the optimizer). Weight decay follows `Trainer`'s rule (none on biases and norms).
        All other arguments are `Trainer`'s.
    """

    def __init__(self, *args, learning_rates: dict[str, float | None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rates = {
            part: (self.args.learning_rate if (learning_rates or {}).get(part) is None else learning_rates[part])
            for part in PARAMETER_GROUPS
        }
        unknown = set(learning_rates or {}) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(f"Unknown learning-rate groups {sorted(unknown)}; known: {PARAMETER_GROUPS}.")
        for part, lr in self.learning_rates.items():
            if lr < 0:
                raise ValueError(f"--{part}_learning_rate must be >= 0 (0 freezes), got {lr}.")
        # Freeze before the model is wrapped for DDP, which must know which parameters get gradients.
        parts = _parameter_groups(self.model)
        for name, param in self.model.named_parameters():
            if self.learning_rates[parts[name]] == 0:
                param.requires_grad_(False)
        self.parameter_groups_summary: list[dict] = []

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        parts = _parameter_groups(opt_model)
        groups = []
        self.parameter_groups_summary = []
        for part in PARAMETER_GROUPS:
            for with_decay in (True, False):
                params = [
                    p
                    for n, p in opt_model.named_parameters()
                    if parts.get(n) == part and p.requires_grad and (n in decay) == with_decay
                ]
                if not params:
                    continue
                weight_decay = self.args.weight_decay if with_decay else 0.0
                groups.append(
                    {"params": params, "lr": self.learning_rates[part], "weight_decay": weight_decay, "name": part}
                )
        for part in PARAMETER_GROUPS:
            total = sum(p.numel() for n, p in opt_model.named_parameters() if parts.get(n) == part)
            trained = sum(
                p.numel() for n, p in opt_model.named_parameters() if parts.get(n) == part and p.requires_grad
            )
            if total:
                self.parameter_groups_summary.append(
                    {"group": part, "lr": self.learning_rates[part], "parameters": total, "trained": trained}
                )
        if self.args.should_log:  # once, at train start
            logger.info(
                "Learning rates per parameter group (0 = frozen):\n"
                + "\n".join(
                    f"  {s['group']:<9} lr {s['lr']:.2e}: {s['trained']:,} of {s['parameters']:,} parameters trained"
                    for s in self.parameter_groups_summary
                )
            )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)  # each group has its own
        self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer
