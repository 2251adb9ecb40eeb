"""Encoding speed and retrieval P@1 of an ONNX export (float and int8) beside PyTorch, on the same texts (issue 21).

    python benchmarks/bench_onnx.py --output_dir runs/bench_onnx            # all-MiniLM-L6-v2, exported first
    python benchmarks/bench_onnx.py --model runs/ems-default --output_dir runs/bench_onnx_ems

Exports MODEL with `export_onnx(..., quantize=True)` into OUTPUT_DIR (reused when it holds an export), then embeds the
shipped Debian German set (404 English / German package descriptions, out of domain) with each backend: PyTorch
(`load_embedder`), ONNX float and ONNX int8 (`load_embedder(backend="onnx")`), on the CPU, one after the other in one
process. Prints a markdown table: texts per second (best of `--repeats`), P@1 both ways, max |difference| to PyTorch.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from trainers.evaluation.suite import load_suite
from trainers.export import export_onnx
from trainers.loading import ONNX_FILE, ONNX_INT8_FILE, load_embedder, minilm_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model folder (default: the installed all-MiniLM-L6-v2).")
    parser.add_argument("--output_dir", required=True, help="Where the export goes (reused when present).")
    parser.add_argument("--task", default="debian_en-de", help="Retrieval evaluator of eval_default to use.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = args.model or minilm_folder()
    if not (Path(args.output_dir) / ONNX_INT8_FILE).is_file():
        print(export_onnx(model, args.output_dir, quantize=True))
    (evaluator,) = [e for e in load_suite("eval_default") if e.name == args.task]
    texts = evaluator.sources + evaluator.targets
    backends = {"PyTorch": load_embedder(model, device="cpu", batch_size=args.batch_size)[0]}
    for name, file in (("ONNX float", ONNX_FILE), ("ONNX int8", ONNX_INT8_FILE)):
        backends[name] = load_embedder(args.output_dir, backend="onnx", onnx_file=file, batch_size=args.batch_size)[0]
    print(f"{len(texts)} texts ({args.task}), batch size {args.batch_size}, torch threads {torch.get_num_threads()}")
    print("| backend | texts/s | P@1 | max abs diff to PyTorch |\n|---|---|---|---|")
    reference = None
    for name, embed in backends.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            embeddings = embed(texts)
            times.append(time.perf_counter() - start)
        reference = embeddings if reference is None else reference
        p_at_1 = evaluator(lambda batch, cached=dict(zip(texts, embeddings)): np.stack([cached[t] for t in batch]))
        score = p_at_1[f"{evaluator.name}_p@1"]
        print(f"| {name} | {len(texts) / min(times):.0f} | {score:.4f} | "
              f"{float(np.abs(embeddings - reference).max()):.1e} |", flush=True)


if __name__ == "__main__":
    main()
