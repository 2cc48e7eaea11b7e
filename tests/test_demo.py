"""The Gradio demo (demo/app.py): its functions without a browser (pages, PDFs, bad input -> a message, the JSON
download, key-value pairs), and the whole app in headless Chromium (marked slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import PIL.Image
import pytest
from conftest import REPO_ROOT, save_tiny_checkpoint

pytest.importorskip("gradio", reason="the demo needs gradio (the `demo` extra)")

from layoutlm_roialign.data import FUNSD_LABELS, render_synthetic_form  # noqa: E402

APP = REPO_ROOT / "demo" / "app.py"


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location("demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny untrained checkpoint with its processor and code, as `save_pretrained` writes one (128 positions:
    a synthetic form takes more than one window)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("demo") / "tiny")


@pytest.fixture(scope="module")
def labeller(app, checkpoint):
    return app.Labeller(str(checkpoint))


@pytest.fixture
def form(tmp_path):
    """A synthetic form as a PNG with its words JSON, and the words."""
    image, words, boxes, _ = render_synthetic_form(seed=7, index=2)
    image.save(tmp_path / "form.png")
    (tmp_path / "form.words.json").write_text(json.dumps({"words": words, "boxes": boxes}))
    return tmp_path / "form.png", tmp_path / "form.words.json", words


def test_a_form_with_its_words_gives_tables_a_picture_and_the_json(app, labeller, form, tmp_path):
    png, words_json, words = form
    result = app.analyse(labeller, str(png), 1, str(words_json), tmp_path)
    assert result["status"].startswith(f"{len(words)} words from the words file")
    assert [row[1] for row in result["words"]] == words
    assert [row[0] for row in result["words"]] == list(range(1, len(words) + 1))
    assert all(row[2] in FUNSD_LABELS and 0 <= row[3] <= 1 for row in result["words"])
    page = PIL.Image.open(png)
    assert result["picture"].height == page.height and result["picture"].width > page.width  # the legend panel
    assert not result["has_pairs"] and result["pairs"] == []
    saved = json.loads(open(result["json"]).read())
    assert os.path.dirname(os.path.dirname(result["json"])) == str(tmp_path)
    assert os.path.basename(result["json"]) == "form.prediction.json"
    assert saved["model"] == str(labeller.model_id) and saved["file"] == "form.png" and saved["page"] == 1
    assert [w["text"] for w in saved["words"]] == words
    assert [[w["label"], round(w["score"], 3)] for w in saved["words"]] == [row[2:4] for row in result["words"]]
    assert [[e["label"], e["text"]] for e in saved["entities"]] == [row[:2] for row in result["entities"]]


def test_a_words_files_pixel_boxes_fit_a_page_shrunk_for_its_size(app, labeller, tmp_path, monkeypatch):
    """A page over the pixel budget is shrunk when read; a words file's `pixel_boxes` are the file's own pixels, and
    the words get the boxes the page reader gives them on the full page."""
    import layoutlm_roialign.pages_layoutlm_roialign as pages

    image, words, boxes, _ = render_synthetic_form(seed=7, index=2)
    w, h = image.size
    image.save(tmp_path / "big.png")
    pixel_boxes = [[b[0] * w / 1000, b[1] * h / 1000, b[2] * w / 1000, b[3] * h / 1000] for b in boxes]
    (tmp_path / "big.words.json").write_text(json.dumps({"words": words, "pixel_boxes": pixel_boxes}))
    expected = pages.read_page(image, 1, words, pixel_boxes=pixel_boxes)["boxes"]  # the full page, unshrunk
    monkeypatch.setattr(pages, "MAX_PAGE_PIXELS", w * h // 3)  # the page is read at half its size
    result = app.analyse(labeller, str(tmp_path / "big.png"), 1, str(tmp_path / "big.words.json"), tmp_path)
    assert result["status"].startswith(f"{len(words)} words from the words file"), result["status"]
    assert result["picture"].height == math.ceil(h / 2)
    assert [row[4] for row in result["words"]] == [" ".join(map(str, box)) for box in expected]
    assert np.abs(np.array(expected) - np.array(boxes)).max() <= 1
    (tmp_path / "off.json").write_text(json.dumps({"words": ["a"], "pixel_boxes": [[0, 0, w + 50, 10]]}))
    result = app.analyse(labeller, str(tmp_path / "big.png"), 1, str(tmp_path / "off.json"), tmp_path)
    assert result["status"].startswith("The words file off.json cannot be used: "), result["status"]
    assert "`pixel_boxes`" in result["status"] and result["json"] is None


def test_a_pdf_page_is_read_from_its_text_layer(app, labeller, tmp_path):
    pytest.importorskip("pypdfium2")
    from layoutlm_roialign.pdf_layoutlm_roialign import write_pdf

    image, words, boxes, _ = render_synthetic_form(seed=7, index=3)
    w, h = image.size
    write_pdf(tmp_path / "form.pdf", image, words, [[b[0] * w / 1000, b[1] * h / 1000, b[2] * w / 1000, b[3] * h / 1000] for b in boxes], dpi=72)  # fmt: skip
    assert app.pdf_pages(str(tmp_path / "form.pdf")) == 1 and app.pdf_pages(None) == 0
    result = app.analyse(labeller, str(tmp_path / "form.pdf"), 1, None, tmp_path)
    assert "from the PDF's text layer" in result["status"]
    assert [row[1] for row in result["words"]] == words
    assert os.path.basename(result["json"]) == "form.page1.prediction.json"
    # rendered at 150 dpi: the picture is the page at that size (plus the legend)
    assert result["picture"].height == math.ceil(h * 150 / 72)
    missing = app.analyse(labeller, str(tmp_path / "form.pdf"), 3, None, tmp_path)
    assert missing["status"] == "form.pdf has 1 page(s): choose a page from 1 to 1." and missing["picture"] is None


def test_the_page_picker_chooses_a_page_of_a_longer_pdf(app, labeller, tmp_path):
    pypdfium2 = pytest.importorskip("pypdfium2")
    from layoutlm_roialign.pdf_layoutlm_roialign import write_pdf

    pages = []
    for index in range(2):
        image, words, boxes, _ = render_synthetic_form(seed=8, index=index)
        w, h = image.size
        write_pdf(tmp_path / f"{index}.pdf", image, words, [[b[0] * w / 1000, b[1] * h / 1000, b[2] * w / 1000, b[3] * h / 1000] for b in boxes], dpi=72)  # fmt: skip
        pages.append(words)
    document = pypdfium2.PdfDocument(str(tmp_path / "0.pdf"))
    document.import_pages(pypdfium2.PdfDocument(str(tmp_path / "1.pdf")))
    document.save(str(tmp_path / "two.pdf"))
    assert app.pdf_pages(str(tmp_path / "two.pdf")) == 2
    for number in (1, 2):
        result = app.analyse(labeller, str(tmp_path / "two.pdf"), number, None, tmp_path)
        assert [row[1] for row in result["words"]] == pages[number - 1]
        assert os.path.basename(result["json"]) == f"two.page{number}.prediction.json"


def test_page_numbers_are_checked_and_an_image_files_pages_are_its_frames(app, labeller, form, tmp_path):
    """Page 0 was read as page 1, and an image file's page number was ignored but written into the JSON."""
    png, words_json, _ = form
    for number in (0, -1):
        result = app.analyse(labeller, str(png), number, str(words_json), tmp_path)
        assert result["status"] == f"Pages count from 1: choose page 1 or more of form.png, not {number}."
        assert result["json"] is None
    result = app.analyse(labeller, str(png), 99, str(words_json), tmp_path)
    assert result["status"] == "form.png has 1 page(s): choose a page from 1 to 1." and result["json"] is None

    # A two-page TIFF: page 2 is its second frame, and the JSON says page 2.
    first, second = PIL.Image.open(png).convert("RGB"), PIL.Image.new("RGB", (300, 200), "white")
    second.paste(0, (20, 20, 200, 40))
    first.save(tmp_path / "two.tif", save_all=True, append_images=[second])
    boxes = {"words": ["bar"], "boxes": [[60, 90, 670, 210]]}
    (tmp_path / "bar.json").write_text(json.dumps(boxes))
    result = app.analyse(labeller, str(tmp_path / "two.tif"), 2, str(tmp_path / "bar.json"), tmp_path)
    assert result["picture"].height == 200, result["status"]
    saved = json.loads(open(result["json"]).read())
    assert saved["page"] == 2 and os.path.basename(result["json"]) == "two.page2.prediction.json"
    result = app.analyse(labeller, str(tmp_path / "two.tif"), 3, str(tmp_path / "bar.json"), tmp_path)
    assert result["status"] == "two.tif has 2 page(s): choose a page from 1 to 2."


def _bad_inputs(tmp_path):
    blank = tmp_path / "blank.png"
    PIL.Image.new("RGB", (300, 400), "white").save(blank)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    broken_pdf = tmp_path / "broken.pdf"
    broken_pdf.write_bytes(b"%PDF-1.7\nnothing else")
    page = PIL.Image.new("RGB", (300, 400), "white")
    page.paste(0, (40, 40, 200, 60))
    page.save(tmp_path / "page.png")
    (tmp_path / "none.json").write_text(json.dumps({"words": [], "boxes": []}))
    (tmp_path / "one.json").write_text(json.dumps({"words": ["a"], "boxes": [[100, 100, 200, 150]]}))
    (tmp_path / "wrong.json").write_text(json.dumps({"words": ["a", "b"], "boxes": [[0, 0, 10, 10]]}))
    return {
        "empty page": ((blank, tmp_path / "one.json"), "The page of blank.png is empty"),  # words given: no OCR
        "unreadable file": (
            (text, None),
            "notes.png cannot be read as a page image (PNG, JPEG, TIFF, ...) or a PDF: ",
        ),
        "damaged PDF": ((broken_pdf, None), "broken.pdf cannot be read as a PDF"),
        "no words": ((tmp_path / "page.png", tmp_path / "none.json"), "No words were found on this page"),
        "bad words file": (
            (tmp_path / "page.png", tmp_path / "wrong.json"),
            "The words file wrong.json cannot be used",
        ),
    }


@pytest.mark.parametrize("case", ["empty page", "unreadable file", "damaged PDF", "no words", "bad words file"])
def test_bad_input_gives_a_message_not_a_traceback(app, labeller, tmp_path, case):
    if case == "damaged PDF":
        pytest.importorskip("pypdfium2")
    (path, words), message = _bad_inputs(tmp_path)[case]
    result = app.analyse(labeller, str(path), 1, str(words) if words else None, tmp_path)
    assert result["status"].startswith(message), result["status"]
    assert result["picture"] is None and result["words"] == [] and result["json"] is None
    assert app.analyse(labeller, None, 1, None)["status"].startswith("Upload a page image or a PDF")


def test_missing_ocr_and_unexpected_errors_give_a_message(app, labeller, form, monkeypatch, tmp_path):
    png, words_json, _ = form

    def no_ocr(*args, **kwargs):
        raise ImportError("OCR (`apply_ocr=True`) needs pytesseract and Tesseract")

    import layoutlm_roialign.pages_layoutlm_roialign

    monkeypatch.setattr(layoutlm_roialign.pages_layoutlm_roialign, "apply_tesseract", no_ocr)
    result = app.analyse(labeller, str(png), 1, None, tmp_path)
    assert result["status"].startswith("Reading the words needs OCR, which is not available here")
    monkeypatch.undo()
    monkeypatch.setattr(app, "predict_page", lambda *a, **k: 1 / 0)
    result = app.analyse(labeller, str(png), 1, str(words_json), tmp_path)  # words given: fails in the model
    assert result["status"] == "Labelling failed (ZeroDivisionError: division by zero)." and result["picture"] is None


@pytest.mark.skipif(
    not shutil.which("tesseract"), reason="OCR needs the tesseract binary (apt-get install tesseract-ocr)"
)
def test_a_page_image_alone_is_read_by_ocr(app, labeller, form, tmp_path):
    png, _, words = form
    result = app.analyse(labeller, str(png), 1, None, tmp_path)
    assert " words from OCR, " in result["status"], result["status"]
    read = [row[1] for row in result["words"]]
    # Tesseract misses some words (on the shaded header bands, for one): at least half of them are read.
    assert len(set(read) & set(words)) >= 0.5 * len(set(words)), (read, words)


def test_a_checkpoint_that_cannot_be_loaded_stops_the_app_with_a_message(app, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        app.main(["--model", str(tmp_path / "no-such-run" / "final")])


def test_pairs_are_listed_and_drawn_when_the_prediction_has_them(app, labeller, form, monkeypatch, tmp_path):
    png, words_json, _ = form
    predict_page = app.predict_page

    def with_pairs(*args, **kwargs):  # what a linking checkpoint adds: key -> value, by entity index or as an entity
        prediction = predict_page(*args, **kwargs)
        prediction["entities"] = [
            {"label": "QUESTION", "text": "date:", "word_indices": [0], "box": [100, 100, 200, 120], "score": 0.9,
             "pixel_box": [50.0, 60.0, 100.0, 70.0]},
            {"label": "ANSWER", "text": "1998", "word_indices": [1], "box": [300, 100, 400, 120], "score": 0.8,
             "pixel_box": [150.0, 60.0, 200.0, 70.0]},
        ]  # fmt: skip
        prediction["pairs"] = [
            {"key": 0, "value": 1, "score": 0.75},
            {
                "key": {"text": "total", "box": [100, 500, 200, 520]},
                "value": {"text": "12", "box": [300, 500, 400, 520]},
            },
        ]
        return prediction

    monkeypatch.setattr(app, "predict_page", with_pairs)
    result = app.analyse(labeller, str(png), 1, str(words_json), tmp_path)
    assert result["has_pairs"] and result["status"].endswith(", 2 pairs.")
    assert result["pairs"] == [["date:", "1998", 0.75], ["total", "12", 1.0]]
    assert json.loads(open(result["json"]).read())["pairs"][0] == {"key": 0, "value": 1, "score": 0.75}
    arrow = np.asarray(result["picture"])[65, 110:140]  # the arrow's line between the two boxes' centres
    assert (np.abs(arrow.astype(int) - (230, 120, 0)).sum(-1) < 30).all()


def test_model_id_comes_from_the_argument_the_environment_or_the_space_readme(app, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("---\ntitle: demo\nsdk: gradio\nmodels:\n- me/forms\n---\n# demo\n")
    monkeypatch.delenv(app.MODEL_ENV, raising=False)
    assert app.resolve_model_id(None, readme) == "me/forms"
    monkeypatch.setenv(app.MODEL_ENV, "me/other")
    assert app.resolve_model_id(None, readme) == "me/other"
    assert app.resolve_model_id("runs/x/final", readme) == "runs/x/final"
    monkeypatch.delenv(app.MODEL_ENV)
    with pytest.raises(SystemExit, match="pass --model"):
        app.resolve_model_id(None, tmp_path / "missing.md")


def test_examples_are_synthetic_forms_with_their_words(app, labeller, tmp_path):
    rows = app.write_examples(tmp_path / "examples", count=2)
    assert [os.path.basename(r[0]) for r in rows[:2]] == ["synthetic_form_1.png", "synthetic_form_2.png"]
    words = json.loads(open(rows[0][2]).read())["words"]
    assert words == render_synthetic_form(seed=app.EXAMPLE_SEED, index=0)[1]
    if importlib.util.find_spec("pypdfium2"):
        assert rows[2][0].endswith("synthetic_form.pdf") and rows[2][2] is None
        result = app.analyse(labeller, rows[2][0], 1, None, tmp_path)
        assert [row[1] for row in result["words"]] == render_synthetic_form(seed=app.EXAMPLE_SEED, index=2)[1]


# ------------------------------------------------------------------------------------------ in a real browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_app_in_headless_chromium(checkpoint, form, tmp_path):
    if not os.path.exists(CHROMIUM) or not CHROMEDRIVER:
        pytest.skip("needs Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

    png, words_json, words = form
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}  # fmt: skip
    log = open(tmp_path / "app.log", "w")
    server = subprocess.Popen(
        [sys.executable, str(APP), "--model", str(checkpoint), "--host", "127.0.0.1", "--port", str(port),
         "--examples_dir", str(tmp_path / "examples")],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    driver = None
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"the app did not start:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
                time.sleep(1)

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'chrome'}"):  # fmt: skip
            options.add_argument(flag)
        # The driver's path is given, so Selenium Manager never tries to download one.
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
        driver.get(url)
        _use_the_app(driver, png, words_json, words, tmp_path)
        assert "Traceback" not in (tmp_path / "app.log").read_text()
    except Exception:
        if driver is not None:  # what the browser showed, for the failure report
            driver.save_screenshot(str(tmp_path / "failure.png"))
            print(
                f"failure screenshot: {tmp_path / 'failure.png'}\n{driver.find_element('tag name', 'body').text[:3000]}"
            )
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _text(driver, elem_id: str) -> str:
    """The visible text of the element `elem_id`, without white space."""
    return "".join(driver.find_element("id", elem_id).text.split())


def _use_the_app(driver, png, words_json, words, tmp_path) -> None:
    """Upload the form and its words, click, wait for the result; check the words table and the picture."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 120)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#form-file input[type=file]")))
    driver.find_element(By.CSS_SELECTOR, "#form-file input[type=file]").send_keys(str(png))
    driver.find_element(By.CSS_SELECTOR, "#words-file input[type=file]").send_keys(str(words_json))
    # the uploads have landed when both file names are listed (Gradio shows the stem and the suffix apart)
    wait.until(lambda d: "form.png" in _text(d, "form-file"))
    wait.until(lambda d: "form.words.json" in _text(d, "words-file"))
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    wait.until(lambda d: "wordsfromthewordsfile" in _text(d, "status"))
    # the words table lists the page's words, in order, one cell each (rows beyond the view may not be rendered)
    cells = driver.find_element(By.ID, "words").text.splitlines()
    rows = cells[cells.index("box (0-1000)") + 1 :]  # after the header: #, word, label, score, box per row
    shown = rows[1::5]
    assert len(shown) >= min(20, len(words)) and shown == words[: len(shown)], cells[:60]
    assert rows[0::5][: len(shown)] == [str(i) for i in range(1, len(shown) + 1)]
    image = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#picture img")))
    wait.until(lambda d: image.get_attribute("naturalWidth") not in (None, "0"))
    assert int(image.get_attribute("naturalWidth")) > PIL.Image.open(png).width  # the page plus the legend
    assert "form.prediction.json" in _text(driver, "download")
    driver.save_screenshot(str(tmp_path / "demo.png"))
    print(f"screenshot: {tmp_path / 'demo.png'}")

    # An example form is one click away: clicking its row labels it.
    example = render_synthetic_form(seed=12345, index=1)[1]
    assert example[:3] != words[:3]
    driver.find_element(By.XPATH, "//*[normalize-space(text())='synthetic_form_2.png']").click()

    def first_words(d) -> list[str]:
        cells = d.find_element(By.ID, "words").text.splitlines()
        return cells[cells.index("box (0-1000)") + 1 :][1::5][:3]

    wait.until(lambda d: first_words(d) == example[:3])
    assert f"{len(example)}wordsfromthewordsfile" in _text(driver, "status")


def test_a_checkpoint_that_does_not_label_words_is_refused_at_start(app, tmp_path, monkeypatch):
    """A masked-LM (pre-training) checkpoint started the demo, and every click then failed: the demo refuses it at
    start, naming its architecture and the kinds that label words."""
    from layoutlm_roialign import LayoutLMRoIAlignForMaskedLM

    folder = save_tiny_checkpoint(tmp_path / "mlm", LayoutLMRoIAlignForMaskedLM)
    message = (
        "is a LayoutLMRoIAlignForMaskedLM checkpoint, which does not label words.*token-classification or linking"
    )
    with pytest.raises(ValueError, match=message):
        app.Labeller(str(folder))

    def build_demo(*args):
        raise AssertionError("the demo was built for a checkpoint that does not label words")

    monkeypatch.setattr(app, "build_demo", build_demo)
    with pytest.raises(SystemExit, match=message):
        app.main(["--model", str(folder)])
