import subprocess
import sys

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from trainers.tokenizer import language_token, tokenizer_languages

from .conftest import LANGUAGES


def viterbi_score(sp, ids):
    return sum(sp.get_score(i) for i in ids)


def test_autotokenizer_loads_offline_and_matches_sentencepiece(tokenizer_dir, small_pairs, heldout_pairs):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "sentencepiece.model"))
    texts = [t for row in small_pairs + heldout_pairs for t in (row["src"], row["tgt"])]
    texts += ["  Extra   spaces  ", "ÉCOLE Ｆｕｌｌｗｉｄｔｈ", "ﬁ ligature", "Ünïcödé ÄÖÜ ß"]
    mismatched = []
    for text in texts:
        expected, got = sp.encode(text), tokenizer(text)["input_ids"]
        if expected != got:
            mismatched.append((text, expected, got))
    # The fast tokenizer may only differ where two segmentations have the same Viterbi score (a tie broken
    # differently); everything else must be identical.
    for text, expected, got in mismatched:
        assert viterbi_score(sp, expected) == pytest.approx(viterbi_score(sp, got), abs=1e-4), text
    assert len(mismatched) <= len(texts) // 1000, mismatched[:3]


def test_tokenizer_lowercases_like_the_paper(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tokenizer("Open The FILE")["input_ids"] == tokenizer("open the file")["input_ids"]


def test_one_language_token_per_language_after_the_pieces(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "sentencepiece.model"))
    assert tokenizer_languages(tokenizer) == sorted(LANGUAGES)
    ids = tokenizer.convert_tokens_to_ids([language_token(code) for code in sorted(LANGUAGES)])
    assert ids == list(range(sp.get_piece_size(), sp.get_piece_size() + len(LANGUAGES)))
    assert len(tokenizer) == sp.get_piece_size() + len(LANGUAGES)
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1


def test_truncates_to_model_max_length(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer("word " * 500, truncation=True)["input_ids"]
    assert len(ids) == tokenizer.model_max_length == 32


@pytest.mark.parametrize("code", ["", "english!", "d", "de-DE-x"])
def test_language_token_rejects_bad_codes(code):
    with pytest.raises(ValueError, match="not a language code"):
        language_token(code)


def test_train_tokenizer_script(tmp_path, small_pairs):
    from .conftest import write_jsonl

    data = write_jsonl(tmp_path / "pairs.jsonl", small_pairs[:400])
    out = tmp_path / "tok"
    result = subprocess.run(
        [sys.executable, "scripts/train_tokenizer.py", "--data", str(data), "--output_dir", str(out),
         "--vocab_size", "1000"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer_languages(tokenizer) == sorted({r["tgt_lang"] for r in small_pairs[:400]} | {"en"})


def test_too_small_vocabulary_is_a_clear_error(small_pairs):
    from trainers.tokenizer import train_sentencepiece

    texts = [row["tgt"] for row in small_pairs[:400]]
    with pytest.raises(ValueError, match="could not train a vocabulary of 50 pieces.*Increase vocab_size"):
        train_sentencepiece(texts, vocab_size=50)


def test_the_vocabulary_sample_is_seeded_bounded_and_whole_for_a_small_corpus(small_pairs):
    import datasets

    from trainers.tokenizer import sample_sentences

    pairs = datasets.Dataset.from_list(small_pairs)
    every_text = [text for row in small_pairs for text in (row["src"], row["tgt"])]
    assert list(sample_sentences(pairs, 10**9, seed=0)) == every_text  # as the vocabulary was trained before sampling
    sample = list(sample_sentences(pairs, 1001, seed=3))
    assert len(sample) == 1002 and sample == list(sample_sentences(pairs, 1001, seed=3))
    assert sample != list(sample_sentences(pairs, 1001, seed=4))
    kept = {(source, target) for source, target in zip(sample[::2], sample[1::2])}  # whole pairs, both sides
    assert kept <= {(row["src"], row["tgt"]) for row in small_pairs} and len(kept) > 490
