"""The registry of the model's heads: for each head class (by name, as `config.architectures` writes it), the Auto
class that loads it and what it does. Registration with the Auto classes, a checkpoint's `auto_map` and pipeline, the
loader, the road and the model factory all read `HEADS`: a new head is one entry here (a class of the modeling
file) or one `register_head` call (a class defined elsewhere).

Travels with every checkpoint beside the modeling file, which imports it relatively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import transformers
from transformers import PreTrainedConfig

__all__ = [
    "HEADS",
    "Head",
    "auto_class_of_head",
    "auto_classes",
    "head_classes",
    "heads_of",
    "is_masked_lm",
    "labels_tokens",
    "links_entities",
    "module_of",
    "register_auto_classes",
    "register_head",
    "register_heads",
    "task_heads",
    "task_links",
    "token_labelling_heads",
    "unregister_head",
]


@dataclass(frozen=True)
class Head:
    """What a head class is.

    Attributes:
        auto_class: the Auto class that loads it (a name in `transformers`). The first head registered for an Auto
            class is the one it gives a checkpoint saved by another head; the others load as themselves.
        labels_tokens: it labels words (its `logits` are token logits): its checkpoints carry the document pipeline,
            and the road, the pipeline and the loader's `task="token-classification"` take it.
        links: it also links entities into key-value pairs (a link head beside the token head).
        masked_lm: it is the masked visual-language model of pre-training (fine-tuning starts from its checkpoints).
        task: the `--task` of the training script that trains it, or `None`.
    """

    auto_class: str
    labels_tokens: bool = False
    links: bool = False
    masked_lm: bool = False
    task: str | None = None


# The package's heads. There is no Auto class for linking: the linking model is a token classifier (its `logits` are
# the token logits) with a second output, so `AutoModelForTokenClassification` loads it.
HEADS: dict[str, Head] = {
    "LayoutLMRoIAlignModel": Head("AutoModel"),
    "LayoutLMRoIAlignForTokenClassification": Head(
        "AutoModelForTokenClassification", labels_tokens=True, task="token-classification"
    ),
    "LayoutLMRoIAlignForRelationExtraction": Head(
        "AutoModelForTokenClassification", labels_tokens=True, links=True, task="linking"
    ),
    "LayoutLMRoIAlignForSequenceClassification": Head("AutoModelForSequenceClassification"),
    "LayoutLMRoIAlignForMaskedLM": Head("AutoModelForMaskedLM", masked_lm=True),
}
# The head classes by name: those given to `register_head` or to `register_auto_classes`.
_CLASSES: dict[str, type] = {}


def auto_classes() -> tuple[str, ...]:
    """The Auto classes of the registered heads, in registration order."""
    return tuple(dict.fromkeys(head.auto_class for head in HEADS.values()))


def heads_of(auto_class: str) -> tuple[str, ...]:
    """The heads `auto_class` loads, its default first."""
    return tuple(name for name, head in HEADS.items() if head.auto_class == auto_class)


def auto_class_of_head(name: str) -> str | None:
    """The Auto class that loads the head class named `name` (a `config.architectures` entry), or `None`."""
    return HEADS[name].auto_class if name in HEADS else None


def labels_tokens(name: str) -> bool:
    """Whether the head class named `name` labels words (`Head.labels_tokens`)."""
    return name in HEADS and HEADS[name].labels_tokens


def links_entities(name: str) -> bool:
    """Whether the head class named `name` links entities into key-value pairs (`Head.links`); a class the registry
    does not name (transformers' own heads, an unregistered one) does not."""
    return name in HEADS and HEADS[name].links


def task_links(task: str) -> bool:
    """Whether the head that training's `--task` `task` trains links entities (`False` for a task no head has)."""
    name = task_heads().get(task)
    return name is not None and links_entities(name)


def is_masked_lm(name: str) -> bool:
    """Whether the head class named `name` is a pre-training (masked LM) head."""
    return name in HEADS and HEADS[name].masked_lm


def token_labelling_heads() -> tuple[str, ...]:
    """The heads that label words, the default token classifier first."""
    return tuple(name for name, head in HEADS.items() if head.labels_tokens)


def task_heads() -> dict[str, str]:
    """`--task` of the training script -> the head class name it trains."""
    return {head.task: name for name, head in HEADS.items() if head.task}


def module_of(name: str) -> str:
    """The module (file name without `.py`) that defines the head class named `name`: the modeling file, or the
    module of the class given to `register_head`."""
    cls = _CLASSES.get(name)
    return cls.__module__.rsplit(".", 1)[-1] if cls is not None else "modeling_layoutlm_roialign"


def head_classes(classes: Mapping[str, type]) -> dict[str, type]:
    """Every registered head's class, by name: from `classes` (e.g. the modeling module's namespace), else the one
    `register_head` or `register_auto_classes` was given."""
    return {name: classes.get(name) or _CLASSES[name] for name in HEADS}


def register_auto_classes(config_class: type, classes: Mapping[str, type]) -> None:
    """Map `config_class`, in every Auto class, to its heads (`heads_of`; classes from `head_classes(classes)`), and
    mark each head for its Auto class, so that `save_pretrained` copies its code and writes `auto_map`."""
    found = head_classes(classes)
    _CLASSES.update(found)
    for auto_class in auto_classes():
        heads = tuple(found[name] for name in heads_of(auto_class))
        for cls in heads:
            cls.register_for_auto_class(auto_class)
        getattr(transformers, auto_class).register(config_class, heads if len(heads) > 1 else heads[0], exist_ok=True)


def register_head(
    cls: type,
    auto_class: str,
    *,
    labels_tokens: bool = False,
    links: bool = False,
    masked_lm: bool = False,
    task: str | None = None,
) -> None:
    """Add head class `cls` (a subclass of the package's `PreTrainedModel`) to `HEADS` and register it with
    `auto_class` for its config class: the loader, `save_pretrained` (`auto_map`, the pipeline) and the road then
    take it as the built-in heads. The flags are `Head`'s. Its checkpoints carry its module beside the modeling
    file; the checkpoints of other heads name it in `auto_map` only when it is a class of the modeling file.

    Raises:
        ValueError: when `auto_class` is not one of transformers' Auto classes.
    """
    if not auto_class.startswith("AutoModel") or not hasattr(transformers, auto_class):
        raise ValueError(f"`auto_class` must name one of transformers' AutoModel* classes, got {auto_class!r}.")
    HEADS[cls.__name__] = Head(auto_class, labels_tokens, links, masked_lm, task)
    _CLASSES[cls.__name__] = cls
    register_auto_classes(cls.config_class, {})


def unregister_head(cls: type) -> None:
    """Undo `register_head(cls, ...)`: its Auto class loads the other heads again (an Auto class left without heads
    keeps its transformers mapping)."""
    HEADS.pop(cls.__name__, None)
    _CLASSES.pop(cls.__name__, None)
    cls._auto_class = None
    register_auto_classes(cls.config_class, {})


def register_heads(config: Any, auto_class: str | None, classes: Mapping[str, type]) -> None:
    """Map `config`'s class, for Auto class `auto_class`, to each of its heads (classes from `head_classes(classes)`),
    when `auto_class` has several; does nothing for `config=None`.

    An Auto class that loads a checkpoint's code maps the config's class to the class it loaded, and for the next
    checkpoint with the same code (the same config class: transformers names the module after the folder and the
    code, and every run saves to `final/`) it gives that class whatever `config.architectures` says: a linking
    checkpoint after a token one lost its link head. Mapped to all its heads, it picks the one the config names.
    """
    names = heads_of(auto_class or "")
    if not isinstance(config, PreTrainedConfig) or len(names) < 2:
        return
    found = head_classes(classes)
    for name in names:  # as transformers marks the class it loads, so that saving it copies its code again
        found[name].register_for_auto_class(auto_class)
    getattr(transformers, auto_class).register(type(config), tuple(found[name] for name in names), exist_ok=True)
