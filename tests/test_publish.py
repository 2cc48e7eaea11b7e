"""Publishing a checkpoint with its demo Space (scripts/publish.py, layoutlm_roialign.space), with huggingface_hub's
repository and commit calls intercepted; the card's `model-index` and `datasets` read back by huggingface_hub."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import runpy
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT, tiny_config
from helpers import SCORES  # the card tests' evaluation scores
from huggingface_hub import EvalResult, HfApi, ModelCard, SpaceCard

from layoutlm_roialign import (
    LayoutLMRoIAlignForTokenClassification,
    LayoutLMRoIAlignImageProcessor,
    LayoutLMRoIAlignProcessor,
)
from layoutlm_roialign.data import FUNSD_LABELS
from layoutlm_roialign.hub import write_model_card
from layoutlm_roialign.space import add_space_link, build_space_folder
from layoutlm_roialign.wordpiece import train_wordpiece_tokenizer

LABELS = FUNSD_LABELS
HUB_DATA = {"dataset": "me/forms-data", "name": "me/forms-data", "license": "cc-by-4.0", "train_pages": 40,
            "validation_pages": 10, "split": "validation split of 10 pages held out of the training pages"}  # fmt: skip


class Intercepted:
    """Records `create_repo` and `create_commit` calls (with each file's bytes, read at commit time) instead of
    sending them."""

    def __init__(self, monkeypatch):
        self.repos, self.commits = [], []
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: self.repos.append((repo_id, kw)))

        def create_commit(api, repo_id, operations, **kw):
            files = {}
            for op in operations:
                if isinstance(op.path_or_fileobj, bytes):
                    files[op.path_in_repo] = op.path_or_fileobj
                    continue
                with open(op.path_or_fileobj, "rb") as f:
                    files[op.path_in_repo] = f.read()
            self.commits.append({"repo_id": repo_id, "files": files, **kw})
            return f"https://huggingface.co/{repo_id}/commit/{len(self.commits)}"

        monkeypatch.setattr(HfApi, "create_commit", create_commit)


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny checkpoint folder with its model card, as train.py saves one."""
    tokenizer = train_wordpiece_tokenizer(["date name total amount signature"] * 4, 60)
    config = tiny_config(vocab_size=len(tokenizer), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                         label2id={label: i for i, label in enumerate(LABELS)})  # fmt: skip
    folder = tmp_path / "final"
    LayoutLMRoIAlignForTokenClassification(config).save_pretrained(folder)
    LayoutLMRoIAlignProcessor(LayoutLMRoIAlignImageProcessor(size=config.image_size), tokenizer).save_pretrained(
        folder
    )
    write_model_card(folder, SCORES, HUB_DATA, {"learning rate": 5e-5}, repo_id="me/forms")
    return folder


def publish(*args: str) -> dict:
    return runpy.run_path(str(REPO_ROOT / "scripts" / "publish.py"), run_name="publish")["main"](list(args))


def test_publish_pushes_the_model_and_a_space_running_the_demo_on_it(checkpoint, monkeypatch):
    hub = Intercepted(monkeypatch)
    result = publish(
        "--model", str(checkpoint), "--repo_id", "me/forms", "--space", "me/forms-demo", "--token", "hf_x"
    )

    assert hub.repos == [
        ("me/forms", {"private": None, "exist_ok": True, "repo_type": "model"}),
        ("me/forms-demo", {"repo_type": "space", "space_sdk": "gradio", "private": None, "exist_ok": True}),
    ]
    model, space = hub.commits
    assert model["repo_id"] == "me/forms" and model["repo_type"] == "model"
    assert set(model["files"]) == set(os.listdir(checkpoint))
    assert result["space"] == "https://huggingface.co/spaces/me/forms-demo"

    # The model card links to the Space, once, under its title, and keeps its metadata.
    card = model["files"]["README.md"].decode()
    link = "[me/forms-demo](https://huggingface.co/spaces/me/forms-demo)"
    assert card.count(link) == 1 and card.index("# forms") < card.index(link) < card.index("## Results")
    assert card == (checkpoint / "README.md").read_text()  # the folder's card is the published one
    assert ModelCard(card).data.eval_results[2].metric_value == pytest.approx(0.3333)

    # The Space: the demo's files, its metadata naming the model, the package source beside app.py.
    assert space["repo_id"] == "me/forms-demo" and space["repo_type"] == "space"
    files = space["files"]
    for name in ("app.py", "requirements.txt", "packages.txt"):
        assert files[name] == (REPO_ROOT / "demo" / name).read_bytes()
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and metadata["models"] == ["me/forms"]
    assert metadata["sdk_version"].split(".")[0] == importlib.metadata.version("gradio").split(".")[0]
    package = {name for name in files if name.startswith("layoutlm_roialign/")}
    bundled = ("__init__.py", "inference.py", "pdf_layoutlm_roialign.py", "pages_layoutlm_roialign.py", "data/synthetic.py",
               "modeling_layoutlm_roialign.py")  # fmt: skip
    assert {f"layoutlm_roialign/{n}" for n in bundled} <= package
    assert all(name.endswith(".py") and "__pycache__" not in name for name in package)
    assert files["packages.txt"].decode().split() == ["tesseract-ocr"]


def test_publishing_again_replaces_the_space_link(checkpoint, monkeypatch):
    Intercepted(monkeypatch)
    publish("--model", str(checkpoint), "--repo_id", "me/forms", "--space", "me/old-demo", "--token", "hf_x")
    publish("--model", str(checkpoint), "--repo_id", "me/forms", "--space", "me/new-demo", "--token", "hf_x")
    card = (checkpoint / "README.md").read_text()
    assert "me/new-demo" in card and "me/old-demo" not in card and card.count("Try it in your browser") == 1
    no_title = add_space_link("---\nlicense: mit\n---\nSome text.\n", "me/demo")
    assert no_title.startswith("---\nlicense: mit\n---\n\n**Try it in your browser:** [me/demo]")
    assert ModelCard(no_title).data.license == "mit"


def test_an_unreachable_hub_is_one_line_and_leaves_the_folder_as_it_was(checkpoint, monkeypatch):
    hub = Intercepted(monkeypatch)
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}

    def unreachable(api, repo_id, **kw):
        raise ConnectionError(
            "Failed to resolve 'huggingface.co' ([Errno -3] Temporary failure)\n" + "  at ...\n" * 60
        )

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    with pytest.raises(SystemExit) as exit_info:
        publish("--model", str(checkpoint), "--repo_id", "me/forms", "--space", "me/forms-demo", "--token", "hf_x")
    assert exit_info.value.code == (
        f"publish.py: pushing {checkpoint} to https://huggingface.co/me/forms failed (ConnectionError: Failed to "
        f"resolve 'huggingface.co' ([Errno -3] Temporary failure)); nothing was published, and {checkpoint} is as it "
        "was."
    )  # a message, exit status 1
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before  # the card was not linked to the Space
    assert hub.commits == []

    # The model goes up and the Space does not: the line says so, and the card (here and there) links the Space.
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: unreachable(api, repo_id) if kw.get(
        "repo_type") == "space" else hub.repos.append((repo_id, kw)))  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        publish("--model", str(checkpoint), "--repo_id", "me/forms", "--space", "me/forms-demo", "--token", "hf_x")
    assert exit_info.value.code.startswith(
        "publish.py: pushing the Space https://huggingface.co/spaces/me/forms-demo failed (ConnectionError: "
    ) and exit_info.value.code.endswith("run the same command again to publish the Space.")
    assert "\n" not in exit_info.value.code
    (model,) = hub.commits
    assert model["files"]["README.md"] == (checkpoint / "README.md").read_bytes()
    assert b"spaces/me/forms-demo" in model["files"]["README.md"]


def test_publish_without_a_space_or_with_bad_input(checkpoint, monkeypatch, capsys):
    hub = Intercepted(monkeypatch)
    publish("--model", str(checkpoint), "--repo_id", "me/forms", "--token", "hf_x")
    assert [repo for repo, _ in hub.repos] == ["me/forms"] and "spaces/" not in (checkpoint / "README.md").read_text()
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        publish("--model", str(checkpoint), "--repo_id", "me/forms")
    assert "needs a Hugging Face token" in capsys.readouterr().err
    os.remove(checkpoint / "README.md")
    with pytest.raises(SystemExit):
        publish("--model", str(checkpoint), "--repo_id", "me/forms", "--space", "me/demo", "--token", "hf_x")
    assert "has no README.md" in capsys.readouterr().err
    assert len(hub.commits) == 1


@pytest.mark.parametrize("data", ["hub", "synthetic", "not evaluated"])
def test_model_card_metadata_has_the_evaluation_results_and_hub_datasets(checkpoint, data):
    described = {"hub": HUB_DATA, "synthetic": {"dataset": "synthetic", "name": "synthetic", "license": "apache-2.0",
                 "train_pages": 40}, "not evaluated": HUB_DATA}[data]  # fmt: skip
    scores = None if data == "not evaluated" else SCORES
    card = ModelCard(write_model_card(checkpoint, scores, described, {}, repo_id="me/forms").read_text())
    if scores is None:
        assert card.data.eval_results is None and "model-index" not in card.content
        return
    expected_type = "me/forms-data" if data == "hub" else "synthetic"
    assert card.data.datasets == (["me/forms-data"] if data == "hub" else None)
    assert card.data.model_name == "forms"
    results = card.data.eval_results
    assert [(r.metric_type, r.metric_value) for r in results] == [
        ("precision", 0.5),
        ("recall", 0.25),
        ("f1", 0.3333),
        ("accuracy", 0.75),
    ]
    assert all(isinstance(r, EvalResult) for r in results)
    assert {(r.task_type, r.dataset_type, r.dataset_name, r.dataset_split) for r in results} == {
        ("token-classification", expected_type, described["name"], "validation")
    }
    # The card's other metadata survives (library, pipeline, licence, custom_code tag)
    assert card.data.library_name == "transformers" and "custom_code" in card.data.tags


def test_the_space_folder_runs_its_own_copy_of_the_package_and_requires_what_it_imports(checkpoint, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs gradio (the `demo` extra)")
    space = build_space_folder(tmp_path / "space", str(checkpoint))
    assert SpaceCard.load(space / "README.md").data.models == [str(checkpoint)]
    # In the Space's folder, `import app` finds the uploaded package (not this checkout's) and the README's model.
    code = (
        "import json, sys; import app, layoutlm_roialign; app.Labeller(app.resolve_model_id())\n"
        "app.write_examples('examples', count=1)\n"
        "mods = {n: getattr(m, '__file__', None) for n, m in list(sys.modules.items())}\n"
        "print(json.dumps({'package': layoutlm_roialign.__file__, 'model': app.resolve_model_id(), "
        "'files': sorted({f for f in mods.values() if f and f.startswith(sys.argv[1])})}))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("MODEL_ID", None)
    run = subprocess.run([sys.executable, "-c", code, str(space)], cwd=space, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["package"] == str(space / "layoutlm_roialign" / "__init__.py")
    assert loaded["model"] == str(checkpoint)

    # Every third-party module that the loaded files import is in requirements.txt (gradio comes with the SDK).
    required = {re.split(r"[<>=!~\[ ]", line.strip())[0].lower().replace("_", "-")
                for line in (space / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")}  # fmt: skip
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for file in loaded["files"]:
        for node in ast.walk(ast.parse(open(file).read())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"app", "layoutlm_roialign", "__future__"}
    # Imported lazily on roads the demo does not take: ONNX Runtime runs only `runtime="onnx"` (an export).
    third_party -= {"onnxruntime"}
    missing = {
        name: distributions.get(name)
        for name in third_party
        if not {d.lower().replace("_", "-") for d in distributions.get(name, [name])} & (required | {"gradio"})
    }
    assert not missing, f"imported by the Space but not in demo/requirements.txt: {missing}"
    assert {"torch", "transformers", "pypdfium2", "PIL", "datasets"} <= third_party
