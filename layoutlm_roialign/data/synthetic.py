"""Synthetic forms whose labels need the pixels: offline data for the tests and the README's main job.

Each page is rendered with PIL: field lines (a key phrase, often followed by a value on the same line), prose
lines of other text, several fonts, sizes, margins and one- or two-column layouts. A field line is either a
*question* (phrase labelled QUESTION, its value ANSWER) or a section *header* (phrase labelled HEADER, any value
after it O). Both kinds draw their phrases and values from the same pools and the same positions, and their word
boxes are computed from the same font metrics, so words and boxes carry no trace of the difference: only the
look of the page does (a header sits in a shaded band, in reversed or dark-on-grey type). A model that ignores the
pixels can at best guess those lines; one that looks can label them all.

Every page also carries its entities and their links, in FUNSD's form (`render_synthetic_form_with_links`, and the
`entities` / `links` columns of `generate_synthetic_forms`): each question is linked to the answer beside it (a
question without a value has no answer), so the linking task runs offline too.

Pages are deterministic by `(seed, page index)`: the first `n` pages of a larger set equal a set of `n` pages.
"""

from __future__ import annotations

import random
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from datasets import Dataset, DatasetInfo

from ..image_processing_layoutlm_roialign import normalize_box
from .funsd import FUNSD_LABELS, funsd_features

__all__ = ["generate_synthetic_forms", "render_synthetic_form", "render_synthetic_form_with_links"]

FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSerif-Regular.ttf",
)
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation", "/usr/share/fonts/TTF")

PHRASES = (
    "date", "name", "address", "telephone", "fax number", "company", "department", "subject", "to", "from",
    "account number", "invoice number", "total amount", "signature", "remarks", "city", "state", "zip code",
    "brand", "product code", "quantity", "unit price", "order date", "ship to", "bill to", "reference",
    "project title", "budget", "approved by", "distribution", "contact person", "market", "region", "cost center",
    "purchase order", "description", "start date", "end date", "page count", "attention",
)  # fmt: skip
FIRST_NAMES = ("john", "mary", "robert", "linda", "michael", "susan", "david", "karen", "james", "patricia")
LAST_NAMES = ("smith", "johnson", "williams", "brown", "jones", "miller", "davis", "wilson", "anderson", "taylor")
COMPANIES = ("lorillard", "philip morris", "rj reynolds", "brown williamson", "acme corp", "united tobacco")
PLACES = ("new york", "winston salem", "richmond", "greensboro", "louisville", "chicago", "atlanta")
PROSE = (
    "please", "return", "this", "form", "to", "the", "office", "by", "end", "of", "month", "all", "information",
    "is", "confidential", "and", "for", "internal", "use", "only", "see", "attached", "instructions", "copies",
    "must", "be", "signed", "if", "any", "questions", "call", "our", "staff", "thank", "you",
)  # fmt: skip


@cache
def _font_paths() -> tuple[str, ...]:
    found = []
    for name in FONT_FILES:
        for folder in FONT_DIRS:
            path = Path(folder) / name
            if path.is_file():
                found.append(str(path))
                break
    return tuple(found)


@lru_cache(maxsize=64)
def _font(path: str | None, size: int) -> PIL.ImageFont.FreeTypeFont:
    if path is None:  # no system TrueType fonts: Pillow's bundled scalable font
        return PIL.ImageFont.load_default(size=size)
    return PIL.ImageFont.truetype(path, size=size)


def _value(rng: random.Random) -> list[str]:
    kind = rng.randrange(6)
    if kind == 0:
        return [rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)]
    if kind == 1:
        return [f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1985, 2001)}"]
    if kind == 2:
        return [f"${rng.randint(10, 99999):,}.{rng.randint(0, 99):02d}"]
    if kind == 3:
        return rng.choice(COMPANIES).split()
    if kind == 4:
        return rng.choice(PLACES).split() + [str(rng.randint(10000, 99999))]
    return [f"{rng.choice('ABCDEFGHK')}{rng.choice('LMNPRSTX')}-{rng.randint(100, 9999)}"]


def render_synthetic_form(seed: int, index: int) -> tuple[PIL.Image.Image, list[str], list[list[int]], list[str]]:
    """Page `index` of the set `seed`: (greyscale page, words, 0-1000 word boxes, IOB labels)."""
    return render_synthetic_form_with_links(seed, index)[:4]


class _FormPage:
    """A synthetic page being drawn: its look (drawn from `rng` by `__init__`), its canvas, and the words, 0-1000
    boxes, IOB labels, entities and links put on it so far."""

    def __init__(self, rng: random.Random) -> None:
        self.width, self.height = rng.choice(((612, 792), (560, 720), (640, 760), (595, 842)))
        fonts = _font_paths()
        self.font = _font(rng.choice(fonts) if fonts else None, rng.randint(13, 18))
        ascent, descent = self.font.getmetrics()
        self.line_height = ascent + descent
        self.band = int(self.line_height * 0.9)  # a header band reaches this far above and below its line
        self.space = max(3, round(self.font.getlength(" ")))
        self.margin = rng.randint(28, 60)
        self.two_columns = rng.random() < 0.35
        self.column_width = (self.width - 2 * self.margin) // (2 if self.two_columns else 1)
        self.header_style = rng.choice(("reversed", "grey"))
        self.image = PIL.Image.new("L", (self.width, self.height), 255)
        self.draw = PIL.ImageDraw.Draw(self.image)
        self.words: list[str] = []
        self.boxes: list[list[int]] = []
        self.labels: list[str] = []
        self.entities: list[dict] = []
        self.links: list[list[int]] = []

    def put(self, x: float, y: int, text: str, label: str, fill: int) -> float:
        """Draw word `text` at `(x, y)` in grey level `fill`, record it with `label`; returns where the next word
        starts."""
        left, top, right, bottom = self.font.getbbox(text)
        self.draw.text((x, y), text, font=self.font, fill=fill)
        self.words.append(text)
        self.boxes.append(normalize_box([x + left, y + top, x + right, y + bottom], self.width, self.height))
        self.labels.append(label)
        return x + self.font.getlength(text) + self.space

    def put_entity(self, x: float, y: int, tokens: list[str], kind: str | None, fill: int) -> float:
        """Draw `tokens` from `(x, y)` as one entity of type `kind` (`None`: other text, labelled O and not
        recorded as an entity); returns where the next word starts."""
        first = len(self.words)
        for i, token in enumerate(tokens):
            x = self.put(x, y, token, "O" if kind is None else f"{'B' if i == 0 else 'I'}-{kind}", fill)
        if kind is not None:
            members = self.boxes[first:]
            box = [min(b[0] for b in members), min(b[1] for b in members)]
            box += [max(b[2] for b in members), max(b[3] for b in members)]
            indices = list(range(first, len(self.words)))
            self.entities.append({"id": len(self.entities), "label": kind, "word_indices": indices, "box": box})
        return x


def _draw_prose_line(form: _FormPage, rng: random.Random, y: int) -> int:
    """Draw a line of other text (labelled O) at height `y` on `form`; returns the next line's height."""
    x, right = float(form.margin), form.width - form.margin
    for _ in range(rng.randint(4, 12)):
        token = rng.choice(PROSE)
        if x + form.font.getlength(token) > right:
            break
        x = form.put(x, y, token, "O", 0)
    return y + form.line_height + rng.randint(form.line_height // 2, form.line_height + form.band)


def _draw_field_line(form: _FormPage, rng: random.Random, y: int) -> int:
    """Draw a field line at height `y` on `form`: a section header in its band (any value after it O), or one
    question per column, each often followed by its answer and linked to it; returns the next line's height."""
    header = rng.random() < 0.3
    columns = 1 if header or not form.two_columns else 2
    if header:
        dark = 40 if form.header_style == "reversed" else 170
        band = (form.margin - 6, y - form.band, form.width - form.margin + 6, y + form.line_height + form.band)
        form.draw.rectangle(band, fill=dark)
    ink = 255 if header and form.header_style == "reversed" else 0
    for column in range(columns):
        x = float(form.margin + column * form.column_width + rng.randint(0, 12))
        phrase = rng.choice(PHRASES).split()
        if rng.random() < 0.5:
            phrase[-1] += ":"
        x = form.put_entity(x, y, phrase, "HEADER" if header else "QUESTION", ink)
        if rng.random() < 0.65:
            value = _value(rng)
            x += rng.randint(0, 3) * form.space
            column_end = form.margin + (column + 1) * form.column_width
            if x + sum(form.font.getlength(t) + form.space for t in value) < column_end:
                form.put_entity(x, y, value, None if header else "ANSWER", ink)
                if not header:  # the question just drawn -> the answer beside it
                    form.links.append([form.entities[-2]["id"], form.entities[-1]["id"]])
    return y + form.line_height + 2 * form.band + rng.randint(2, form.line_height)


def render_synthetic_form_with_links(
    seed: int, index: int
) -> tuple[PIL.Image.Image, list[str], list[list[int]], list[str], list[dict], list[list[int]]]:
    """Page `index` of the set `seed` with its entities: (greyscale page, words, 0-1000 word boxes, IOB labels,
    entities, links). Entities are FUNSD-like records (`id`, `label` QUESTION/ANSWER/HEADER, `word_indices`, 0-1000
    `box`); links are `[question id, answer id]` pairs. The page is the one `render_synthetic_form` draws."""
    rng = random.Random(f"layoutlm-roialign-synthetic/{seed}/{index}")
    form = _FormPage(rng)
    y = form.margin + rng.randint(0, 20)
    while y + form.line_height + form.band < form.height - form.margin:
        if rng.random() < 0.15:  # prose: other text
            y = _draw_prose_line(form, rng, y)
        else:
            y = _draw_field_line(form, rng, y)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0.0, 6.0, size=(form.height, form.width))
    pixels = np.clip(np.asarray(form.image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(pixels, "L"), form.words, form.boxes, form.labels, form.entities, form.links


def generate_synthetic_forms(num_pages: int = 240, seed: int = 0) -> Dataset:
    """`num_pages` synthetic forms as a FUNSD-schema `Dataset` (labels in `FUNSD_LABELS` order), with `entities` and
    `links`."""
    if not isinstance(num_pages, int) or num_pages < 1:
        raise ValueError(f"`num_pages` must be a positive integer, got {num_pages!r}.")
    rows: dict[str, list] = {"id": [], "words": [], "bboxes": [], "ner_tags": [], "image": [], "entities": [],
                             "links": []}  # fmt: skip
    for index in range(num_pages):
        image, words, boxes, labels, entities, links = render_synthetic_form_with_links(seed, index)
        rows["entities"].append(entities)
        rows["links"].append(links)
        rows["id"].append(f"synthetic-{seed}-{index:05d}")
        rows["words"].append(words)
        rows["bboxes"].append(boxes)
        rows["ner_tags"].append([FUNSD_LABELS.index(label) for label in labels])
        rows["image"].append(image)
    info = DatasetInfo(
        dataset_name="synthetic-forms",
        description=f"{num_pages} synthetic forms made by layoutlm_roialign.data.generate_synthetic_forms (seed {seed}).",
        license="apache-2.0",
        features=funsd_features(links=True),
    )
    return Dataset.from_dict(rows, features=info.features, info=info)
