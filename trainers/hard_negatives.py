"""Hard negatives for translation ranking (Chidambaram et al. sec. 2.2, after Guo et al.): for each parallel pair, the
K translations of other pairs that a translation-ranking-only model places nearest to its source, found with the
package's nearest-neighbour search. Written beside the pairs as a `negatives` column, which `tasks.translation.
hard_negatives: K` of `recipe: multitask` reads."""

import argparse
import json
from pathlib import Path

import datasets
import numpy as np

from .data import load_parallel_dataset, validate_pairs
from .encoding import encode
from .evaluation.knn import BACKENDS, knn
from .loading import MINILM, MINILM_NAME, load_encoder, resolve_model_setting


def mine_hard_negatives(embed, pairs: datasets.Dataset, k: int, backend: str = "auto") -> datasets.Dataset:
    """`pairs` with a `negatives` column: for each pair, the `k` targets of other pairs in its target language
    nearest (cosine) to its source, nearest first. A target equal to the pair's own translation is never a
    negative. `embed(texts)` returns one row per text (e.g. `encode` with a translation-ranking model)."""
    if k < 1:
        raise ValueError(f"k={k}: mine at least one hard negative per pair (the paper uses 5).")
    validate_pairs(pairs, name="pairs to mine")
    negatives: list[list[str] | None] = [None] * len(pairs)
    languages = pairs["tgt_lang"]
    sources, targets = pairs["src"], pairs["tgt"]
    for language in sorted(set(languages)):
        rows = [i for i, code in enumerate(languages) if code == language]
        pool = sorted({targets[i] for i in rows})
        if len(pool) <= k:
            raise ValueError(f"Language {language!r} has {len(pool)} distinct translations: too few for k={k} hard "
                             "negatives each; lower k or add pairs.")
        _, nearest = knn(np.asarray(embed([sources[i] for i in rows])), np.asarray(embed(pool)), k + 1,
                         backend=backend)
        for row, candidates in zip(rows, nearest):
            found = [pool[j] for j in candidates if pool[j] != targets[row]]  # the own translation is not negative
            negatives[row] = found[:k]
    return pairs.add_column("negatives", negatives)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="A translation-ranking model: a folder (e.g. trained with "
                        f"configs/multitask_translation.yaml), a Hub id, or `{MINILM}` (the installed {MINILM_NAME}).")
    parser.add_argument("--pairs", required=True, help="Parallel pairs to mine for (any source load_parallel_dataset "
                        "reads).")
    parser.add_argument("--output", required=True, help="JSONL with the pair columns and `negatives`.")
    parser.add_argument("--k", type=int, default=5, help="Hard negatives per pair (paper: 5).")
    parser.add_argument("--max_pairs", type=int, default=None, help="Mine for the first N pairs only.")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="Nearest-neighbour backend.")
    parser.add_argument("--batch_size", type=int, default=128, help="Texts per encoding batch.")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="Run Python code from the model folder (its config's auto_map) to load it; only for code "
                             "you trust. Off: such a folder is refused, while this package's own folders load without "
                             "it.")
    args = parser.parse_args(argv)
    try:
        folder, _ = resolve_model_setting(args.model, "--model", "the command line")
        model, tokenizer = load_encoder(folder, trust_remote_code=args.trust_remote_code)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    pairs = load_parallel_dataset(args.pairs)
    if args.max_pairs is not None:
        pairs = pairs.select(range(min(args.max_pairs, len(pairs))))
    mined = mine_hard_negatives(lambda texts: encode(model, tokenizer, texts, batch_size=args.batch_size), pairs,
                                args.k, backend=args.backend)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for row in mined:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(mined)} pairs with {args.k} hard negatives each -> {output}")
