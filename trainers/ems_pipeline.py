"""The EMS training job behind `scripts/train.py`: tokenizer, model, training with checkpoints and resume, held-out
retrieval evaluation, and a Hub-ready output folder."""

import json
import logging
import os
from pathlib import Path

import torch
import yaml
from transformers import AutoTokenizer, set_seed
from transformers.trainer_utils import get_last_checkpoint

from modeling_ems import EMSConfig, EMSModel

from .cards import render_model_card
from .collators import ParallelPairCollator
from .data import (
    DEFAULT_HELDOUT,
    DEFAULT_TRAIN,
    add_token_lengths,
    check_languages,
    load_parallel_dataset,
    pair_languages,
    validate_pairs,
)
from .ems_trainer import EMSTrainer, EMSTrainingArguments
from .encoding import encode
from .evaluation.retrieval import embedding_similarity, retrieval_by_language, tfidf_similarity
from .hub import write_sentence_transformers_config
from .run_config import RunConfig
from .tokenizer import tokenizer_languages, train_tokenizer

logger = logging.getLogger(__name__)


def training_arguments(run_config: RunConfig, output_dir: str | Path) -> EMSTrainingArguments:
    """`EMSTrainingArguments` from the config; on a machine without CUDA, train on the CPU (gloo for many processes)."""
    options = dict(run_config.training)
    if not torch.cuda.is_available():
        options.setdefault("use_cpu", True)
        # `accelerate launch` without `--cpu` pins OMP_NUM_THREADS=1: give each local process its share of the cores
        share = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if torch.get_num_threads() == 1 and share > 1:
            logger.warning("Training on the CPU with %d threads per process (OMP_NUM_THREADS was 1).", share)
            torch.set_num_threads(share)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            options.setdefault("ddp_backend", "gloo")
    try:
        return EMSTrainingArguments(output_dir=str(output_dir), **options)
    except TypeError as error:
        raise ValueError(f"training section of {run_config.source}: {error}") from None


def prepare_tokenizer(run_config: RunConfig, train_pairs, output_dir: Path, args: EMSTrainingArguments):
    """Load the configured tokenizer, the one an earlier run saved in `output_dir`, or train one on the pairs
    (main process first; the others load what it saved)."""
    with args.main_process_first(desc="tokenizer"):
        source = run_config.tokenizer.path or (output_dir if (output_dir / "tokenizer.json").is_file() else None)
        if source is not None:
            return AutoTokenizer.from_pretrained(source)
        texts = (text for row in train_pairs for text in (row["src"], row["tgt"]))
        max_length = run_config.model.get("max_position_embeddings", EMSConfig.max_position_embeddings)
        return train_tokenizer(
            texts, pair_languages(train_pairs), run_config.tokenizer.vocab_size, max_length, output_dir
        )


def build_model(run_config: RunConfig, tokenizer) -> EMSModel:
    fixed = {"vocab_size": len(tokenizer), "languages": tokenizer_languages(tokenizer),
             "pad_token_id": tokenizer.pad_token_id}
    clash = sorted(set(fixed) & set(run_config.model))
    if clash:
        raise ValueError(f"model section of {run_config.source} sets {clash}; these come from the tokenizer.")
    try:
        config = EMSConfig(**run_config.model, **fixed)
    except TypeError as error:
        raise ValueError(f"model section of {run_config.source}: {error}") from None
    return EMSModel(config)


def load_pairs(source: str | None, default: Path, max_pairs: int | None = None):
    pairs = load_parallel_dataset(source or default)
    if max_pairs is not None:
        pairs = pairs.select(range(min(max_pairs, len(pairs))))
    return pairs


def evaluate_heldout(model, tokenizer, heldout) -> dict:
    """Retrieval P@1 per language on the held-out pairs, for the model and the char 2-4-gram TF-IDF baseline."""
    embed = lambda texts: encode(model, tokenizer, texts, batch_size=128)  # noqa: E731
    return {
        "model": retrieval_by_language(heldout, embedding_similarity(embed)),
        "tfidf_baseline": retrieval_by_language(heldout, tfidf_similarity),
    }


def train_ems(run_config: RunConfig, output_dir: str | Path, resume: bool = True) -> dict:
    """Train, evaluate and save. Returns the evaluation results (also written to `eval_results.json`)."""
    output_dir = Path(output_dir)
    args = training_arguments(run_config, output_dir)
    train_pairs = load_pairs(run_config.data.train, DEFAULT_TRAIN, run_config.data.max_train_pairs)
    heldout = load_pairs(run_config.data.heldout, DEFAULT_HELDOUT)
    train_name = str(run_config.data.train or DEFAULT_TRAIN)
    validate_pairs(train_pairs, name=train_name)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = prepare_tokenizer(run_config, train_pairs, output_dir, args)
    languages = tokenizer_languages(tokenizer)
    check_languages(train_pairs, languages, name=train_name)
    validate_pairs(heldout, languages, name=str(run_config.data.heldout or DEFAULT_HELDOUT))
    if args.train_sampling_strategy == "group_by_length":
        train_pairs = add_token_lengths(train_pairs, tokenizer, args.length_column_name)
    set_seed(args.seed)  # before the weights are drawn: the same config gives the same run
    model = build_model(run_config, tokenizer)
    if args.process_index == 0:
        (output_dir / "training_config.yaml").write_text(yaml.safe_dump(run_config.to_dict(), sort_keys=False))

    trainer = EMSTrainer(
        model=model,
        args=args,
        train_dataset=train_pairs,
        data_collator=ParallelPairCollator(tokenizer, model.config),
        processing_class=tokenizer,
    )
    checkpoint = get_last_checkpoint(str(output_dir)) if resume and output_dir.is_dir() else None
    if checkpoint:
        logger.warning("Resuming from %s", checkpoint)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return {}
    write_sentence_transformers_config(output_dir, model.config.hidden_size, model.config.max_position_embeddings)

    results = evaluate_heldout(trainer.model, tokenizer, heldout)
    results["training"] = {"train_pairs": len(train_pairs), "global_step": train_output.global_step,
                           "train_runtime_s": round(train_output.metrics["train_runtime"], 1),
                           "train_loss": round(train_output.training_loss, 4)}
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    render_model_card(
        output_dir, model.config, run_config, results,
        dataset_name=str(run_config.data.heldout or "embedded held-out LibreOffice pairs"),
    )
    return results
