import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from trainers.encoding import encode
from trainers.hub import PUBLISH_IGNORE, files_to_publish, publish


def test_sentence_transformers_gives_the_same_embeddings(saved_model, small_pairs):
    folder, model, tokenizer = saved_model
    texts = [row["tgt"] for row in small_pairs[:20]] + ["word " * 100]  # one text longer than the model
    ours = encode(model, tokenizer, texts)
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    assert st.get_max_seq_length() == 32
    np.testing.assert_allclose(st.encode(texts, batch_size=8), ours, rtol=1e-4, atol=1e-5)


def test_the_module_paths_written_resolve_to_sentence_transformers_6_modules(saved_model):
    """sentence-transformers 6 maps the 5.x paths (`sentence_transformers.models.X`) onto its own classes."""
    from sentence_transformers import util
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    folder, _, _ = saved_model
    types = [module["type"] for module in json.loads((folder / "modules.json").read_text())]
    assert [util.import_from_string(name) for name in types] == [Transformer, Pooling]


def _embed_in_a_sentence_transformers_release(version: str, folder: Path, texts: list[str], where: Path):
    """Embed `texts` with `SentenceTransformer(folder)` of the sentence-transformers `version`, installed on its own
    (pip, no dependencies: this environment's torch and transformers) into `where`; skipped when pip cannot fetch it."""
    target = where / f"st-{version}"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                f"sentence-transformers=={version}"], capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        pytest.skip(f"pip cannot install sentence-transformers=={version} here: {installed.stderr[-500:]}")
    script = ("import json, sys, numpy, sentence_transformers as st\n"
              "assert st.__version__ == sys.argv[1], st.__version__\n"
              "model = st.SentenceTransformer(sys.argv[2], trust_remote_code=True, device='cpu')\n"
              "numpy.save(sys.argv[3], model.encode(json.loads(sys.argv[4]), batch_size=8))\n")
    output = where / f"embeddings-{version}.npy"
    result = subprocess.run([sys.executable, "-c", script, version, str(folder), str(output), json.dumps(texts)],
                            capture_output=True, text=True, timeout=600, cwd=where,
                            env={**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(output)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["5.0.0", "5.7.0"])
def test_a_saved_folder_loads_in_sentence_transformers_5(saved_model, small_pairs, tmp_path, version):
    """The first and the last 5.x release (6.x is the installed one: see the test above and
    test_sentence_transformers_gives_the_same_embeddings)."""
    folder, model, tokenizer = saved_model
    texts = [row["tgt"] for row in small_pairs[:20]] + ["word " * 100]  # one text longer than the model
    theirs = _embed_in_a_sentence_transformers_release(version, folder, texts, tmp_path)
    np.testing.assert_allclose(theirs, encode(model, tokenizer, texts), rtol=1e-4, atol=1e-5)


def test_files_to_publish_leave_training_state_out(saved_model):
    folder, _, _ = saved_model
    files = files_to_publish(folder)
    assert "config.json" in files and "modeling_ems.py" in files and "1_Pooling/config.json" in files
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in files)


@pytest.mark.parametrize("recipe, kept", [
    ("ema_alignment", "runs/A+B-seed0/model.safetensors"),  # the EMA recipe keeps stage1/ aside, not runs/
    ("multisource", "stage1/model.safetensors"),  # the multi-source sweep keeps runs/ aside
])
def test_files_to_publish_leave_the_recipes_intermediate_models_out(tmp_path, recipe, kept):
    from trainers.recipes import publish_ignore

    for name in ("config.json", "model.safetensors", "lora_adapter/adapter_model.safetensors",
                 "stage1/model.safetensors", "runs/A+B-seed0/model.safetensors"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert len(files_to_publish(tmp_path)) == 5  # hub.py knows no recipe: without one, nothing more is left out
    (tmp_path / "training_config.yaml").write_text(f"recipe: {recipe}\n")
    assert sorted(files_to_publish(tmp_path, publish_ignore(tmp_path))) == sorted(
        ["config.json", "lora_adapter/adapter_model.safetensors", "model.safetensors", kept])  # run state stays


class RecordingApi:
    """`HfApi` stand-in: records the calls and what the uploaded folder held at upload time."""

    def __init__(self):
        self.calls, self.uploaded = [], {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {name: (folder / name).read_bytes() for name in files_to_publish(folder)}
        return "commit"


def test_publish_goes_through_huggingface_hub_upload_folder(saved_model):
    folder, _, _ = saved_model
    api = RecordingApi()
    assert publish(folder, "me/ems", api=api, heads=True) == "commit"
    assert api.calls[0] == ("create_repo", "me/ems", {"private": False, "exist_ok": True})
    assert api.calls[1][1]["folder_path"] == str(folder) and api.calls[1][1]["ignore_patterns"] == PUBLISH_IGNORE


def test_published_folder_is_the_bare_encoder_unless_heads_are_asked_for(tiny_pretraining_model, saved_model, tmp_path):
    source, _, tokenizer = saved_model
    folder = tmp_path / "trained"
    tiny_pretraining_model.save_pretrained(folder)  # what training leaves: encoder and heads
    for name in files_to_publish(source):
        if not (folder / name).exists():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes((source / name).read_bytes())
    api = RecordingApi()
    publish(folder, "me/ems", api=api)
    published = tmp_path / "published"
    for name, content in api.uploaded.items():
        (published / name).parent.mkdir(parents=True, exist_ok=True)
        (published / name).write_bytes(content)
    keys = load_file(published / "model.safetensors").keys()
    assert keys and not any(key.startswith(("xtr_head", "contrastive_head", "ems.")) for key in keys)
    assert json.loads((published / "config.json").read_text())["architectures"] == ["EMSModel"]
    assert set(api.uploaded) == set(files_to_publish(folder))  # tokenizer, code, card: all there
    assert len(api.uploaded["model.safetensors"]) < 0.9 * (folder / "model.safetensors").stat().st_size
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(AutoModel.from_pretrained(published).eval()(ids).pooler_output,
                               tiny_pretraining_model.ems(ids).pooler_output)
    publish(folder, "me/ems", api=api, heads=True)
    assert any(key.startswith("xtr_head.") for key in load_file(folder / "model.safetensors"))
    assert api.uploaded["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_publish_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        files_to_publish(tmp_path)


def test_publish_dry_run_script_lists_files(saved_model):
    folder, _, _ = saved_model
    result = subprocess.run([sys.executable, "scripts/publish.py", str(folder), "--repo_id", "me/ems", "--dry_run"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Would upload" in result.stdout and "model.safetensors" in result.stdout
    assert "optimizer.pt" not in result.stdout


def test_an_upload_that_cannot_reach_the_hub_is_one_line_with_the_fix(saved_model):
    from huggingface_hub.errors import OfflineModeIsEnabled

    class Offline(RecordingApi):
        def create_repo(self, *args, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")

    folder, _, _ = saved_model
    with pytest.raises(ValueError) as error:
        publish(folder, "me/ems", api=Offline())
    message = str(error.value)
    assert "\n" not in message and "me/ems failed (OfflineModeIsEnabled: Cannot reach" in message
    assert "hf auth login" in message and "--dry_run" in message


def test_a_classifier_folder_publishes_its_classifier(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from trainers.hub import publishable_folder

    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "classifier")
    with publishable_folder(tmp_path / "classifier") as source:
        published = json.loads((source / "config.json").read_text())
        weights = load_file(source / "model.safetensors")
    assert published["architectures"] == ["BertForSequenceClassification"]
    assert weights["classifier.weight"].shape == (3, 8)  # the head is the model: not stripped to the bare encoder
