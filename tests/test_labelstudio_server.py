"""The Label Studio loop against a real Label Studio server: a project created with the generated configuration
through `label-studio-sdk`, the labeller's pre-annotated tasks imported, their predictions accepted as annotations
(as a reviewer would), the project exported, a tiny model trained one epoch on the export and evaluated.

The server runs from its own environment (`label-studio` pulls in Django and pins versions this package's
environment does not share): `$LABEL_STUDIO_BIN`, else `label-studio` on the PATH, else `.lsvenv/bin/label-studio`
in the repository. The SDK calls run in that environment's Python, which has `label-studio-sdk` (a dependency of
`label-studio`). The server listens on a free port of 127.0.0.1 with a temporary data folder and the API token of
`$LABEL_STUDIO_USER_TOKEN` (made up when unset), and is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, assert_same_entities_and_pairs, label_synthetic_pages

from layoutlm_roialign.data.labelstudio import load_labelstudio_export
from layoutlm_roialign.labelling import read_complete

pytestmark = pytest.mark.slow

SDK_DRIVER = """
import json, sys
from label_studio_sdk import LabelStudio

url, token, config, tasks, out = sys.argv[1:]
ls = LabelStudio(base_url=url, api_key=token)
project = ls.projects.create(title="layoutlm-roialign loop", label_config=open(config).read())
ls.projects.import_tasks(id=project.id, request=json.load(open(tasks)))
accepted = 0
for task in ls.tasks.list(project=project.id, fields="all"):
    prediction = task.predictions[0]
    result = prediction["result"] if isinstance(prediction, dict) else prediction.result
    ls.annotations.create(id=task.id, result=result, was_cancelled=False)  # the reviewer accepts the prediction
    accepted += 1
data = b"".join(ls.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
open(out, "wb").write(data)
print(json.dumps({"project": project.id, "accepted": accepted}))
"""


def label_studio_executable() -> str | None:
    candidates = [os.environ.get("LABEL_STUDIO_BIN"), shutil.which("label-studio"),
                  str(REPO_ROOT / ".lsvenv" / "bin" / "label-studio")]  # fmt: skip
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, token: str, server: subprocess.Popen, log: Path, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"label-studio exited with {server.returncode}: {log.read_text()[-3000:]}")
        request = urllib.request.Request(f"{url}/api/projects", headers={"Authorization": f"Token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"label-studio did not answer within {limit} s: {log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server and every process it started (its own process group), waiting a bounded time."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def label_studio(tmp_path):
    """A running Label Studio server: `(url, token, python with the SDK)`."""
    executable = label_studio_executable()
    if executable is None:
        pytest.skip("label-studio not found (set LABEL_STUDIO_BIN, or pip install label-studio in its own venv)")
    python = Path(executable).parent / "python"
    if subprocess.run([str(python), "-c", "import label_studio_sdk"], capture_output=True).returncode != 0:
        pytest.skip(f"label-studio-sdk is not importable by {python}, the server's Python")
    token = os.environ.get("LABEL_STUDIO_USER_TOKEN") or secrets.token_hex(20)
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "loop@example.com", "LABEL_STUDIO_PASSWORD": secrets.token_hex(8),
           "LABEL_STUDIO_USER_TOKEN": token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}  # fmt: skip
    log = tmp_path / "label-studio.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [executable, "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1",
             "--data-dir", str(tmp_path / "ls-data")],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, token, server, log)
        yield url, token, python
    finally:
        stop(server)
    assert server.poll() is not None


def script(name: str):
    return runpy.run_path(str(REPO_ROOT / "scripts" / f"{name}.py"), run_name="script")["main"]


def test_pre_annotate_accept_export_train_and_evaluate_through_a_real_server(label_studio, tmp_path):
    url, token, python = label_studio
    labelled = label_synthetic_pages(tmp_path, num_pages=4)
    records = sorted(read_complete(labelled["records"]), key=lambda r: r["page"])
    checkpoint = str(labelled["checkpoint"])
    script("labelstudio")(["config", "--model", checkpoint, "--output", str(tmp_path / "config.xml")])
    summary = script("labelstudio")(
        ["export", "--model", checkpoint, "--records", str(labelled["records"]), "--image_root", str(tmp_path),
         "--image_root_url", "/data/local-files/?d=", "--render_dir", str(tmp_path / "png"),
         "--output", str(tmp_path / "tasks.json")]
    )  # fmt: skip
    assert summary["tasks"] == 4 and summary["regions"] > 10 and summary["relations"] > 0
    driven = subprocess.run(
        [str(python), "-c", SDK_DRIVER, url, token, str(tmp_path / "config.xml"), str(tmp_path / "tasks.json"),
         str(tmp_path / "export.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert driven.returncode == 0, driven.stderr[-3000:]
    assert json.loads(driven.stdout.strip().splitlines()[-1])["accepted"] == 4
    exported = sorted(json.loads((tmp_path / "export.json").read_text()), key=lambda t: t["data"]["image"])
    assert [t["data"]["layoutlm_roialign"]["page"] for t in exported] == [1, 2, 3, 4]
    rows = load_labelstudio_export(tmp_path / "export.json", images_dir=tmp_path, page_words_from="text")
    by_id = {str(t["id"]): t["data"]["layoutlm_roialign"]["page"] for t in exported}
    rows = rows.select(sorted(range(len(rows)), key=lambda i: by_id[rows[i]["id"]]))
    assert_same_entities_and_pairs(rows, records)  # every region and relation survived the trip

    data = ["--dataset", str(tmp_path / "export.json"), "--images_dir", str(tmp_path), "--page_words_from", "text",
            "--validation_size", "1", "--max_length", "64", "--stride", "16"]  # fmt: skip
    tiny = ["--backbone", "resnet18", "--image_size", "64", "--hidden_size", "32", "--num_hidden_layers", "2",
            "--num_attention_heads", "4", "--intermediate_size", "37"]  # fmt: skip
    result = script("train")(
        [*data, *tiny, "--task", "linking", "--output_dir", str(tmp_path / "run"), "--num_train_epochs", "1",
         "--per_device_train_batch_size", "2", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true"]
    )  # fmt: skip
    report = script("evaluate_checkpoint")(["--model", result["final_dir"], *data])
    assert report["pages"] == 1 and 0 <= report["f1"] <= 1 and "pairs" in report
