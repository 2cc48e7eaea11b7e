"""Shared fixtures: tiny configurations (hidden 32, 2 layers, resnet18 at image_size 64) and random batches."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

# Tests never reach the Hub; say so up front so nothing waits on a network time-out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
# `dtype="auto"` means float32 in tests (subprocesses too), whatever the CPU; the dtype tests fake each capability.
os.environ.setdefault("LAYOUTLM_ROIALIGN_CPU_BF16", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from layoutlm_roialign import LayoutLMRoIAlignConfig  # noqa: E402
from layoutlm_roialign.windowing_layoutlm_roialign import WINDOW_INPUTS  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# FUNSD's training split (annotations/ and images/ of its release); FUNSD is not in the repository.
FUNSD_ENV = "LAYOUTLM_ROIALIGN_FUNSD"
FUNSD_DEFAULT = REPO_ROOT.parent / "shared" / "data" / "funsd" / "training_data"

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    backbone="resnet18",
    image_size=64,
    num_labels=7,
)


# `ModelArguments` of the training code for a tiny model (a WordPiece vocabulary is built from the training words).
TINY_TRAINING_MODEL = dict(
    backbone="resnet18",
    image_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    tokenizer_vocab_size=300,
)
MODEL_INPUTS = (*WINDOW_INPUTS, "pixel_values")  # the processor's model_input_names


def model_inputs(batch: dict, labels: bool = False) -> dict:
    """The model's keyword arguments out of `random_batch`'s dict (with `labels` if asked)."""
    return {k: batch[k] for k in MODEL_INPUTS + (("labels",) if labels else ())}


def tiny_config(**overrides) -> LayoutLMRoIAlignConfig:
    """A tiny config; `overrides` replace any field."""
    return LayoutLMRoIAlignConfig(**{**TINY, **overrides})


def random_batch(batch_size: int = 3, seq_len: int = 12, image_size: int = 64, num_labels: int = 7, seed: int = 0):
    """Random tokens whose consecutive pairs share a word box (as sub-words do), right padding, random pages."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 99, (batch_size, seq_len), generator=g)
    xy = torch.randint(0, 800, (batch_size, seq_len // 2 + 1, 2), generator=g)
    wh = torch.randint(1, 200, (batch_size, seq_len // 2 + 1, 2), generator=g)
    words = torch.cat([xy, xy + wh], dim=-1).repeat_interleave(2, dim=1)[:, :seq_len]  # pairs share a box
    bbox = words.clamp(0, 1000)
    lengths = torch.linspace(seq_len, max(3, seq_len // 3), batch_size).long()
    attention_mask = (torch.arange(seq_len)[None] < lengths[:, None]).long()
    input_ids = input_ids * attention_mask
    bbox = bbox * attention_mask[..., None]
    bbox[:, 0] = 0  # [CLS]
    labels = torch.randint(0, num_labels, (batch_size, seq_len), generator=g).masked_fill(attention_mask == 0, -100)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=g)
    return {
        "input_ids": input_ids,
        "bbox": bbox,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": pixel_values,
        "labels": labels,
    }


def run_without_package(code: str, cwd: Path, importable: bool = False) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter in which `import layoutlm_roialign` fails (as on a user's machine that
    only has the checkpoint), from `cwd`, offline; with `importable`, one that can import it (but has not)."""
    prelude = "" if importable else "import sys\nsys.modules['layoutlm_roialign'] = None\n"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT) if importable else "",
    }
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def save_tiny_checkpoint(folder: Path, head: type | None = None, max_position_embeddings: int = 128) -> Path:
    """Save a tiny untrained checkpoint of `head` (default: the token classifier; FUNSD's labels), with a processor
    whose WordPiece vocabulary is trained on synthetic forms, into `folder`, as `save_pretrained` writes one."""
    from layoutlm_roialign import (
        LayoutLMRoIAlignForTokenClassification,
        LayoutLMRoIAlignImageProcessor,
        LayoutLMRoIAlignProcessor,
    )
    from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form
    from layoutlm_roialign.wordpiece import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer([" ".join(render_synthetic_form(seed=0, index=i)[1]) for i in range(4)], 300)
    config = tiny_config(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        num_labels=len(FUNSD_LABELS),
        id2label=dict(enumerate(FUNSD_LABELS)),
        label2id={label: i for i, label in enumerate(FUNSD_LABELS)},
    )
    torch.manual_seed(0)
    (head or LayoutLMRoIAlignForTokenClassification)(config).save_pretrained(folder)
    processor = LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=config.image_size), tokenizer)
    processor.save_pretrained(folder)
    return folder


def assert_remote_code_gives(
    ckpt: Path,
    model_inputs: dict,
    expected: torch.Tensor,
    tmp_path: Path,
    auto_class: str = "AutoModelForTokenClassification",
    checks: str = "",
    **config,
) -> None:
    """Load `ckpt` with `auto_class(trust_remote_code=True)` in a fresh process without the package, run it on
    `model_inputs` and assert its logits equal `expected` exactly, that its config has the `config` values given and
    that `checks` (Python lines run on `model` there) hold."""
    torch.save(model_inputs, tmp_path / "batch.pt")
    torch.save(expected, tmp_path / "expected.pt")
    result = run_without_package(
        f"""
        import torch
        try:
            import layoutlm_roialign
            raise SystemExit("package importable")
        except ImportError:
            pass
        from transformers import {auto_class}
        model = {auto_class}.from_pretrained({str(ckpt)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        for key, value in {config!r}.items():
            assert getattr(model.config, key) == value, (key, getattr(model.config, key))
        exec({checks!r})
        with torch.no_grad():
            logits = model(**torch.load({str(tmp_path / "batch.pt")!r})).logits
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(logits, expected), (logits - expected).abs().max()
        print("REMOTE_OK")
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout


# Downloads the tests need, kept between runs (`$LAYOUTLM_ROIALIGN_CACHE`, default ~/.cache/layoutlm-roialign).
CACHE_ENV = "LAYOUTLM_ROIALIGN_CACHE"
TRANSFORMERS_TESTS_PACKAGE = "transformers_tests"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not collect tests/test_transformers_common.py (slow tests only) from a folder where the run's `-m` leaves
    the slow tests out: importing it fetches transformers' source archive from PyPI, which the quick, offline run
    (`pytest -q`) must not wait for. Named explicitly, the file is collected (and its tests deselected)."""
    if collection_path.name != "test_transformers_common.py" or not config.getoption("markexpr"):
        return None
    try:
        from _pytest.mark.expression import Expression  # pytest's own `-m` parser
    except ImportError:
        return None
    return not Expression.compile(config.getoption("markexpr")).evaluate(lambda name, **kwargs: name == "slow") or None


def transformers_test_suite() -> Path:
    """A folder holding the `tests/` of the installed transformers version's source archive (its sdist on PyPI) as the
    package `transformers_tests` (put the folder on `sys.path` to import it). The archive is downloaded with pip
    once and its `tests/` kept in the cache (`$LAYOUTLM_ROIALIGN_CACHE`, default ~/.cache/layoutlm-roialign).

    Raises:
        RuntimeError: saying why, when the archive cannot be had (no network, no such release, pip failed).
    """
    import transformers

    version = transformers.__version__
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "layoutlm-roialign")
    root = cache / f"transformers-{version}-tests"
    if (root / TRANSFORMERS_TESTS_PACKAGE / "test_modeling_common.py").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        try:
            pip = subprocess.run(
                [*command, "--dest", tmp, f"transformers=={version}"], capture_output=True, text=True, timeout=600
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(
                f"pip download of transformers=={version}'s source archive took over 10 minutes"
            ) from err
        archives = list(Path(tmp).glob("transformers-*.tar.gz"))
        if pip.returncode != 0 or not archives:
            reason = (pip.stderr.strip().splitlines() or ["no archive"])[-1]
            raise RuntimeError(f"transformers=={version}'s source archive could not be downloaded: {reason}")
        extracted = Path(tmp) / "extracted"
        with tarfile.open(archives[0]) as archive:
            prefix = f"{archives[0].name[: -len('.tar.gz')]}/tests/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = f"{TRANSFORMERS_TESTS_PACKAGE}/{member.name[len(prefix) :]}"
            archive.extractall(extracted, members=members, filter="data")
        package = extracted / TRANSFORMERS_TESTS_PACKAGE
        if not (package / "test_modeling_common.py").is_file():
            raise RuntimeError(f"transformers=={version}'s source archive has no tests/test_modeling_common.py")
        (package / "__init__.py").touch()  # the archive's tests/ is a folder; its modules import each other relatively
        try:
            extracted.rename(root)  # whole or not at all; a concurrent run may have put it there first
        except OSError:
            if not (root / TRANSFORMERS_TESTS_PACKAGE / "test_modeling_common.py").is_file():
                raise
    return root


@pytest.fixture(scope="session")
def funsd_train() -> Path:
    """FUNSD's training split: `$LAYOUTLM_ROIALIGN_FUNSD`, else `../shared/data/funsd/training_data` beside the
    repository (the benchmark and experiment scripts read the same variable and default). A test that asks for it
    skips, saying where it looked, when the folder is not there."""
    folder = Path(os.environ.get(FUNSD_ENV) or FUNSD_DEFAULT)
    if not (folder / "annotations").is_dir() or not (folder / "images").is_dir():
        pytest.skip(f"FUNSD training split not found at {folder} (set {FUNSD_ENV} to FUNSD's training_data folder)")
    return folder


@pytest.fixture
def config() -> LayoutLMRoIAlignConfig:
    return tiny_config()


@pytest.fixture
def batch() -> dict:
    return random_batch()


def make_funsd_release_root(root: Path, train_pages: int = 5, test_pages: int = 2) -> Path:
    """A tiny stand-in for FUNSD's release root: `training_data/` and `testing_data/`, each with `annotations/*.json`
    (FUNSD's format, pixel boxes) and `images/*.png` (blank pages), every entity type on every page."""
    import json

    import PIL.Image

    entities = [("header", ["FORM"]), ("question", ["Date:"]), ("answer", ["1998", "May"]), ("other", ["x"])]
    for split, count in (("training_data", train_pages), ("testing_data", test_pages)):
        (root / split / "annotations").mkdir(parents=True)
        (root / split / "images").mkdir()
        for page in range(count):
            form, y = [], 10
            for e, (label, words) in enumerate(entities):
                boxes = [[10 + 60 * i, y, 60 + 60 * i, y + 20] for i in range(len(words))]
                form.append(
                    {
                        "id": e,
                        "label": label,
                        "words": [{"text": w, "box": b} for w, b in zip(words, boxes, strict=True)],
                    }
                )
                y += 30
            name = f"{split[:4]}{page:04d}"
            (root / split / "annotations" / f"{name}.json").write_text(json.dumps({"form": form}))
            PIL.Image.new("RGB", (200, 150), "white").save(root / split / "images" / f"{name}.png")
    return root


def label_synthetic_pages(folder: Path, num_pages: int = 3) -> dict[str, Path]:
    """Synthetic forms (a `save_to_disk` folder with word columns, so no OCR is needed) labelled by scripts/label.py
    with a tiny linking checkpoint that finds questions and answers by turns and links them (threshold 0.05).
    Returns the paths: `pages`, `checkpoint`, `records` (the labeller's JSON Lines)."""
    import runpy

    from layoutlm_roialign import LayoutLMRoIAlignForRelationExtraction
    from layoutlm_roialign.data import FUNSD_LABELS, generate_synthetic_forms
    from layoutlm_roialign.model_factory import build_model_and_processor

    pages = generate_synthetic_forms(num_pages=num_pages, seed=0)
    pages.save_to_disk(str(folder / "pages"))
    torch.manual_seed(0)
    vocabulary = sorted({w for words in pages["words"] for w in words})
    token_model, processor = build_model_and_processor(FUNSD_LABELS, [vocabulary], **TINY_TRAINING_MODEL)
    token_model.config.link_threshold = 0.05
    model = LayoutLMRoIAlignForRelationExtraction(token_model.config)
    with torch.no_grad():  # B-QUESTION and B-ANSWER by turns, whatever the word
        model.classifier.weight.normal_(std=0.5)
        model.classifier.bias.copy_(torch.tensor([-9.0, -9.0, -9.0, 3.0, -9.0, 3.0, -9.0]))
    model.save_pretrained(folder / "checkpoint")
    processor.save_pretrained(folder / "checkpoint")
    main = runpy.run_path(str(REPO_ROOT / "scripts" / "label.py"), run_name="script")["main"]
    main(["--model", str(folder / "checkpoint"), "--quiet", "--num_workers", "0", "--dataset", str(folder / "pages"),
          "--words_column", "words", "--boxes_column", "bboxes", "--output", str(folder / "labels.jsonl")])  # fmt: skip
    return {"pages": folder / "pages", "checkpoint": folder / "checkpoint", "records": folder / "labels.jsonl"}


def accept_predictions(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after a reviewer accepts every prediction as it is (ids numbered as the server
    numbers them)."""
    return [{**task, "id": n, "annotations": [{"id": n, "result": task["predictions"][0]["result"],
                                               "was_cancelled": False}]} for n, task in enumerate(tasks, start=1)]  # fmt: skip


def assert_same_entities_and_pairs(rows, records) -> None:
    """Every record's entities (label, words, inside their box) and pairs are the imported row's."""
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        order = []
        for entity in row["entities"]:
            words = [row["words"][i] for i in entity["word_indices"]]
            found = [
                i for i, e in enumerate(record["entities"])
                if (e["label"], e["text"].split()) == (entity["label"], words) and i not in order
                and all(e["box"][0] <= row["bboxes"][w][0] and row["bboxes"][w][2] <= e["box"][2]
                        for w in entity["word_indices"])
            ]  # fmt: skip
            assert found, (record["source"], record["page"], words)
            order.append(found[0])
        assert sorted(order) == list(range(len(record["entities"])))
        pairs = sorted([order[a], order[b]] for a, b in row["links"])
        assert pairs == sorted([p["key"]["entity"], p["value"]["entity"]] for p in record["pairs"])


def write_bilevel_png(path: Path, side: int = 20000) -> Path:
    """A white `side` x `side` 1-bit PNG written row by row (a few KB on disk, never held in memory): a page past
    PIL's decompression-bomb limit (2 x `PIL.Image.MAX_IMAGE_PIXELS`, 179 MP by default) at 20000."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte "none", then white pixels
    rows = [deflate.compress(row * min(1000, side - start)) for start in range(0, side, 1000)]
    pixels = b"".join(rows) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path
