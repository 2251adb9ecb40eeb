"""Run by tests/test_ema.py with a tokenizer folder, a JSONL file of pairs and an output folder: 6 steps of
`EMATeacherTrainer` (dropout on, a checkpoint every 2 steps), resumed from the last complete checkpoint in the output
folder when there is one; killed by SIGKILL (no clean-up, as a crash would leave it) at the end of step
`DIE_AT_STEP` when that is set."""

import os
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, set_seed

from modeling_ems import EMSConfig, EMSModel
from tests.dying import DieAtStep
from trainers.collators import ParallelPairCollator
from trainers.data import load_parallel_dataset
from trainers.recipes import last_complete_checkpoint
from trainers.recipes.ema_alignment.trainer import EMATeacherTrainer, EMATrainingArguments


def main():
    tokenizer_dir, pairs_file, output_dir = sys.argv[1:4]
    args = EMATrainingArguments(output_dir=output_dir, use_cpu=True, per_device_train_batch_size=8, max_steps=6,
                                save_steps=2, logging_steps=1, learning_rate=0.005, warmup_steps=2, tau_base=0.9,
                                report_to="none", disable_tqdm=True, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    set_seed(args.seed)
    model = EMSModel(EMSConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id))
    trainer = EMATeacherTrainer(model=model, args=args, train_dataset=load_parallel_dataset(pairs_file),
                                data_collator=ParallelPairCollator(tokenizer, 32))
    if "DIE_AT_STEP" in os.environ:
        trainer.add_callback(DieAtStep(int(os.environ["DIE_AT_STEP"])))
    checkpoint = last_complete_checkpoint(Path(output_dir))
    if checkpoint:
        print(f"resuming from {checkpoint.name}", flush=True)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
