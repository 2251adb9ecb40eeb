"""Matryoshka losses (`trainers.losses.matryoshka_loss`): each term on the leading dimensions, summed with weights,
checked by hand on tiny cases; bad dimensions are clear errors."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from modeling_ems.modeling_dual_encoder import DualEncoderMultiTaskOutput
from trainers.losses import check_matryoshka_dims, ema_alignment_loss, matryoshka_loss, ranking_loss
from trainers.recipes import run_recipe
from trainers.recipes.multitask.tasks import task_loss

from .test_grad_cache import loss_and_gradients, ragged_batch, tiny_model, trainer
from .test_multitask_recipe import tiny_config


def test_mse_terms_on_the_leading_dims_by_hand():
    student, teacher = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    # d = 2: (1 + 4) / 2 = 2.5; d = 1: 1 / 1 = 1
    assert matryoshka_loss(ema_alignment_loss, [student, teacher], [2, 1]).item() == pytest.approx(3.5)
    assert matryoshka_loss(ema_alignment_loss, [student, teacher], [2, 1], [1.0, 2.0]).item() == pytest.approx(4.5)
    assert matryoshka_loss(ema_alignment_loss, [student, teacher]).item() == pytest.approx(2.5)  # no dims: as is


def test_ranking_terms_on_the_leading_dims_by_hand():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = queries.clone()
    loss = matryoshka_loss(lambda q, c: ranking_loss(q, c, gather_across_processes=False), [queries, candidates],
                           [2, 1])
    # d = 2: logits = identity, each row -log(e / (e + 1)); d = 1: logits [[1, 0], [0, 0]]: row 0 the same, row 1 log 2
    row0 = 2 * math.log(1 + math.exp(-1))
    row1 = math.log(1 + math.exp(-1)) + math.log(2)
    assert loss.tolist() == pytest.approx([row0, row1])


def test_terms_are_summed_per_name():
    def two_terms(a, b):
        first, second = ema_alignment_loss(a, b), ema_alignment_loss(2 * a, b)
        return first + second, {"first": first, "second": second}

    loss, terms = matryoshka_loss(two_terms, [torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)], [2, 1])
    assert terms["first"].item() == pytest.approx(3.5) and terms["second"].item() == pytest.approx(4 * 3.5)
    assert loss.item() == pytest.approx(5 * 3.5)


@pytest.mark.parametrize("dims, weights, message", [
    ([384, 512], None, "not strictly decreasing"),
    ([512, 256], None, r"512 is larger than the embedding \(384 dims\)"),
    ([384, 0], None, "integer >= 1"),
    ([], None, "give a list"),
    ([384, 128], [1.0], "one weight >= 0 per dimension"),
])
def test_bad_dims_are_clear_errors(dims, weights, message):
    with pytest.raises(ValueError, match=message):
        check_matryoshka_dims(dims, 384, weights)
    if dims:
        with pytest.raises(ValueError, match=message):
            matryoshka_loss(ema_alignment_loss, [torch.zeros(1, 384), torch.zeros(1, 384)], dims, weights)


# --- the recipes' losses on the leading dims ---------------------------------------------------------------------
def symmetric_info_nce_by_hand(sources: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 8 written out: cosine / T, cross-entropy of row i's own translation, both directions, mean over pairs."""
    cosine = F.normalize(sources, dim=-1) @ F.normalize(targets, dim=-1).T / temperature
    labels = torch.arange(len(sources))
    return F.cross_entropy(cosine, labels) + F.cross_entropy(cosine.T, labels)


def test_ems_adds_eq_8_on_the_leading_dims_of_the_sentence_embedding(tmp_path):
    """EMS with matryoshka_dims [32, 8] (weights 1, 0.5): the loss is eq. 12 plus 1 x eq. 8 on u[:, :32] + 0.5 x
    eq. 8 on u[:, :8], u the mean-pooled sentence embedding (not the contrastive head's h(S)), logged as
    `matryoshka_loss`; GradCache (mini-batches of 1 pair) gives the same loss and gradients."""
    batch = ragged_batch()
    plain_model, model = tiny_model(0.0), tiny_model(0.0)
    plain = trainer(tmp_path, plain_model)
    with_dims = trainer(tmp_path, model, matryoshka_dims=[32, 8], matryoshka_weights=[1.0, 0.5])
    u = model(batch["input_ids"], batch["attention_mask"],
              target_language_ids=batch["target_language_ids"]).pooler_output.detach()
    temperature = model.config.temperature
    expected = (symmetric_info_nce_by_hand(u[:5], u[5:], temperature)
                + 0.5 * symmetric_info_nce_by_hand(u[:5, :8], u[5:, :8], temperature))
    loss = with_dims.compute_loss(model, batch)
    torch.testing.assert_close(with_dims._loss_sums["matryoshka_loss"], expected)
    torch.testing.assert_close(loss.detach(), plain.compute_loss(plain_model, batch).detach() + expected)

    whole_loss, whole_gradients = loss_and_gradients(with_dims, model, batch)
    cached_model = tiny_model(0.0)
    cached = trainer(tmp_path, cached_model, matryoshka_dims=[32, 8], matryoshka_weights=[1.0, 0.5],
                     mini_batch_size=1)
    cached_loss, cached_gradients = loss_and_gradients(cached, cached_model, batch)
    torch.testing.assert_close(cached_loss, whole_loss)
    for name, gradient in cached_gradients.items():
        torch.testing.assert_close(gradient, whole_gradients[name], rtol=1e-4, atol=1e-5, msg=name)


def test_multitask_ranking_losses_on_the_leading_dims_by_hand():
    """A response batch of 2 inputs against 2 responses in 3 dims, the dot product (eq. 2), dims [3, 1] with
    weights [1, 2]: cross-entropy of each input's own response among the batch on all 3 dims, plus twice that on
    the first dim alone (the softmax over rows of q @ c.T, not its transpose)."""
    queries = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0]])
    candidates = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    outputs = DualEncoderMultiTaskOutput(task_embeddings=(queries, candidates))

    def by_hand(dim):
        scores = queries[:, :dim] @ candidates[:, :dim].T  # [[2, 2], [2, 3]] at 3 dims, [[2, 0], [1, 0]] at 1
        return -(scores.diagonal() - scores.logsumexp(dim=1)).mean()

    expected = by_hand(3) + 2 * by_hand(1)
    loss = task_loss("response", outputs, matryoshka_dims=[3, 1], matryoshka_weights=[1.0, 2.0])
    assert loss.item() == pytest.approx(expected.item())
    # at 1 dim: row 0 -log(e^2 / (e^2 + e^0)), row 1 (own response scores 0, the other 1) -log(1 / (e + 1))
    assert by_hand(1).item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2)
    assert task_loss("response", outputs).item() == pytest.approx(by_hand(3).item())


def test_multitask_hard_negatives_are_truncated_with_their_pair():
    """Translation with one hard negative per pair: each Matryoshka term ranks the truncated target among the
    truncated targets and negatives (the term at 1 dim equals the task's loss on embeddings cut to 1 dim)."""
    generator = torch.Generator().manual_seed(0)
    sources, targets, negatives = (torch.randn(3, 4, generator=generator) for _ in range(3))
    full = DualEncoderMultiTaskOutput(task_embeddings=(sources, targets, negatives))
    cut = DualEncoderMultiTaskOutput(task_embeddings=(sources[:, :1], targets[:, :1], negatives[:, :1]))
    torch.testing.assert_close(task_loss("translation", full, matryoshka_dims=[4, 1]),
                               task_loss("translation", full) + task_loss("translation", cut))


def test_a_multitask_run_with_dims_says_so_in_its_folder_and_card(tmp_path, small_pairs, heldout_pairs):
    """The trained folder's sentence-transformers config and card name the dims; sentence-transformers reads the
    config past the extra key and still gives the full embedding unless truncate_dim is asked for."""
    from sentence_transformers import SentenceTransformer

    output_dir = tmp_path / "run"
    run_recipe(tiny_config(tmp_path, small_pairs, heldout_pairs, tasks={"translation": {"batch_size": 16}},
                           max_steps=2, save_steps=2, matryoshka_dims=[32, 8]), output_dir)
    assert json.loads((output_dir / "config_sentence_transformers.json").read_text())["matryoshka_dims"] == [32, 8]
    card = (output_dir / "README.md").read_text()
    assert "Matryoshka dimensions: each ranking loss (eq. 2) was taken on the leading 32, 8 dimensions" in card
    model = SentenceTransformer(str(output_dir), trust_remote_code=True)
    assert model.encode(["Open the file."]).shape == (1, 32)
    assert SentenceTransformer(str(output_dir), trust_remote_code=True, truncate_dim=8).encode(
        ["Open the file."]).shape == (1, 8)


def test_dims_wider_than_the_embedding_stop_the_run_before_training(tmp_path, small_pairs, heldout_pairs,
                                                                    monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(transformers.Trainer, "train", train)
    config = tiny_config(tmp_path, small_pairs, heldout_pairs, tasks={"translation": {"batch_size": 16}},
                         max_steps=2, save_steps=2, matryoshka_dims=[64, 8])
    with pytest.raises(ValueError, match=r"matryoshka_dims=\[64, 8\]: 64 is larger than the embedding \(32 dims\)"):
        run_recipe(config, tmp_path / "run")
