"""Build a real BERT WordPiece tokenizer offline.

Pretrained LayoutLM/BERT vocabularies live on the Hub, which tests and the offline main job cannot reach.
This trains an uncased WordPiece vocabulary (the same algorithm and normalization as BERT's) on a corpus of
words with the `tokenizers` library and wraps it as a `BertTokenizerFast`, so everything downstream uses the
same fast-tokenizer code path (``word_ids()``, overflow windows) that a real LayoutLM tokenizer takes.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import BertTokenizerFast

__all__ = ["train_wordpiece_tokenizer"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


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
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size}.")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS
    )
    tok.train_from_iterator(corpus, trainer=trainer)
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
