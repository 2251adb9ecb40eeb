"""Time and peak memory of bitext mining (trainers.evaluation.mining), exact vs faiss k-NN, on planted data.

    python benchmarks/bench_mining.py                                  # 10k and 100k sentences per side
    python benchmarks/bench_mining.py --sizes 10000 --backends exact   # one configuration

Each side holds `size` random unit vectors; the first half of the targets are noisy copies of the first half of the
sources (cosine about 0.7, the gold pairs), the rest are unrelated. Every configuration runs in a fresh Python
process so that its peak resident memory (`ru_maxrss`, which also counts faiss's C++ allocations) is its own.

A configuration with at most `--max_queries` sentences per side runs the whole `evaluate_mining` (k-NN both ways,
margins, extraction, dev threshold, test F1). Above it, the k-NN search, which is all but a few seconds of the time
(quadratic in size; the rest is linear), runs for the first `--max_queries` queries of each direction against the
full pool, and its time is scaled by size / max_queries: peak memory is still that of the full pools.
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["exact", "faiss"], choices=["exact", "faiss"])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--max_queries", type=int, default=20_000,
                        help="Sizes above this time the k-NN search on this many queries per direction.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return
    command = (f"python benchmarks/bench_mining.py --sizes {' '.join(map(str, args.sizes))} --backends "
               f"{' '.join(args.backends)} --dim {args.dim} --max_queries {args.max_queries} --seed {args.seed}")
    rows = []
    for size in args.sizes:
        for backend in args.backends:
            config = {"size": size, "backend": backend, "dim": args.dim, "max_queries": args.max_queries,
                      "seed": args.seed}
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)], check=True,
                                  capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"`{command}` ({os.cpu_count()} CPUs, dim {args.dim}, k = 4, mode max, planted pairs = half of each side)\n")
    print("| sentences per side | backend | mining time (s) | peak RSS (MiB) | RSS after imports + data (MiB) | "
          "added by mining (MiB) | test F1 | measured |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        f1 = "-" if row["f1"] is None else f"{row['f1']:.4f}"
        print(f"| {row['size']:,} | {row['backend']} | {row['seconds']:.1f} | {row['peak_rss_mib']:.0f} | "
              f"{row['data_rss_mib']:.0f} | {row['peak_rss_mib'] - row['data_rss_mib']:.0f} | {f1} | {row['scope']} |")


if __name__ == "__main__":
    main()
