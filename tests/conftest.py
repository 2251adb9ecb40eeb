import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from modeling_ems import EMSConfig, EMSForPreTraining, EMSModel
from trainers.data import DEFAULT_HELDOUT, DEFAULT_TRAIN
from trainers.hub import write_sentence_transformers_config
from trainers.tokenizer import train_tokenizer

LANGUAGES = ["de", "en", "fr", "ja", "ru"]
# ../shared/data beside the checkout (CI clones the repository next to shared/)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# tests on the real shared data skip on a clone with nothing beside it (CI has ../shared and runs them)
requires_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the shared data at {SHARED_DATA}")


def read_pairs(path: Path, languages=LANGUAGES, per_language=None):
    counts, rows = {}, []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["tgt_lang"] in languages and counts.get(row["tgt_lang"], 0) < (per_language or 10**9):
                counts[row["tgt_lang"]] = counts.get(row["tgt_lang"], 0) + 1
                rows.append(row)
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_pairs():
    """Real pairs from the embedded corpus: 4 languages with English, three scripts."""
    return read_pairs(DEFAULT_TRAIN, per_language=1000)


@pytest.fixture(scope="session")
def heldout_pairs():
    return read_pairs(DEFAULT_HELDOUT, per_language=100)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, small_pairs):
    folder = tmp_path_factory.mktemp("tokenizer")
    texts = [text for row in small_pairs for text in (row["src"], row["tgt"])]
    train_tokenizer(texts, LANGUAGES, vocab_size=1000, model_max_length=32, output_dir=folder)
    return folder


@pytest.fixture
def tiny_config():
    return EMSConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, language_embedding_size=8, contrastive_projection_size=16,
        languages=["de", "en", "fr"],
    )


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return EMSModel(tiny_config).eval()


@pytest.fixture
def tiny_pretraining_model(tiny_config):
    torch.manual_seed(0)
    return EMSForPreTraining(tiny_config).eval()


def save_tiny_model(folder: Path, tokenizer_dir: Path):
    """A small untrained `EMSModel` (seed 0) saved with its tokenizer and sentence-transformers config in `folder`:
    `(model, tokenizer)`."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = EMSConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=32, language_embedding_size=8,
                       contrastive_projection_size=16, languages=sorted(LANGUAGES))
    torch.manual_seed(0)
    model = EMSModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_sentence_transformers_config(folder, config.hidden_size, config.max_position_embeddings)
    return model, tokenizer


@pytest.fixture
def saved_model(tmp_path, tokenizer_dir):
    folder = tmp_path / "model"
    model, tokenizer = save_tiny_model(folder, tokenizer_dir)
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"state")
    (folder / "training_args.bin").write_bytes(b"args")
    return folder, model, tokenizer


class FakeEmbed:
    """A dict text -> vector as `embed`, recording the texts of every call."""

    def __init__(self, vectors):
        self.vectors, self.calls = vectors, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.vectors[text] for text in texts])


def torchrun(script: str, *args: str) -> str:
    """Run `tests/<script> ARGS` on 2 real processes (torchrun, gloo) and return what they printed."""
    here = Path(__file__).resolve().parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(here.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(here / script),
         *args], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
