"""Padding-free layers against `torch.compile` on this CPU: one training step (forward + backward) of an EMS encoder
on padded batches, side by side in alternating rounds, three ways:

* `eager, packed`: the default; the layers run on the real tokens alone (`TokenPacking`, two host syncs);
* `eager, padded`: the layers on the padded batch, as under graph capture (`TokenPacking.of` returns None);
* `compiled`: `torch.compile(model)` (0 graph breaks: graph capture takes the padded path).

    python benchmarks/bench_compile.py                      # 4 x 256 encoder, 32 sentences, lengths 8..64
    python benchmarks/bench_compile.py --hidden_size 512 --layers 6

Sentence lengths are drawn uniformly between --min_length and --max_length and padded to the batch's longest, so
about 40 % of the padded positions are padding, as in a batch of short and long sentences. Prints one JSON line
with the median step time of each and the ratios to `eager, packed`.
"""

import argparse
import json
import platform
import statistics
import time
from unittest import mock

import torch

from modeling_ems import EMSConfig, EMSModel
from modeling_ems.layers import TokenPacking


def batches(args, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    made = []
    for _ in range(count):
        lengths = torch.randint(args.min_length, args.max_length + 1, (args.batch_size,), generator=generator)
        mask = (torch.arange(args.max_length) < lengths.unsqueeze(1)).long()
        ids = torch.randint(5, args.vocab_size, (args.batch_size, args.max_length), generator=generator) * mask
        made.append((ids, mask))
    return made


def step(model, ids, mask):
    model.zero_grad(set_to_none=True)
    model(ids, mask).pooler_output.pow(2).sum().backward()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--min_length", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = EMSConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                       num_attention_heads=args.hidden_size // 64, intermediate_size=4 * args.hidden_size,
                       max_position_embeddings=args.max_length, languages=["de", "en"])
    model = EMSModel(config).train()
    compiled = torch.compile(model)
    data = batches(args, args.rounds)
    padded = mock.patch.object(TokenPacking, "of", classmethod(lambda cls, mask: None))
    ways = {"eager, packed": lambda i, m: step(model, i, m), "compiled": lambda i, m: step(compiled, i, m)}

    def eager_padded(ids, mask):
        with padded:
            step(model, ids, mask)

    ways["eager, padded"] = eager_padded
    start = time.perf_counter()
    ways["compiled"](*data[0])  # compile once, outside the timing
    compile_s = time.perf_counter() - start
    times = {name: [] for name in ways}
    for ids, mask in data:  # alternating rounds: machine noise hits every way alike
        for name, run in ways.items():
            start = time.perf_counter()
            run(ids, mask)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    padding = 1 - sum(float(mask.float().mean()) for _, mask in data) / len(data)
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, shared",
        "torch": torch.__version__, **vars(args), "padding_share": round(padding, 3),
        "compile_s": round(compile_s, 1),
        "median_step_s": {name: round(value, 4) for name, value in medians.items()},
        "ratio_to_eager_packed": {name: round(value / medians["eager, packed"], 3) for name, value in medians.items()},
    }))


if __name__ == "__main__":
    main()
