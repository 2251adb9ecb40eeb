"""Stage 1 of the EMA-teacher method (Ham & Kim, sec. 5.1): scored pairs loaded and mapped to the cosine's range with
clear errors for bad rows, and `SimilarityTrainer` fitting the cosine of two embeddings to the gold scores."""

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from trainers.arguments import EncoderTrainingArguments
from trainers.encoding import sentence_embeddings
from trainers.layout import PairLayout
from trainers.recipes.ema_alignment.stage1 import (
    ScoredPairCollator,
    SimilarityTrainer,
    load_scored_pairs,
)

from .test_ema import tiny_encoder


def write_tsv(path, rows, header=("text1", "text2", "score")):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))
    return path


def test_scores_are_mapped_from_the_data_scale_to_the_cosine_range(tmp_path):
    path = write_tsv(tmp_path / "sts.tsv", [("a cat", "a dog", 0), ("a cat", "the cat", 5), ("red", "blue", 2)])
    assert load_scored_pairs(path, [0, 5])["score"] == pytest.approx([0.0, 1.0, 0.4])  # STS-B: score / 5
    assert load_scored_pairs(path, [0, 5], [-1, 1])["score"] == pytest.approx([-1.0, 1.0, -0.2])
    assert load_scored_pairs(path, [0, 5])["text2"] == ["a dog", "the cat", "blue"]


def test_bad_scored_pairs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the columns \['score'\] .*need \['text1', 'text2', 'score'\]"):
        load_scored_pairs(write_tsv(tmp_path / "a.tsv", [("x", "y")], header=("text1", "text2")), [0, 5])
    with pytest.raises(ValueError, match=r"row 1: text2 is ' '.*two non-empty texts"):
        load_scored_pairs(write_tsv(tmp_path / "b.tsv", [("x", "y", 1), ("x", " ", 1)]), [0, 5])
    with pytest.raises(ValueError, match=r"row 0 \('x', 'y'\): score 7 is outside score_range \[0, 5\]; set "
                                         "score_range to the data's scale"):
        load_scored_pairs(write_tsv(tmp_path / "c.tsv", [("x", "y", 7)]), [0, 5])
    with pytest.raises(ValueError, match="score 'high' is outside score_range"):
        load_scored_pairs(write_tsv(tmp_path / "d.tsv", [("x", "y", 1), ("x", "z", "high")]), [0, 5])
    with pytest.raises(ValueError, match=r"score_range=\[5, 0\]: the low end must be below the high end"):
        load_scored_pairs(tmp_path / "c.tsv", [5, 0])
    with pytest.raises(ValueError, match=r"target_range=\[0, 5\]: fit the cosine to \[0, 1\] .* or to \[-1, 1\]"):
        load_scored_pairs(tmp_path / "c.tsv", [0, 10], [0, 5])


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_similarity_trainer_fits_the_cosine_to_the_gold_scores(tmp_path, tokenizer, small_pairs):
    # translations score 1, a sentence beside an unrelated one 0
    rows = small_pairs[:16]
    scored = [{"text1": r["src"], "text2": r["tgt"], "score": 1.0} for r in rows[:8]]
    scored += [{"text1": r["src"], "text2": s["tgt"], "score": 0.0} for r, s in zip(rows[8:], rows[:8])]
    pairs = datasets.Dataset.from_list(scored)
    model = tiny_encoder(tokenizer)
    collator = ScoredPairCollator(tokenizer, 32)
    batch = collator(scored)
    assert batch["input_ids"].shape[0] == 32 and batch["scores"].tolist() == [1.0] * 8 + [0.0] * 8

    def error():
        with torch.no_grad():
            first, second = PairLayout.split(sentence_embeddings(model.eval(), batch))
            return ((torch.cosine_similarity(first, second) - batch["scores"]) ** 2).mean().item()

    start = error()
    args = EncoderTrainingArguments(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=16,
                                    max_steps=12, learning_rate=0.01, save_strategy="no", logging_steps=4,
                                    report_to="none", disable_tqdm=True, seed=0)
    trainer = SimilarityTrainer(model=model, args=args, train_dataset=pairs, data_collator=collator)
    trainer.train()
    assert error() < start / 2, (start, error())  # the cosines moved towards the gold scores
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all("similarity_loss" in entry for entry in logged)
    assert logged[-1]["similarity_loss"] < logged[0]["similarity_loss"]
    with pytest.raises(TypeError, match="takes EncoderTrainingArguments"):
        SimilarityTrainer(model=model, args=object(), train_dataset=pairs, data_collator=collator)
