"""Model card and Hub publication of a trained folder.

`write_model_card` fills the `model_card.md` template (metrics per entity type, data, hyper-parameters, how to load
with `trust_remote_code`, intended use and limits, and the terms of the training data's licence as the data loader
reported it: FUNSD's non-commercial terms for FUNSD) into the folder's `README.md`. `push_folder_to_hub` publishes
the complete folder (model, processor, code, card) in one commit with `huggingface_hub`. A Hub call that fails (no
network, a refused token, an HTTP error) raises `HubError`, one line saying what failed, which the scripts print with
what was kept; `check_push_arguments` asks the Hub who the token belongs to before a training run, so that a run
never trains for hours to fail at the push.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "HubError",
    "hub_failure",
    "render_model_card",
    "write_model_card",
    "push_folder_to_hub",
    "find_model_card_template",
    "training_data_terms",
    "check_push_arguments",
    "model_index_yaml",
    "link_metrics_section",
]

FUNSD_NOTE = (
    "**License of the training data.** FUNSD (Jaume, Ekenel, Thiran, ICDAR-OST 2019) is licensed for "
    "non-commercial, research and educational purposes only; this model was trained on it, so use it under the "
    "same terms.\n"
)
# Dataset licences under which the model may carry the code's own licence; any other puts `license: other` and the
# data's terms on the card.
PERMISSIVE_DATA_LICENSES = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "unlicense"}
NOT_PUBLISHED = {"training_args.bin"}  # a pickle of the run's arguments: not needed to load, flagged by the Hub
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class HubError(RuntimeError):
    """A call to the Hugging Face Hub that failed, as one line: what was asked and why it failed."""


def hub_failure(what: str, err: BaseException) -> HubError:
    """`HubError("<what> failed (<error type>: <first line of its message>)")` for the exception `err`."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return HubError(f"{what} failed ({type(err).__name__}: {lines[0] if lines else 'no message'})")


def find_model_card_template() -> Path:
    """The `model_card.md` template: the top-level `model_card.md`, linked into the package (`layoutlm_roialign/
    model_card.md` is a symbolic link to it) so that the wheel carries it as package data."""
    template = Path(__file__).resolve().parent / "model_card.md"
    if not template.is_file():
        raise FileNotFoundError(f"The model card template {template} is missing: reinstall the package.")
    return template


def render_model_card(template: str, fields: dict[str, Any]) -> str:
    """Replace every `{{name}}` of `template` with `fields[name]`.

    Raises:
        KeyError: naming the placeholders that `fields` lacks (a template and its filler must agree).
    """
    missing = sorted(set(_PLACEHOLDER.findall(template)) - set(fields))
    if missing:
        raise KeyError(f"model card fields missing: {missing}")
    return _PLACEHOLDER.sub(lambda m: str(fields[m.group(1)]), template)


def training_data_terms(name: str | None, license: str | None) -> dict[str, str]:
    """The card's `license`, `license_note` and `datasets_yaml` for a model trained on dataset `name` under `license`
    (as the data loader reported them, or `--dataset_license`).

    FUNSD (the release folder or a Hub copy, without another licence given) -> `other` with FUNSD's non-commercial
    terms; a permissive licence -> `apache-2.0` (the code's); any other or none -> `other` with a note that says so.
    """
    from .data import FUNSD_LICENSE

    if license == FUNSD_LICENSE:
        return {"license": "other", "license_note": FUNSD_NOTE, "datasets_yaml": "datasets:\n- nielsr/funsd\n"}
    if license and license.strip().lower() in PERMISSIVE_DATA_LICENSES:
        return {"license": "apache-2.0", "license_note": "", "datasets_yaml": ""}
    if license:
        note = (
            f"**License of the training data.** `{name}` is licensed under: {license}. This model was trained on it, "
            "so use it under the same terms.\n"
        )
    else:
        note = (
            f"**License of the training data.** The licence of `{name}` is not known (`scripts/train.py "
            "--dataset_license` records it); check its terms before using this model.\n"
        )
    return {"license": "other", "license_note": note, "datasets_yaml": ""}


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _hub_dataset_id(spec: str | None) -> str | None:
    """`spec` if it names a Hub dataset (`owner/name`, not a local path), else `None`."""
    if spec and not os.path.exists(spec) and re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return spec
    return None


def model_index_yaml(scores: dict | None, data: dict, model_name: str, dataset_id: str | None = None) -> str:
    """The card's `model-index` block: the validation scores as evaluation results, which the Hub shows on the model
    page (entity precision, recall and F1 by seqeval, and word accuracy). Empty without scores.

    Args:
        scores: `metrics.entity_scores` output. data: as `write_model_card` takes it (`name`, `dataset`).
        model_name: the model's name in the index. dataset_id: the Hub dataset the scores are on, if any.
    """
    if not scores:
        return ""
    from huggingface_hub import EvalResult, ModelCardData

    name = str(data.get("name") or data.get("dataset") or "unknown")
    dataset_type = dataset_id or re.sub(r"[^\w.-]+", "-", str(data.get("dataset") or name)).strip("-").lower()
    metrics = [("precision", "Entity precision"), ("recall", "Entity recall"), ("f1", "Entity F1")]
    metrics += [("accuracy", "Word accuracy")] if "accuracy" in scores else []
    results = [
        EvalResult(
            task_type="token-classification",
            task_name="Form entity labelling",
            dataset_type=dataset_type,
            dataset_name=name,
            dataset_split="validation",  # pages held out of the training pages (the card's Data section says how)
            metric_type=key,
            metric_name=label,
            metric_value=round(float(scores[key]), 4),
        )
        for key, label in metrics
    ]
    return ModelCardData(model_name=model_name, eval_results=results).to_yaml() + "\n"


def write_model_card(
    folder: str | os.PathLike,
    scores: dict | None,
    data: dict,
    hyperparameters: dict,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
    link_scores: dict | None = None,
) -> Path:
    """Write `<folder>/README.md` from the template.

    Args:
        folder: the saved model folder (its `config.json` gives labels, backbone and image size).
        scores: `metrics.entity_scores` output on the validation pages (`None`: not evaluated).
        data: `dataset` (what `--dataset` said), `name` and `license` (what the loader reported, see
            `training_data_terms`), `train_pages`, `validation_pages`, `split` (see `describe_data`).
        hyperparameters: name -> value rows of the hyper-parameter table.
        repo_id: the Hub repository the card is for (used in the loading snippet).
        template: path of another template.
        link_scores: for a linking checkpoint, `{"gold_entities": ..., "end_to_end": ...}` pair scores
            (`metrics.link_scores` output) on the validation pages; adds their table and how to get the pairs.
    """

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    types = sorted({label[2:] for label in labels if label[:2] in ("B-", "I-")})
    rows = []
    if scores:
        rows.append(
            f"| **overall** | {_fmt(scores['precision'])} | {_fmt(scores['recall'])} | **{_fmt(scores['f1'])}** | "
            f"{sum(v['number'] for v in scores['per_type'].values())} |"
        )
        for name in types:
            v = scores["per_type"].get(name, {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 0})
            rows.append(f"| {name} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {v['number']} |")
    else:
        rows.append("| (not evaluated) | | | | |")
    terms = training_data_terms(data.get("name") or data.get("dataset"), data.get("license"))
    if not terms["datasets_yaml"] and _hub_dataset_id(data.get("dataset")):  # trained on a Hub dataset: link it
        terms["datasets_yaml"] = f"datasets:\n- {data['dataset']}\n"
    data_text = f"`{data.get('dataset', '?')}`: {data.get('train_pages', '?')} training pages"
    data_text += f"; {data['split']}." if data.get("split") else "."
    if config.get("use_visual_features", True):
        backbone = f"`{config['backbone']}` (cut at `{config['backbone_return_node']}`)"
    else:
        backbone = f"`{config['backbone']}` (switched off in this model: `use_visual_features=False`)"
    model_name = repo_id.split("/")[-1] if repo_id else "LayoutLM-RoIAlign for form entity labelling"
    listed = re.findall(r"^- (\S+)$", terms["datasets_yaml"], flags=re.M)
    fields = {
        **terms,
        "model_index_yaml": model_index_yaml(scores, data, model_name, listed[0] if listed else None),
        "model_name": model_name,
        "labels": ", ".join(f"`{label}`" for label in labels),
        "backbone": backbone,
        "metrics_table": "\n".join(rows),
        "accuracy": _fmt(scores["accuracy"]) if scores else "-",
        "data": data_text,
        "hyperparameters_table": "\n".join(f"| {k} | {v} |" for k, v in hyperparameters.items()),
        "repo_id": repo_id or "path/to/this/folder",
        "train_pages": data.get("train_pages", "?"),
        "image_size": config.get("image_size", "?"),
        "link_metrics": link_metrics_section(link_scores, config),
    }
    path = Path(template) if template is not None else find_model_card_template()
    card = render_model_card(path.read_text(), fields)
    (folder / "README.md").write_text(card)
    return folder / "README.md"


def link_metrics_section(link_scores: dict | None, config: dict) -> str:
    """The card's key-value section of a linking checkpoint: pair scores with gold entities and end to end, and how
    to get the pairs; empty for a token-classification checkpoint."""
    if not link_scores:
        return ""
    rows = []
    for key, name in (("gold_entities", "gold entities"), ("end_to_end", "end to end (predicted entities)")):
        if link_scores.get(key):
            v = link_scores[key]
            rows.append(
                f"| {name} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | **{_fmt(v['f1'])}** | {v['gold']} |"
            )
    types = ", ".join(f"{k} -> {v}" for k, v in config.get("link_types", []))
    return (
        "\n## Key-value pairs\n\n"
        f"This checkpoint also links entities ({types}; a pair is predicted when p(key | value) exceeds "
        f"{config.get('link_threshold')}"
        + (", each value keeping only its best key" if config.get("link_one_value_key") else "")
        + "). Pair scores on the validation pages, by the package's `evaluate` metric `pair_f1` "
        '(`layoutlm_roialign.metrics.load_metric("pair_f1")`; end to end: a pair counts when both predicted '
        "entities have exactly a gold entity's words and those form a gold pair):\n\n"
        "| entities | precision | recall | F1 | gold pairs |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        '`pipeline(model=repo, trust_remote_code=True)(page)` gives the pairs with the labels (`"pairs"`, from one '
        "pass of the model), as `scripts/predict.py` writes them (arrows in its picture). "
        "`AutoModelForTokenClassification` with `trust_remote_code=True` loads the joint class "
        "(`LayoutLMRoIAlignForRelationExtraction`): `logits` are the token logits and, given `entity_spans` (and "
        "`entity_labels`) from the processor's `entities=`, `link_logits` the log-probabilities of the pairs.\n"
    )


def check_push_arguments(training_args: Any) -> str | None:
    """With `--push_to_hub` (a `TrainingArguments`), return the token to push with; raise a `ValueError` naming the
    missing flag. Called before training, so a run never ends unable to publish."""
    if not training_args.push_to_hub:
        return None
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (the repository to create or update, e.g. user/name).")
    from huggingface_hub import get_token

    token = training_args.hub_token or get_token()
    if not token:
        raise ValueError(
            "--push_to_hub needs a Hugging Face token: pass --hub_token, set HF_TOKEN, or run `hf auth login`."
        )
    from huggingface_hub import HfApi

    try:
        HfApi(token=token).whoami()  # the endpoint answers and the token is valid: before hours of training
    except Exception as err:  # noqa: BLE001 (network, offline mode, a refused token: one line, not a traceback)
        raise ValueError(
            f"--push_to_hub: {hub_failure('asking the Hub who the token belongs to', err)}; nothing was trained. "
            "Check the token (`hf auth whoami`) and the network (HF_ENDPOINT, HF_HUB_OFFLINE), or train without "
            "--push_to_hub and publish the final folder later with scripts/publish.py."
        ) from err
    return token


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload LayoutLM-RoIAlign model, processor, code and model card",
    replace: Mapping[str, bytes] | None = None,
) -> Any:
    """Create `repo_id` if needed and upload every file of `folder` in one commit. Returns the `CommitInfo`.

    Files starting with "." and `training_args.bin` are not published. `replace` (`{name: bytes}`) publishes these
    contents instead of the folder's files of those names (the folder is not changed: e.g. a card linking to a Space,
    written into the folder only once the push succeeded).

    Raises:
        ValueError: if `folder` is not a complete checkpoint (`check_complete_checkpoint`: config, whole weights,
            processor, code) or has no card. HubError: the Hub could not be reached or refused the repository or the commit.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from .checkpoint_files import check_complete_checkpoint

    folder = Path(folder)
    check_complete_checkpoint(folder, also=("README.md",))
    replace = dict(replace or {})
    # One commit holding every file (not `upload_folder`, which may split a folder over several commits): the
    # repository never shows a partial checkpoint.
    operations = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in NOT_PUBLISHED and not path.name.startswith("."):
            name = path.relative_to(folder).as_posix()
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=replace.get(name, str(path))))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.create_commit(
            repo_id=repo_id, operations=operations, commit_message=commit_message, repo_type="model"
        )
    except Exception as err:  # noqa: BLE001 (network, token, HTTP errors: one line, not a traceback)
        raise hub_failure(f"pushing {folder} to https://huggingface.co/{repo_id}", err) from err
