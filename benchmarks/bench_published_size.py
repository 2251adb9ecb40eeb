"""What the training heads cost a published folder: bytes uploaded with and without them (`ems-publish --heads`),
for a trained folder, and the parameter shares of the default and the paper-size models.

    python benchmarks/bench_published_size.py --model runs/ems-default

The trained folder keeps the heads (it reloads into `EMSForPreTraining` to train on); publishing stages the bare
encoder unless `--heads` is given. Parameter counts are taken on the meta device, so the paper-size model costs no
memory.
"""

import argparse

import torch

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.hub import files_to_publish, publishable_folder
from trainers.recipes import load_run_config


def folder_bytes(folder, heads: bool) -> int:
    with publishable_folder(folder, heads=heads) as source:
        return sum((source / name).stat().st_size for name in files_to_publish(source))


def parameter_share(config: EMSConfig) -> tuple[int, int]:
    with torch.device("meta"):
        model = EMSForPreTraining(config)
    return sum(p.numel() for p in model.ems.parameters()), sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A trained EMS folder (the output_dir of scripts/train.py).")
    args = parser.parse_args()
    print("| model | encoder parameters | with heads | heads' share |\n|---|---:|---:|---:|")
    paper = EMSConfig(**load_run_config("ems_paper").model, vocab_size=60000 + 62)  # 60k pieces, 62 <2xx> tokens
    for name, config in ((args.model, EMSConfig.from_pretrained(args.model)), ("configs/ems_paper.yaml", paper)):
        encoder, total = parameter_share(config)
        print(f"| {name} (vocabulary {config.vocab_size}) | {encoder / 1e6:.2f} M | {total / 1e6:.2f} M | "
              f"{1 - encoder / total:.1%} |")
    bare, full = folder_bytes(args.model, heads=False), folder_bytes(args.model, heads=True)
    print(f"\n| `{args.model}` published | bytes uploaded |\n|---|---:|")
    print(f"| bare encoder (default) | {bare / 2**20:.2f} MiB |\n"
          f"| with the heads (`--heads`) | {full / 2**20:.2f} MiB |")
    print(f"| saved by the default | {1 - bare / full:.1%} |")


if __name__ == "__main__":
    main()
