"""The length-grouped sampler's pass over a memory-mapped length column, as transformers builds it (a lazy datasets
`Column`, read item by item) and as `trainers.length_grouping.LengthGroupingMixin` hands it over (one list), side by
side in one process.

    python benchmarks/bench_length_grouping.py --sizes 20000 100000 2000000

Each size: a dataset of `size` token lengths saved to disk and loaded back (memory-mapped, as a prepared run reads
it); the time of one epoch's indices (`list(LengthGroupedSampler(...))`, batch 64) with the Column (skipped above
--column_max rows: extrapolated linearly) and with the list, conversion included. One JSON line per size to --output.
"""

import argparse
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from _record import record  # benchmarks/_record.py: run as a script, this folder is on the path
from transformers.trainer_pt_utils import LengthGroupedSampler

REPO = Path(__file__).resolve().parent.parent


def epoch_seconds(lengths_of, size: int) -> float:
    started = time.perf_counter()
    sampler = LengthGroupedSampler(64, lengths=lengths_of(), generator=torch.Generator().manual_seed(0))
    assert len(list(sampler)) == size
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 2_000_000])
    parser.add_argument("--column_max", type=int, default=100_000, help="Largest size timed with the Column.")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_length_grouping.jsonl")
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    for size in options.sizes:
        with tempfile.TemporaryDirectory() as folder:
            datasets.Dataset.from_dict({"length": rng.integers(3, 64, size)}).save_to_disk(folder)
            dataset = datasets.load_from_disk(folder)
            row = {"rows": size, "list_s": round(epoch_seconds(lambda: dataset["length"][:], size), 3)}
            if size <= options.column_max:
                row["column_s"] = round(epoch_seconds(lambda: dataset["length"], size), 2)
        record(row, options.output)


if __name__ == "__main__":
    main()
