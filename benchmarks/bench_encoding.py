"""Encoding throughput of a saved model: this package's `encode` vs sentence-transformers' `encode`, side by side,
in fp32 and bf16, and the share of the machine's matmul FLOP/s that encoding reaches, with where the time goes.

    python benchmarks/bench_encoding.py --model runs/ems-default
    python benchmarks/bench_encoding.py --matmul_only     # fp32 vs bf16 matmul rate: is bf16 native here?

Both encode the same texts (the embedded held-out pairs, both sides) with the same batch size, in alternating rounds
so that machine noise hits both alike. Encoding FLOPs are counted on the padded batches `encode` builds (linear
layers, and attention's QK^T and AV per layer) and set against a 2048 x 2048 matmul in the same dtype, measured in
the same run. The profile splits one fp32 pass into matmuls, attention, and the rest (embeddings, norms,
activations, pooling, tokenizing).
"""

import argparse
import platform
import time

import torch
from sentence_transformers import SentenceTransformer

from trainers.data import DEFAULT_HELDOUT, load_parallel_dataset
from trainers.encoding import encode, truncation_length
from trainers.loading import load_encoder, native_bf16


def matmul_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def encoding_flops(model, tokenizer, texts: list[str], batch_size: int) -> float:
    """FLOPs of one `encode` pass: 2 * (linear weights) per padded token plus attention (QK^T and AV) per layer,
    on batches sorted by token count as `encode` makes them."""
    config = model.config
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    limit = truncation_length(model, tokenizer)
    lengths = sorted((len(ids) for ids in tokenizer(texts, truncation=True, max_length=limit)["input_ids"]),
                     reverse=True)
    total = 0.0
    for start in range(0, len(lengths), batch_size):
        batch, padded = lengths[start:start + batch_size], lengths[start]
        total += len(batch) * padded * layers * (2 * (4 * d * d + 2 * d * ffn) + 4 * padded * d)
    return total


def time_share(model, tokenizer, texts: list[str], batch_size: int) -> dict[str, float]:
    """Share of one encoding pass's CPU time in matmuls (linear layers), attention and everything else."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encode(model, tokenizer, texts, batch_size=batch_size)
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    groups = {"matmul (linear layers)": ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::bmm"),
              "attention (sdpa)": ("aten::_scaled_dot_product", "aten::scaled_dot_product")}
    shares = {name: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
              for name, prefixes in groups.items()}
    shares["everything else"] = 1 - sum(shares.values())
    return shares


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="A saved model folder (required unless --matmul_only).")
    parser.add_argument("--matmul_only", action="store_true",
                        help="Only the fp32 and bf16 matmul rates (1024^2) and whether bf16 is native here.")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.matmul_only:
        fp32, bf16 = matmul_flops(torch.float32, 1024, 5), matmul_flops(torch.bfloat16, 1024, 5)
        print(f"{platform.processor() or platform.machine()}, CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}: "
              f"matmul 1024^2 fp32 {fp32 / 1e9:.1f} GFLOP/s, bf16 {bf16 / 1e9:.1f} GFLOP/s (bf16 / fp32 "
              f"{bf16 / fp32:.3f}x); native bf16 (what `bf16: auto` uses): {native_bf16()}")
        return
    if not args.model:
        parser.error("--model is required (or --matmul_only).")

    pairs = load_parallel_dataset(DEFAULT_HELDOUT)
    texts = list(pairs["src"]) + list(pairs["tgt"])
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; model {args.model}; {len(texts)} texts, batch {args.batch_size}, "
          f"best of {args.rounds} alternating rounds")
    print("| dtype | ours, sentences/s | sentence-transformers, sentences/s | ours / ST | matmul 2048^2, GFLOP/s | "
          "encoding, GFLOP/s (share of matmul) |\n|---|---:|---:|---:|---:|---:|")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model, tokenizer = load_encoder(args.model, device="cpu", dtype=dtype)
        st = SentenceTransformer(args.model, device="cpu", trust_remote_code=True, model_kwargs={"dtype": dtype})
        ours_s, st_s = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            encode(model, tokenizer, texts, batch_size=args.batch_size)
            ours_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            st_s.append(time.perf_counter() - start)
        ours, theirs = len(texts) / min(ours_s), len(texts) / min(st_s)
        peak = matmul_flops(dtype)
        reached = encoding_flops(model, tokenizer, texts, args.batch_size) / min(ours_s)
        print(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | {peak / 1e9:.0f} | "
              f"{reached / 1e9:.0f} ({100 * reached / peak:.0f} %) |")
    model, tokenizer = load_encoder(args.model, device="cpu", dtype=torch.float32)
    print(f"\nattention implementation: {model.config._attn_implementation}; where one fp32 pass spends its time:")
    for part, share in time_share(model, tokenizer, texts, args.batch_size).items():
        print(f"- {part}: {100 * share:.0f} %")


if __name__ == "__main__":
    main()
