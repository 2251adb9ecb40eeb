"""Time and peak memory of bitext mining (trainers.evaluation.mining), exact vs faiss k-NN, on planted data; with
`--hard_negatives`, of hard-negative mining for translation ranking (trainers.hard_negatives) instead.

    python benchmarks/bench_mining.py                                  # 10k and 100k sentences per side
    python benchmarks/bench_mining.py --sizes 10000 --backends exact   # one configuration
    python benchmarks/bench_mining.py --hard_negatives --sizes 200000 1000000 --backends exact

Each side holds `size` random unit vectors; the first half of the targets are noisy copies of the first half of the
sources (cosine about 0.7, the gold pairs), the rest are unrelated. Every configuration runs in a fresh Python
process so that its peak resident memory (`ru_maxrss`, which also counts faiss's C++ allocations) is its own.

A configuration with at most `--max_queries` sentences per side runs the whole `evaluate_mining` (k-NN both ways,
margins, extraction, dev threshold, test F1). Above it, the k-NN search, which is all but a few seconds of the time
(quadratic in size; the rest is linear), runs for the first `--max_queries` queries of each direction against the
full pool, and its time is scaled by size / max_queries: peak memory is still that of the full pools.

`--hard_negatives` mines `--k` negatives for `size` pairs spread at random over `--languages` target languages, each
with `--distinct` distinct translations (so targets repeat), embedded by a cheap `embed` (seeded random vectors of
`--dim`, one generator for the run: the same calls give the same vectors), so that neither the encoder nor the k-NN
search (sources x `--distinct` per language) dominates: the time left after the k-NN and `embed` calls is the
grouping, pools, exclusion and output column in Python/Arrow/numpy. `negatives digest` hashes the mined column, to
compare runs of two versions of the code on the same arguments.
"""

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def planted_corpus(size: int, dim: int, seed: int):
    """Unit float32 sources and targets, built in place so that no temporary outgrows a 4096-row block."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((size, dim), dtype=np.float32)
    targets = rng.standard_normal((size, dim), dtype=np.float32)
    half = size // 2
    targets[:half] += sources[:half]  # same-size noise: cosine about 1 / sqrt(2)
    for side in (sources, targets):
        for start in range(0, size, 4096):
            block = side[start : start + 4096]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
    return sources, targets, [(i, i) for i in range(half)]


def measure(size: int, backend: str, dim: int, max_queries: int, seed: int) -> dict:
    """One configuration, in this process."""
    from trainers.evaluation.knn import knn
    from trainers.evaluation.mining import evaluate_mining
    from trainers.metrics import load_metric

    load_metric("bitext_mining")  # import `evaluate` (and faiss) before timing
    if backend == "faiss":
        import faiss  # noqa: F401
    sources, targets, gold = planted_corpus(size, dim, seed)
    row = {"size": size, "backend": backend, "data_rss_mib": peak_rss_mib()}
    start = time.perf_counter()
    if size <= max_queries:
        results = evaluate_mining(sources, targets, gold, backend=backend)
        row.update(seconds=time.perf_counter() - start, f1=results["f1"], scope="full `evaluate_mining`")
    else:
        knn(sources[:max_queries], targets, 4, backend=backend)
        knn(targets[:max_queries], sources, 4, backend=backend)
        row.update(seconds=(time.perf_counter() - start) * size / max_queries, f1=None,
                   scope=f"k-NN both ways, {max_queries:,} of {size:,} queries each, time x {size / max_queries:g}")
    row["peak_rss_mib"] = peak_rss_mib()
    return row


# Target languages of the hard-negative benchmark (any valid codes; English is the source side).
HARD_NEGATIVE_LANGUAGES = ("ar bg cs da de el es fa fi fr he hi hu it ja ko nl pl pt ru sv th tr uk vi zh").split()


def measure_hard_negatives(size: int, backend: str, dim: int, languages: int, distinct: int, k: int,
                           seed: int) -> dict:
    """One hard-negative configuration, in this process."""
    import datasets
    import numpy as np

    from trainers import hard_negatives

    rng = np.random.default_rng(seed)
    codes = np.array(HARD_NEGATIVE_LANGUAGES[:languages])[rng.integers(languages, size=size)]
    translations = rng.integers(distinct, size=size)
    pairs = datasets.Dataset.from_dict({
        "src": [f"source {i}" for i in range(size)],
        "tgt": [f"{code} translation {j}" for code, j in zip(codes.tolist(), translations.tolist())],
        "src_lang": ["en"] * size,
        "tgt_lang": codes.tolist(),
    })
    vectors = np.random.default_rng(seed + 1)
    seconds = {"knn": 0.0, "embed": 0.0}

    def timed(name, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            seconds[name] += time.perf_counter() - start
            return result
        return call

    embed = timed("embed", lambda texts: vectors.standard_normal((len(texts), dim), dtype=np.float32))
    hard_negatives.knn = timed("knn", hard_negatives.knn)  # this worker process only
    row = {"size": size, "backend": backend, "data_rss_mib": peak_rss_mib()}
    start = time.perf_counter()
    mined = hard_negatives.mine_hard_negatives(embed, pairs, k, backend=backend)
    row.update(seconds=time.perf_counter() - start, knn_seconds=seconds["knn"], embed_seconds=seconds["embed"],
               peak_rss_mib=peak_rss_mib(),
               digest=hashlib.sha256(json.dumps(mined.with_format("arrow")["negatives"].to_pylist()).encode())
               .hexdigest()[:12])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["exact", "faiss"], choices=["exact", "faiss"])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--max_queries", type=int, default=20_000,
                        help="Sizes above this time the k-NN search on this many queries per direction.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hard_negatives", action="store_true",
                        help="Time hard-negative mining (trainers.hard_negatives) instead of bitext mining.")
    parser.add_argument("--languages", type=int, default=20, choices=range(1, len(HARD_NEGATIVE_LANGUAGES) + 1),
                        metavar=f"[1-{len(HARD_NEGATIVE_LANGUAGES)}]", help="--hard_negatives: target languages.")
    parser.add_argument("--distinct", type=int, default=1000,
                        help="--hard_negatives: distinct translations per language (the k-NN pool).")
    parser.add_argument("--k", type=int, default=5, help="--hard_negatives: negatives per pair.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        config = json.loads(args.worker)
        measure_config = measure_hard_negatives if config.pop("hard_negatives") else measure
        print(json.dumps(measure_config(**config)))
        return
    if args.hard_negatives:
        hard_negatives_table(args)
        return
    command = (f"python benchmarks/bench_mining.py --sizes {' '.join(map(str, args.sizes))} --backends "
               f"{' '.join(args.backends)} --dim {args.dim} --max_queries {args.max_queries} --seed {args.seed}")
    rows = []
    for size in args.sizes:
        for backend in args.backends:
            rows.append(run_worker({"hard_negatives": False, "size": size, "backend": backend, "dim": args.dim,
                                    "max_queries": args.max_queries, "seed": args.seed}))
    print(f"`{command}` ({os.cpu_count()} CPUs, dim {args.dim}, k = 4, mode max, planted pairs = half of each side)\n")
    print("| sentences per side | backend | mining time (s) | peak RSS (MiB) | RSS after imports + data (MiB) | "
          "added by mining (MiB) | test F1 | measured |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        f1 = "-" if row["f1"] is None else f"{row['f1']:.4f}"
        print(f"| {row['size']:,} | {row['backend']} | {row['seconds']:.1f} | {row['peak_rss_mib']:.0f} | "
              f"{row['data_rss_mib']:.0f} | {row['peak_rss_mib'] - row['data_rss_mib']:.0f} | {f1} | {row['scope']} |")


def run_worker(config: dict) -> dict:
    """One configuration in a fresh Python process, so that its peak memory is its own."""
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)], check=True, capture_output=True,
                          text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"done: {row}", file=sys.stderr, flush=True)
    return row


def hard_negatives_table(args) -> None:
    rows = [run_worker({"hard_negatives": True, "size": size, "backend": backend, "dim": args.dim,
                        "languages": args.languages, "distinct": args.distinct, "k": args.k, "seed": args.seed})
            for size in args.sizes for backend in args.backends]
    print(f"`python benchmarks/bench_mining.py --hard_negatives --sizes {' '.join(map(str, args.sizes))} --backends "
          f"{' '.join(args.backends)} --dim {args.dim} --languages {args.languages} --distinct {args.distinct} --k "
          f"{args.k} --seed {args.seed}` ({os.cpu_count()} CPUs)\n")
    print("| pairs | backend | mining time (s) | in k-NN (s) | in embed (s) | rest (s) | peak RSS (MiB) | "
          "RSS after imports + data (MiB) | negatives digest |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        rest = row["seconds"] - row["knn_seconds"] - row["embed_seconds"]
        print(f"| {row['size']:,} | {row['backend']} | {row['seconds']:.1f} | {row['knn_seconds']:.1f} | "
              f"{row['embed_seconds']:.1f} | {rest:.1f} | {row['peak_rss_mib']:.0f} | {row['data_rss_mib']:.0f} | "
              f"`{row['digest']}` |")


if __name__ == "__main__":
    main()
