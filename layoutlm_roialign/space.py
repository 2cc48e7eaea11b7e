"""A Hugging Face Space that runs the demo (`demo/app.py`) on a published checkpoint, and the model card's link to it.

The Space is the `demo/` folder of this repository (a Gradio app with its `requirements.txt`, `packages.txt` and a
README holding the Space's metadata) with two changes made at publication: the README's `models:` names the
checkpoint (the app serves the first entry; the Hub lists the Space on that model's page), and the package's own
source is uploaded beside `app.py` (`layoutlm_roialign/`), because the package is not on PyPI. The model itself runs
its own code from the checkpoint (`trust_remote_code=True`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "find_demo_folder",
    "build_space_folder",
    "push_space",
    "space_url",
    "add_space_link",
    "linked_model_card",
    "link_model_card_to_space",
]

DEMO_FILES = ("app.py", "requirements.txt", "packages.txt")
SPACE_LINK_MARK = "<!-- space-link -->"  # ends the card's link line, so that publishing again replaces it


def find_demo_folder() -> Path:
    """`demo/` at the repository root (a source checkout: the demo is not part of the installed package)."""
    folder = Path(__file__).resolve().parent.parent / "demo"
    if not (folder / "app.py").is_file():
        raise FileNotFoundError(f"{folder} has no app.py: publishing a Space needs a source checkout of the package.")
    return folder


def space_url(space_id: str) -> str:
    return f"https://huggingface.co/spaces/{space_id}"


def build_space_folder(
    destination: str | os.PathLike, model_id: str, demo_folder: str | os.PathLike | None = None
) -> Path:
    """Write the Space's files into `destination`: the demo's files, its README with `models: [model_id]`, and the
    package source (Python files only) under `layoutlm_roialign/`. Returns `destination`."""
    from huggingface_hub import SpaceCard

    demo = Path(demo_folder) if demo_folder is not None else find_demo_folder()
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        shutil.copy(demo / name, destination / name)
    card = SpaceCard.load(demo / "README.md")
    if card.data.get("sdk") != "gradio" or card.data.get("app_file") != "app.py":
        raise ValueError(f"{demo / 'README.md'} must declare `sdk: gradio` and `app_file: app.py`.")
    card.data.models = [model_id]
    card.save(destination / "README.md")
    package = Path(__file__).resolve().parent
    shutil.copytree(
        package,
        destination / package.name,
        ignore=lambda folder, names: (
            [n for n in names if not (n.endswith(".py") or os.path.isdir(Path(folder, n)))] + ["__pycache__"]
        ),
        dirs_exist_ok=True,
    )
    return destination


def push_space(
    space_id: str,
    model_id: str,
    token: str | None = None,
    private: bool | None = None,
    demo_folder: str | os.PathLike | None = None,
) -> Any:
    """Create the Gradio Space `space_id` if needed and upload the demo serving `model_id` (see
    `build_space_folder`) in one commit. Returns the `CommitInfo`."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from .hub import hub_failure

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        build_space_folder(folder, model_id, demo_folder)
        # One commit, as for the model (`upload_folder` may split a folder over several commits, and the Space
        # rebuilds on each): the Space never runs a partial upload.
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        ]
        try:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            return api.create_commit(
                repo_id=space_id, repo_type="space", operations=operations, commit_message=f"Demo of {model_id}"
            )
        except Exception as err:  # noqa: BLE001 (network, token, HTTP errors: one line, not a traceback)
            raise hub_failure(f"pushing the Space {space_url(space_id)}", err) from err


def add_space_link(card: str, space_id: str) -> str:
    """The model card `card` with a line linking to the Space `space_id` under its title (replacing an earlier
    link line), or after the metadata if the card has no title."""
    line = f"**Try it in your browser:** [{space_id}]({space_url(space_id)}) (a Gradio Space). {SPACE_LINK_MARK}"
    if SPACE_LINK_MARK in card:
        return re.sub(rf"^.*{re.escape(SPACE_LINK_MARK)}$", lambda _: line, card, count=1, flags=re.M)
    title = re.search(r"^# .*$", card, flags=re.M)
    if title is None:
        header = re.match(r"^---\n.*?\n---\n", card, flags=re.S)
        at = header.end() if header else 0
        return f"{card[:at]}\n{line}\n{card[at:]}"
    return f"{card[: title.end()]}\n\n{line}{card[title.end() :]}"


def linked_model_card(folder: str | os.PathLike, space_id: str) -> str:
    """`<folder>/README.md`, the model card, with the Space link added (or updated); the file is not changed."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no README.md (model card) to link to the Space.")
    return add_space_link(path.read_text(), space_id)


def link_model_card_to_space(folder: str | os.PathLike, space_id: str) -> Path:
    """Add (or update) the Space link in `<folder>/README.md`, the model card (written whole, then renamed). Returns
    its path."""
    from .outputs import write_files

    card = linked_model_card(folder, space_id).encode("utf-8")
    path = Path(folder) / "README.md"
    write_files({path: lambda f: f.write(card)})
    return path
