"""Training throughput and peak memory of the EMS paper's model (configs/ems_paper.yaml: 6 x 1024, 16 heads, FFN 4096,
60k vocabulary, XTR + contrastive, eq. 12) on one GPU, in bf16 autocast with tf32, at several contrastive batch
sizes: the paper's 38 pairs per GPU, its global 152, and larger.

    python benchmarks/gpu_paper_throughput.py --batches 38 152 512 1024 --steps 60

Synthetic batches (random token ids, sentence lengths drawn from 6 to 60 tokens, as the embedded corpus's span):
the step's cost depends on the shapes, not the text, and the benchmark needs no data, tokenizer or `datasets`. Each
step is the trainer's: `EMSForPreTraining` forward with XTR logits, `ems_objective`, backward, AdamW. Prints one JSON
line per batch size: pairs/s, real tokens/s, peak memory, and the model FLOP rate as a share of the GPU's bf16 dense
matmul rate (`--peak_tflops`, 789 for an H200 measured here), counting 6 x parameters x tokens for the encoder and
6 x (hidden + language) x vocabulary per sentence for the XTR output layer (attention's own FLOPs left out: a lower
bound).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.layout import PairLayout
from trainers.losses import ems_objective

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


def measure(pairs: int, steps: int, warmup: int, device: str, peak_tflops: float) -> dict:
    torch.manual_seed(0)
    config = paper_config(languages=90)
    model = EMSForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(0)
    batches = [batch(pairs, config, generator, device) for _ in range(8)]
    encoder_parameters = sum(p.numel() for name, p in model.named_parameters()
                             if name.startswith("ems.layers"))
    torch.cuda.reset_peak_memory_stats()
    tokens, started = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        inputs = batches[step % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            target_language_ids=inputs["target_language_ids"], return_xtr_logits=True)
            loss, _ = ems_objective(outputs.xtr_logits, outputs.contrastive_embeddings, inputs["translation_ids"],
                                    inputs["translation_mask"], temperature=config.temperature)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(inputs["attention_mask"].sum())
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    xtr_flops = 6 * (config.hidden_size + config.language_embedding_size) * config.vocab_size * 2 * pairs * steps
    tflops = (6 * encoder_parameters * tokens + xtr_flops) / elapsed / 1e12
    return {"pairs_per_step": pairs, "steps": steps, "pairs_per_s": round(pairs * steps / elapsed, 1),
            "tokens_per_s": round(tokens / elapsed), "step_ms": round(1000 * elapsed / steps, 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "model_tflops": round(tflops, 1), "share_of_bf16_peak": round(tflops / peak_tflops, 3),
            "loss": round(loss.item(), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[38, 152, 512, 1024])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--peak_tflops", type=float, default=789.0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_paper_throughput.py measures a GPU; this machine has none.")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}))
    for pairs in args.batches:
        try:
            print(json.dumps(measure(pairs, args.steps, args.warmup, "cuda", args.peak_tflops)), flush=True)
        except torch.cuda.OutOfMemoryError:
            print(json.dumps({"pairs_per_step": pairs, "error": "out of memory"}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
