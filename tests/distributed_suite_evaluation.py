"""Run by tests/test_training_evaluation.py under `torchrun --standalone --nproc_per_node 2`, with a tokenizer folder
and a JSON file of `[english, translation]` pairs as arguments.

`EMSTrainer.evaluate` with an evaluation suite on 2 real processes (gloo): the main process runs the suite, the
other waits for its metrics, and both must return the same dict. A probe evaluator prints the rank it runs on; it
returns that rank as its metric, so a process that evaluated by itself would return another value. Then the main
process's evaluation fails outright, and the other process must raise too instead of waiting forever. Each rank writes
its lines to `OUTPUT_DIR/rank<r>.log` (two processes' lines on one stdout pipe can interleave)."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.evaluation import training as training_module
from trainers.evaluation.retrieval import RetrievalEvaluator
from trainers.recipes.base import end_processes
from trainers.recipes.ems.trainer import EMSTrainer, EMSTrainingArguments
from trainers.tokenizer import tokenizer_languages


def say(line: str) -> None:
    """One line of this rank's report, in its own file."""
    with open(Path(sys.argv[3]) / f"rank{dist.get_rank()}.log", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


class RankProbe:
    name = "probe"

    def __call__(self, embed):
        rank = dist.get_rank()
        say(f"probe ran on rank {rank}")
        return {"probe_rank": float(rank)}


def main():
    tokenizer_dir, pairs_file, output_dir = sys.argv[1:4]
    args = EMSTrainingArguments(output_dir=output_dir, use_cpu=True, ddp_backend="gloo", eval_strategy="steps",
                                eval_steps=5, report_to="none", per_device_eval_batch_size=16)
    rank = args.process_index
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = EMSConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=32, language_embedding_size=8,
                       contrastive_projection_size=16, languages=tokenizer_languages(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)
    trainer = EMSTrainer(model=EMSForPreTraining(config), args=args, train_dataset=[], processing_class=tokenizer)
    english, translations = zip(*json.loads(open(pairs_file, encoding="utf-8").read()))
    trainer.set_evaluation_suite([RetrievalEvaluator(list(english), list(translations), name="dev_en-de"),
                                  RankProbe()])
    metrics = trainer.evaluate()
    metrics.pop("eval_runtime")
    say(f"rank {rank}: metrics {json.dumps(metrics, sort_keys=True)}")

    def broken(evaluators, embed):
        raise RuntimeError("the main process lost its disk")

    training_module.run_suite = broken
    try:
        trainer.evaluate()
    except RuntimeError as error:
        say(f"rank {rank}: raised {error}")
    dist.barrier()
    end_processes()


if __name__ == "__main__":
    sys.exit(main())
