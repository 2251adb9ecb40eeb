import subprocess
import sys

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from trainers.encoding import encode
from trainers.hub import PUBLISH_IGNORE, files_to_publish, publish


def test_sentence_transformers_gives_the_same_embeddings(saved_model, small_pairs):
    folder, model, tokenizer = saved_model
    texts = [row["tgt"] for row in small_pairs[:20]] + ["word " * 100]  # one text longer than the model
    ours = encode(model, tokenizer, texts)
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    assert st.get_max_seq_length() == 32
    np.testing.assert_allclose(st.encode(texts, batch_size=8), ours, rtol=1e-4, atol=1e-5)


def test_files_to_publish_leave_training_state_out(saved_model):
    folder, _, _ = saved_model
    files = files_to_publish(folder)
    assert "config.json" in files and "modeling_ems.py" in files and "1_Pooling/config.json" in files
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in files)


def test_publish_goes_through_huggingface_hub_upload_folder(saved_model):
    folder, _, _ = saved_model
    calls = []

    class RecordingApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "commit"

    assert publish(folder, "me/ems", api=RecordingApi()) == "commit"
    assert calls[0] == ("create_repo", "me/ems", {"private": False, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(folder) and calls[1][1]["ignore_patterns"] == PUBLISH_IGNORE


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
