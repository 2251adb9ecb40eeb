"""Shared SentencePiece vocabulary with one `<2xx>` token per language (EMS paper, sec. 4.2), saved as a
`PreTrainedTokenizerFast` that `AutoTokenizer.from_pretrained(folder)` loads offline.

The SentencePiece model is trained with the `nmt_nfkc_cf` normalisation (NFKC plus case folding), so the paper's
lowercasing is part of the tokenizer: raw text goes in, and the fast tokenizer reproduces SentencePiece's ids.
"""

import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2,4})?$")
_LANGUAGE_TOKEN = re.compile(r"^<2([A-Za-z]{2,3}(?:_[A-Za-z]{2,4})?)>$")


def language_token(code: str) -> str:
    """`<2de>` for `de`: the token that names a target language (eqs. 2-3)."""
    if not _LANGUAGE_CODE.match(code):
        raise ValueError(
            f"{code!r} is not a language code; use an ISO 639 code with an optional region, e.g. 'de' or 'pt_BR'."
        )
    return f"<2{code}>"


def tokenizer_languages(tokenizer) -> list[str]:
    """Language codes of the tokenizer's `<2xx>` tokens, in id order."""
    found = []
    for token in tokenizer.all_special_tokens:
        match = _LANGUAGE_TOKEN.match(token)
        if match:
            found.append((tokenizer.convert_tokens_to_ids(token), match.group(1)))
    return [code for _, code in sorted(found)]


def sample_sentences(pairs, size: int, seed: int) -> Iterator[str]:
    """The texts to train the vocabulary on: both sides of a seeded sample of `ceil(size / 2)` pairs (all of them in
    a smaller corpus), in row order, read in Arrow batches: the time and memory follow `size`, not the corpus."""
    rows = min(len(pairs), (size + 1) // 2)
    if rows < len(pairs):
        pairs = pairs.select(np.sort(np.random.default_rng(seed).choice(len(pairs), rows, replace=False)))
    for batch in pairs.select_columns(["src", "tgt"]).with_format("arrow").iter(batch_size=100_000):
        for source, target in zip(batch["src"].to_pylist(), batch["tgt"].to_pylist()):
            yield source
            yield target


def train_sentencepiece(texts: Iterable[str], vocab_size: int, input_sentence_size: int = 2_000_000) -> bytes:
    """Train a unigram SentencePiece model (ids: 0 pad, 1 unk, 2 eos) and return its serialized bytes."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="unigram",
            normalization_rule_name="nmt_nfkc_cf",
            character_coverage=0.9995,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=2,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise ValueError(f"SentencePiece could not train a vocabulary of {vocab_size} pieces: {error}") from None
    return model.getvalue()


def sentencepiece_to_tokenizers(model_proto: bytes) -> Tokenizer:
    """The same segmentation as SentencePiece, as a `tokenizers.Tokenizer` (what transformers' SpmConverter builds)."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        raise ValueError("Only unigram SentencePiece models are supported.")
    tokenizer = Tokenizer(
        models.Unigram([(piece.piece, piece.score) for piece in proto.pieces], unk_id=proto.trainer_spec.unk_id)
    )
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
            normalizers.Strip(),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    eos_id = proto.trainer_spec.eos_id
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair=f"$A {EOS} $B", special_tokens=[(EOS, eos_id)]
    )
    return tokenizer


def build_tokenizer(model_proto: bytes, languages: list[str], model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a SentencePiece model and append one `<2xx>` special token per language after its pieces."""
    if not languages:
        raise ValueError("At least one language is needed to build the language tokens.")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=sentencepiece_to_tokenizers(model_proto),
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [language_token(code) for code in languages]})
    return tokenizer


def train_tokenizer(
    texts: Iterable[str], languages: list[str], vocab_size: int, model_max_length: int, output_dir: str | Path,
    input_sentence_size: int = 2_000_000,
) -> PreTrainedTokenizerFast:
    """Train the shared vocabulary on `texts` (at most `input_sentence_size` of them, SentencePiece's sample), save
    the tokenizer (and `sentencepiece.model`) to `output_dir`."""
    model_proto = train_sentencepiece(texts, vocab_size, input_sentence_size)
    tokenizer = build_tokenizer(model_proto, sorted(set(languages)), model_max_length)
    output_dir = Path(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "sentencepiece.model").write_bytes(model_proto)
    return tokenizer
