"""Encoding throughput of a saved model: this package's `encode` vs sentence-transformers' `encode`, side by side.

    python benchmarks/bench_encoding.py --model runs/ems-default

Both encode the same texts (the embedded held-out pairs, both sides) with the same batch size, in alternating rounds
so that machine noise hits both alike. The FLOP/s that encoding reaches (linear layers and attention, counted on
the padded batches `encode` builds) is compared with the machine's fp32 matmul FLOP/s measured in the same run.
"""

import argparse
import platform
import time

import torch
from sentence_transformers import SentenceTransformer

from trainers.data import DEFAULT_HELDOUT, load_parallel_dataset
from trainers.encoding import encode
from trainers.loading import load_encoder


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def encoding_flops(model, tokenizer, texts: list[str], batch_size: int) -> float:
    """FLOPs of one `encode` pass: 2 * (linear weights) per padded token plus attention (QK^T and AV) per layer."""
    config = model.config
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    lengths = sorted((len(ids) for ids in tokenizer(texts, truncation=True,
                                                     max_length=config.max_position_embeddings)["input_ids"]),
                     reverse=True)
    total = 0.0
    for start in range(0, len(lengths), batch_size):
        batch, padded = lengths[start:start + batch_size], lengths[start]
        tokens = len(batch) * padded
        total += tokens * layers * (2 * (4 * d * d + 2 * d * ffn) + 4 * padded * d)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    pairs = load_parallel_dataset(DEFAULT_HELDOUT)
    texts = list(pairs["src"]) + list(pairs["tgt"])
    model, tokenizer = load_encoder(args.model)
    st = SentenceTransformer(args.model, device="cpu", trust_remote_code=True)
    ours_s, st_s = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        encode(model, tokenizer, texts, batch_size=args.batch_size)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        st_s.append(time.perf_counter() - start)
    ours, theirs = len(texts) / min(ours_s), len(texts) / min(st_s)
    peak = matmul_flops()
    reached = encoding_flops(model, tokenizer, texts, args.batch_size) / min(ours_s)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; model {args.model}; {len(texts)} texts, batch {args.batch_size}, "
          f"best of {args.rounds} alternating rounds")
    print("| measure | value |\n|---|---|")
    print(f"| ours (`trainers.encoding.encode`), sentences/s | {ours:.0f} |")
    print(f"| sentence-transformers `encode`, sentences/s | {theirs:.0f} |")
    print(f"| ours / sentence-transformers | {ours / theirs:.2f}x |")
    print(f"| fp32 matmul (2048^2), GFLOP/s | {peak / 1e9:.0f} |")
    print(f"| encoding, GFLOP/s (share of matmul) | {reached / 1e9:.0f} ({100 * reached / peak:.0f} %) |")


if __name__ == "__main__":
    main()
