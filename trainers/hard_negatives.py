"""Hard negatives for translation ranking (Chidambaram et al. sec. 2.2, after Guo et al.): for each parallel pair, the
K translations of other pairs that a translation-ranking-only model places nearest to its source, found with the
package's nearest-neighbour search. Written beside the pairs as a `negatives` column, which `tasks.translation.
hard_negatives: K` of `recipe: multitask` reads."""

import argparse
import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import SCAN_ROWS, load_parallel_dataset, validate_pairs
from .encoding import encode
from .evaluation.knn import BACKENDS, knn
from .loading import MINILM, MINILM_NAME, load_encoder, resolve_model_setting


def mine_hard_negatives(embed, pairs: datasets.Dataset, k: int, backend: str = "auto") -> datasets.Dataset:
    """`pairs` with a `negatives` column: for each pair, the `k` targets of other pairs in its target language
    nearest (cosine) to its source, nearest first. A target equal to the pair's own translation is never a
    negative. `embed(texts)` returns one row per text (e.g. `encode` with a translation-ranking model): per language
    (sorted), its sources in row order, then its distinct targets sorted.

    The grouping is vectorised (Arrow hashing, numpy sorts): every target is numbered by its rank among the distinct
    targets, and one `np.unique` of (language, rank) keys gives each language's pool (its distinct targets, sorted)
    and each row's own translation's place in it, so no Python loop runs over the pairs."""
    if k < 1:
        raise ValueError(f"k={k}: mine at least one hard negative per pair (the paper uses 5).")
    validate_pairs(pairs, name="pairs to mine")
    columns = pairs.with_format("arrow")
    sources, targets, codes = columns["src"], columns["tgt"], columns["tgt_lang"]
    languages = sorted(pc.unique(codes).to_pylist())
    language = _indices_in(codes, pa.array(languages, codes.type))
    texts = pc.unique(targets)
    texts = texts.take(pc.array_sort_indices(texts))  # byte order of UTF-8 = code point order, as `sorted`
    keys = language * len(texts) + _indices_in(targets, texts)
    pool_keys, own = np.unique(keys, return_inverse=True)  # pools by language, each sorted; own: place in them
    pool_starts = np.searchsorted(pool_keys, np.arange(len(languages) + 1) * len(texts))
    for code, size in zip(languages, np.diff(pool_starts)):
        if size <= k:
            raise ValueError(f"Language {code!r} has {size} distinct translations: too few for k={k} hard "
                             "negatives each; lower k or add pairs.")
    order = np.argsort(language, kind="stable")  # rows grouped by language, in row order within one
    row_starts = np.searchsorted(language[order], np.arange(len(languages) + 1))
    negatives = np.empty((len(pairs), k), dtype=np.int64)  # ranks in `texts`
    for index in range(len(languages)):
        rows = order[row_starts[index] : row_starts[index + 1]]
        pool = pool_keys[pool_starts[index] : pool_starts[index + 1]] % len(texts)
        _, nearest = knn(np.asarray(embed(sources.take(rows).to_pylist())), np.asarray(embed(texts.take(pool)
                         .to_pylist())), k + 1, backend=backend)
        # the own translation is not a negative: the first k candidates other than it (it is among them at most once)
        other = nearest != (own[rows] - pool_starts[index])[:, None]
        first = np.argsort(~other, axis=1, kind="stable")[:, :k]
        negatives[rows] = pool[np.take_along_axis(nearest, first, axis=1)]
    blocks = [pa.ListArray.from_arrays(np.arange(0, k * len(block) + 1, k, dtype=np.int32),
                                       texts.take(block.ravel()))
              for block in np.split(negatives, range(SCAN_ROWS, len(pairs), SCAN_ROWS))]
    return pairs.add_column("negatives", pa.chunked_array(blocks))


def _indices_in(values: pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """The index of each of `values` in `value_set` (which holds them all), as int64."""
    return pc.index_in(values, value_set=value_set).to_numpy().astype(np.int64)


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
