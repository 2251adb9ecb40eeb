"""Time and peak memory of the character 2-4-gram TF-IDF baseline's retrieval (`RetrievalEvaluator` with
`TfidfPool`, as `ems-compare` runs it) as its pool grows: the sparse rows of today's `TfidfPool` ("sparse") against
the dense factorisation it replaced ("dense-eigh": the N x N Gram matrix of the pool's distinct texts and its
`np.linalg.eigh`, giving N-dimensional vectors with the same cosines; O(N^2) memory, O(N^3) time).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_tfidf.py                        # 2k .. 100k texts
    python benchmarks/bench_tfidf.py --sizes 2000 --methods sparse dense-eigh              # one size, both

The pool holds `size` distinct texts: `--pairs` English sources and their translations (rows of
../shared/data/parallel/train.tsv.gz; without it the shipped held-out pairs, repeated with a row number appended),
plus translations of later rows as extra pool. The evaluator scores Tatoeba P@1 both ways over the pairs and
margin P@1 of the sources among targets + pool. "dense-eigh" runs only up to `--dense_max` texts (its eigh alone
took 227 s at 9.3k texts on this machine; beyond, its N x N float64 Gram matrix and basis outgrow memory near 30k).
Every configuration runs in a fresh Python process so that its peak resident memory (`ru_maxrss`) is its own.
"""

import argparse
import csv
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PARALLEL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parallel" / "train.tsv.gz"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pool_texts(size: int, pairs: int) -> tuple[list[str], list[str], list[str]]:
    """`pairs` sources and targets, and extra target-language texts up to `size` distinct texts in all."""
    sources, targets, seen = [], [], set()
    if PARALLEL.exists():
        handle = gzip.open(PARALLEL, "rt", encoding="utf-8", newline="")
        rows = ((row["en"], row["text"]) for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        from trainers.data import data_file  # the shipped held-out pairs, made distinct by a row number

        with gzip.open(data_file("default/heldout.jsonl.gz"), "rt", encoding="utf-8") as lines:
            shipped = [(row["src"], row["tgt"]) for row in map(json.loads, lines)]
        rows = ((f"{s} {i}", f"{t} {i}") for i in range(10**9) for s, t in [shipped[i % len(shipped)]])
    extra = []
    for source, target in rows:
        if source in seen or target in seen or source == target:
            continue
        if len(sources) < pairs:
            sources.append(source), targets.append(target), seen.update((source, target))
        elif len(seen) < size:
            extra.append(target), seen.add(target)
        else:
            break
    return sources, targets, extra


def dense_eigh_pool(texts: list[str]):
    """The embedding function `TfidfPool` was before it kept sparse rows (commit b3f3d24): coordinates of the unit
    TF-IDF vectors in an orthonormal basis of their span, from the eigen-decomposition of their Gram matrix."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    from trainers.evaluation.retrieval import TFIDF_OPTIONS

    distinct = list(dict.fromkeys(texts))
    vectors = TfidfVectorizer(**TFIDF_OPTIONS).fit(texts).transform(distinct)
    values, basis = np.linalg.eigh((vectors @ vectors.T).toarray())
    keep = values > values.max() * len(values) * np.finfo(np.float64).eps
    dense = basis[:, keep] * np.sqrt(values[keep])
    index = {text: row for row, text in enumerate(distinct)}
    return lambda batch: dense[[index[text] for text in batch]]


def measure(size: int, method: str, pairs: int) -> dict:
    """One configuration, in this process."""
    from trainers.evaluation.retrieval import RetrievalEvaluator, TfidfPool

    sources, targets, extra = pool_texts(size, pairs)
    evaluator = RetrievalEvaluator(sources, targets, pool=extra or None)
    row = {"size": len(set(sources + targets + extra)), "method": method, "data_rss_mib": peak_rss_mib()}
    start = time.perf_counter()
    texts = evaluator.sources + evaluator.targets + evaluator.pool
    embed = TfidfPool(texts) if method == "sparse" else dense_eigh_pool(texts)
    row["fit_seconds"] = time.perf_counter() - start
    results = evaluator(embed)
    row.update(seconds=time.perf_counter() - start, peak_rss_mib=peak_rss_mib(),
               **{key.removeprefix("retrieval_"): round(value, 4) for key, value in results.items()})
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 30000, 100000])
    parser.add_argument("--methods", nargs="+", default=["dense-eigh", "sparse"], choices=["dense-eigh", "sparse"])
    parser.add_argument("--pairs", type=int, default=500, help="translation pairs scored (the queries)")
    parser.add_argument("--dense_max", type=int, default=5000, help="largest pool the dense-eigh method runs on")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.pairs)))
        return
    print(f"data: {PARALLEL if PARALLEL.exists() else 'shipped held-out pairs, repeated'}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| texts | method | fit s | total s | peak RSS MiB | P@1 | pool P@1 margin |\n|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for method in args.methods:
            if method == "dense-eigh" and size > args.dense_max:
                print(f"| {size:,} | {method} | skipped (> --dense_max {args.dense_max:,}) | | | | |")
                continue
            done = subprocess.run([sys.executable, __file__, "--one", str(size), method, "--pairs", str(args.pairs)],
                                  capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {row['size']:,} | {method} | {row['fit_seconds']:.1f} | {row['seconds']:.1f} | "
                  f"{row['peak_rss_mib']:.0f} | {row['p@1']:.4f} | {row.get('pool_p@1_margin', float('nan')):.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
