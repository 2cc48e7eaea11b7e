"""Build a real BERT WordPiece tokenizer offline.

Pretrained LayoutLM/BERT vocabularies live on the Hub, which tests and the offline main job cannot reach.
This builds an uncased WordPiece vocabulary from a corpus of words (deterministically, BERT's normalization and
pre-tokenization) and wraps a `tokenizers` WordPiece model with it as a `BertTokenizerFast`, so everything downstream uses the
same fast-tokenizer code path (``word_ids()``, overflow windows) that a real LayoutLM tokenizer takes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from transformers import BertTokenizerFast

__all__ = ["build_wordpiece_vocab", "train_wordpiece_tokenizer"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece_vocab(words: Iterable[str], vocab_size: int, min_frequency: int = 1) -> list[str]:
    """A WordPiece vocabulary of `vocab_size` entries from pre-tokenized `words`, the same for the same words.

    `tokenizers`' WordPiece trainer breaks frequency ties in hash-map order, so two runs on one corpus give
    different vocabularies (and token ids), which makes training runs, and a resumed run against an uninterrupted
    one, disagree. This builds the vocabulary deterministically instead: the special tokens, every character seen
    (as a word start and as a `##` continuation), then the word prefixes, `##` suffixes and whole words by
    frequency, ties broken by the shorter piece first, then alphabetically. Greedy longest-match WordPiece tokenization
    with it splits rare words into frequent pieces, as BERT's vocabulary does.
    """
    counts: Counter[str] = Counter(words)
    chars: set[str] = set()
    candidates: Counter[str] = Counter()
    for word, count in counts.items():
        chars.update(word)
        for i in range(2, len(word) + 1):
            candidates[word[:i]] += count
        for i in range(1, len(word) - 1):
            candidates["##" + word[i:]] += count
    vocab = list(SPECIAL_TOKENS)
    for c in sorted(chars):
        vocab += [c, "##" + c]
    seen = set(vocab)
    ranked = sorted((t for t, n in candidates.items() if n >= min_frequency and t not in seen),
                    key=lambda t: (-candidates[t], len(t.removeprefix("##")), t))  # fmt: skip
    vocab += ranked[: max(0, vocab_size - len(vocab))]
    return vocab


def train_wordpiece_tokenizer(
    corpus: Iterable[str], vocab_size: int = 400, min_frequency: int = 1, model_max_length: int = 512
) -> BertTokenizerFast:
    """Train an uncased WordPiece tokenizer on ``corpus`` and return it as a `BertTokenizerFast`.

    Args:
        corpus: texts (pages, lines or single words) to learn the vocabulary from.
        vocab_size: target vocabulary size, special tokens included. Small values make words split into
            several sub-word tokens, which is what tests of box/label expansion want.
        min_frequency: minimum count for a merge to enter the vocabulary.
        model_max_length: the tokenizer's maximum sequence length.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size}.")
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = build_wordpiece_vocab(
        (word for text in corpus for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
    )
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
