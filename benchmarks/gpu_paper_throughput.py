"""Training throughput and peak memory of the EMS paper's model (configs/ems_paper.yaml: 6 x 1024, 16 heads, FFN 4096,
60k vocabulary, XTR + contrastive, eq. 12) on one GPU, in bf16 autocast with tf32, at several contrastive batch
sizes: the paper's 38 pairs per GPU, its global 152, and larger; with `--mini_batch_size`, through GradCache
(`training.mini_batch_size`, trainers/grad_cache.py), for batches larger than memory.

    python benchmarks/gpu_paper_throughput.py --batches 38 152 512 1024 --steps 60
    python benchmarks/gpu_paper_throughput.py --batches 1024 8192 --mini_batch_size 1024 --steps 40
    python benchmarks/gpu_paper_throughput.py --batches 152 --compile --steps 200
    python benchmarks/gpu_paper_throughput.py --device cpu --batches 4 --mini_batch_size 2 --steps 2   # smoke test

Synthetic batches (random token ids, sentence lengths drawn from 6 to 60 tokens, as the embedded corpus's span):
the step's cost depends on the shapes, not the text, and the benchmark needs no data, tokenizer or `datasets`. Each
step is the trainer's: `EMSForPreTraining` forward with XTR logits, `ems_objective` (on the per-sentence XTR
divergences and contrastive embeddings, as `EMSTrainer`), backward, AdamW. Prints one JSON line per batch size:
pairs/s, real tokens/s, peak memory, and the model FLOP rate as a share of the GPU's bf16 dense matmul rate
(`--peak_tflops`, 789 for an H200 measured here), counting 6 x parameters x tokens for the encoder and
6 x (hidden + language) x vocabulary per sentence for the XTR output layer (attention's own FLOPs left out: a lower
bound; GradCache's second forward pass is not counted, so its share is of useful work).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.grad_cache import cached_objective
from trainers.layout import PairLayout
from trainers.losses import ems_objective, xtr_loss

ROOT = Path(__file__).resolve().parents[1]


def paper_config(languages: int) -> EMSConfig:
    raw = yaml.safe_load((ROOT / "trainers" / "configs" / "ems_paper.yaml").read_text())
    return EMSConfig(**raw["model"], vocab_size=raw["tokenizer"]["vocab_size"],
                     languages=[f"l{index}" for index in range(languages)], pad_token_id=0)


def batch(pairs: int, config: EMSConfig, generator: torch.Generator, device: str) -> dict:
    rows = 2 * pairs  # PairLayout: the sources, then their translations
    lengths = torch.randint(6, 61, (rows,), generator=generator)
    width = int(lengths.max())
    ids = torch.randint(5, config.vocab_size, (rows, width), generator=generator)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "target_language_ids": torch.randint(0, len(config.languages), (rows,), generator=generator).to(device),
            "translation_ids": PairLayout.translations(ids).to(device),
            "translation_mask": PairLayout.translations(mask.bool()).to(device)}


def measure(pairs: int, steps: int, warmup: int, device: str, peak_tflops: float,
            mini_batch_size: int | None = None, compile: bool = False) -> dict:
    torch.manual_seed(0)
    config = paper_config(languages=90)
    model = EMSForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(0)
    batches = [batch(pairs, config, generator, device) for _ in range(8)]
    encoder_parameters = sum(p.numel() for name, p in model.named_parameters()
                             if name.startswith("ems.layers"))
    if compile:  # one graph per input shape: the layers run padded, without TokenPacking's host syncs
        model = torch.compile(model)
    cuda = device.startswith("cuda")

    def encode(model, rows):  # what EMSTrainer.per_row reads of the model: XTR divergences, contrastive embeddings
        outputs = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
                        target_language_ids=rows["target_language_ids"], return_xtr_logits=True)
        return xtr_loss(outputs.xtr_logits, rows["translation_ids"], rows["translation_mask"]), \
            outputs.contrastive_embeddings

    def objective(xtr_kl, contrastive_embeddings):
        return ems_objective(None, contrastive_embeddings, None, None, config.temperature, xtr_kl=xtr_kl)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tokens, started = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        inputs = batches[step % len(batches)]
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            if mini_batch_size:
                loss, _ = cached_objective(model, inputs, 2 * mini_batch_size, encode, objective)
            else:
                loss, _ = objective(*encode(model, inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(inputs["attention_mask"].sum())
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    xtr_flops = 6 * (config.hidden_size + config.language_embedding_size) * config.vocab_size * 2 * pairs * steps
    tflops = (6 * encoder_parameters * tokens + xtr_flops) / elapsed / 1e12
    return {"pairs_per_step": pairs, "mini_batch_size": mini_batch_size, "compiled": compile, "steps": steps,
            "pairs_per_s": round(pairs * steps / elapsed, 1),
            "tokens_per_s": round(tokens / elapsed), "step_ms": round(1000 * elapsed / steps, 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "model_tflops": round(tflops, 1), "share_of_bf16_peak": round(tflops / peak_tflops, 3),
            "loss": round(loss.item(), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[38, 152, 512, 1024])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--peak_tflops", type=float, default=789.0)
    parser.add_argument("--mini_batch_size", type=int, default=None,
                        help="pairs encoded at once (GradCache); default: the whole batch at once")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up steps compile)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of the script")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_paper_throughput.py measures a GPU; this machine has none (--device cpu: a smoke test).")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    print(json.dumps({"device": name, "torch": torch.__version__}))
    for pairs in args.batches:
        try:
            print(json.dumps(measure(pairs, args.steps, args.warmup, args.device, args.peak_tflops,
                                     args.mini_batch_size, args.compile)), flush=True)
        except torch.cuda.OutOfMemoryError:
            print(json.dumps({"pairs_per_step": pairs, "mini_batch_size": args.mini_batch_size,
                              "error": "out of memory"}), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
