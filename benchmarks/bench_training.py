"""Training throughput of an EMS config and the share of a step spent in the XTR head and loss.

    python benchmarks/bench_training.py --config configs/ems_default.yaml --steps 30

Runs real optimisation steps (forward, backward, AdamW) on length-grouped batches of the embedded corpus, with the
config's batch size and precision. The XTR share is measured side by side: the same batches are timed with the full
loss (eq. 12) and with the contrastive loss alone (the XTR head and loss skipped), interleaved step by step so that
machine noise hits both alike; share = 1 - t(contrastive only) / t(full).
"""

import argparse
import platform
import time

import torch
from transformers import AutoTokenizer

from trainers.cli import DEFAULT_CONFIG
from trainers.collators import ParallelPairCollator
from trainers.data import DEFAULT_TRAIN, add_token_lengths, load_parallel_dataset, pair_languages
from trainers.layout import PairLayout
from trainers.losses import contrastive_loss, ems_objective
from trainers.recipes import load_run_config
from trainers.recipes.ems import EMSRecipe
from trainers.tokenizer import train_tokenizer


def step(model, optimizer, batch, with_xtr: bool, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if with_xtr:  # EMSForPreTraining: encoder, both heads, eq. 12
            output = model(batch["input_ids"], batch["attention_mask"], batch["target_language_ids"])
            loss, _ = ems_objective(output.xtr_logits, output.contrastive_embeddings, batch["translation_ids"],
                                    batch["translation_mask"], model.config.temperature)
        else:  # the XTR head and loss skipped
            embeddings = model.contrastive_head(model.ems(batch["input_ids"], batch["attention_mask"]).pooler_output)
            loss = contrastive_loss(*PairLayout.split(embeddings), model.config.temperature).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=f"configs/{DEFAULT_CONFIG.name}", help="Run config (default: %(default)s).")
    parser.add_argument("--tokenizer", default=None, help="A tokenizer folder; default: train one on the corpus.")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    run_config = load_run_config(args.config)
    pairs = load_parallel_dataset(DEFAULT_TRAIN)
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        texts = (t for row in pairs for t in (row["src"], row["tgt"]))
        tokenizer = train_tokenizer(texts, pair_languages(pairs), run_config.tokenizer.vocab_size,
                                    run_config.model.get("max_position_embeddings", 120), "/tmp/bench_tokenizer")
    torch.manual_seed(0)
    model = EMSRecipe(run_config, "/tmp/bench_training").build_model(tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch_size = run_config.training.get("per_device_train_batch_size", 8)
    bf16 = bool(run_config.training.get("bf16", False))
    collator = ParallelPairCollator(tokenizer, model.config.max_position_embeddings, languages=model.config.languages,
                                    translation_tokens=True)

    # length-grouped batches drawn across the corpus, as the trainer's sampler makes them
    pairs = add_token_lengths(pairs, tokenizer).shuffle(seed=0).select(range(batch_size * 50 * 4))
    order = sorted(range(len(pairs)), key=lambda i: pairs[i]["length"])
    batches = [collator([pairs[i] for i in order[s:s + batch_size]])
               for s in range(0, len(order), len(order) // args.steps)][: args.steps]
    for batch in batches[:2]:  # warm-up
        step(model, optimizer, batch, True, bf16)
    full, contrastive_only = 0.0, 0.0
    for batch in batches:
        full += step(model, optimizer, batch, True, bf16)
        contrastive_only += step(model, optimizer, batch, False, bf16)
    pairs_per_second = batch_size * len(batches) / full
    share = 1 - contrastive_only / full
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, bf16={bf16}")
    print(f"config: {args.config}, batch {batch_size} pairs, {args.steps} steps of {batch_size * len(batches)} pairs")
    print("| metric | value |\n|---|---|")
    print(f"| training pairs / s (full EMS step) | {pairs_per_second:.1f} |")
    print(f"| step time, full loss (s) | {full / len(batches):.3f} |")
    print(f"| step time, contrastive only (s) | {contrastive_only / len(batches):.3f} |")
    print(f"| share of the step in the XTR head + loss | {100 * share:.1f} % |")


if __name__ == "__main__":
    main()
