"""Cases for `trainers/losses.py` that the mutation run (benchmarks/results/mutation_report.md) found missing: low
precision inputs are scored in float32, integer labels of any width, a single query with several hard negatives,
the reverse direction without hard negatives, and the shape checks of each loss. Expected values are numpy or hand
computations, not the code under test."""

import math

import numpy as np
import pytest
import torch

from trainers.losses import (
    contrastive_loss,
    cosine_similarity_loss,
    ema_alignment_loss,
    nli_loss,
    ranking_loss,
    xtr_loss,
)


def softmax_ce(scores: np.ndarray, label: int) -> float:
    """-log softmax(scores)[label] in float64."""
    top = scores.max()
    return float(np.log(np.exp(scores - top).sum()) + top - scores[label])


def bf16(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bfloat16)


def exact(tensor: torch.Tensor) -> np.ndarray:
    """The values a bf16 tensor really holds, in float64."""
    return tensor.double().numpy()


# --- low precision inputs: every loss is computed in float32 ------------------------------------------------------


def test_xtr_loss_of_bf16_logits_is_float32_and_exact():
    logits = bf16([[0.3, -1.7, 2.1, 0.05, 1.3]])
    ids, mask = torch.tensor([[2, 4, 2, 1]]), torch.tensor([[True, True, True, False]])
    z = exact(logits)[0]
    log_q = z - np.log(np.exp(z).sum())
    # p = {2: 2/3, 4: 1/3}; KL(p || q) summed over the three counted positions and divided by 3
    expected = ((math.log(2 / 3) - log_q[2]) * 2 + (math.log(1 / 3) - log_q[4])) / 3
    loss = xtr_loss(logits, ids, mask)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_of_bf16_embeddings_is_float32_and_exact():
    queries, candidates = bf16([[1.3, -0.7, 0.2], [0.1, 0.9, -1.1]]), bf16([[0.4, 1.7, 0.3], [-1.2, 0.5, 0.8]])
    scores = exact(queries) @ exact(candidates).T / 0.3
    loss = ranking_loss(queries, candidates, temperature=0.3)
    assert loss.dtype == torch.float32
    assert loss.tolist() == pytest.approx([softmax_ce(scores[0], 0), softmax_ce(scores[1], 1)], rel=1e-6)


def test_nli_loss_of_bf16_logits_and_int32_labels_is_float32_and_exact():
    logits, labels = bf16([[0.7, -0.2, 1.9], [2.3, 0.1, -0.4]]), torch.tensor([2, 1], dtype=torch.int32)
    z = exact(logits)
    expected = (softmax_ce(z[0], 2) + softmax_ce(z[1], 1)) / 2
    loss = nli_loss(logits, labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ema_alignment_loss_of_bf16_embeddings_is_float32_and_exact():
    student, teacher = bf16([[1.01, -0.33], [0.77, 2.19]]), bf16([[0.5, 0.25], [-1.3, 2.0]])
    expected = float(((exact(student) - exact(teacher)) ** 2).mean())
    loss = ema_alignment_loss(student, teacher)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cosine_similarity_loss_of_bf16_embeddings_is_float32_and_exact():
    first, second = bf16([[1.01, -0.33, 0.5], [0.77, 2.19, -1.0]]), bf16([[0.5, 0.25, 1.1], [-1.3, 2.0, 0.3]])
    a, b = exact(first), exact(second)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    scores = torch.tensor([0.6, -0.2], dtype=torch.bfloat16)
    expected = float(((cosine - exact(scores)) ** 2).mean())
    loss = cosine_similarity_loss(first, second, scores)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# --- hard negatives and the reverse direction ----------------------------------------------------------------------


def test_one_query_with_three_hard_negatives_by_hand():
    """Batch 1, K = 3 (3 is not a multiple of 2): q = (1, 0) scores its candidate 2 and the negatives 1, 0, -1."""
    query, candidate = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 5.0]])
    negatives = torch.tensor([[1.0, 3.0], [0.0, 1.0], [-1.0, 0.0]])
    e = math.exp
    expected = -math.log(e(2) / (e(2) + e(1) + e(0) + e(-1)))
    assert ranking_loss(query, candidate, negatives).tolist() == pytest.approx([expected], rel=1e-6)


def test_symmetric_ranking_loss_leaves_hard_negatives_out_of_the_reverse_direction():
    """q . c = [[2, 0], [1, 3]] (not symmetric), one negative per query scoring q0: 1, q1: 2 (n0) and q0: 0, q1: 1
    (n1). Forward: row i of q . [c | n]; reverse: candidate i against the queries only, column i of q . c."""
    queries = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    candidates = torch.tensor([[2.0, 1.0], [0.0, 2.0]])
    negatives = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    forward = [softmax_ce(np.array([2.0, 0.0, 1.0, 0.0]), 0), softmax_ce(np.array([3.0, 2.0, 2.0, 1.0]), 1)]
    reverse = [softmax_ce(np.array([2.0, 3.0]), 0), softmax_ce(np.array([0.0, 2.0]), 1)]
    got = ranking_loss(queries, candidates, negatives, symmetric=True)
    assert got.tolist() == pytest.approx([f + r for f, r in zip(forward, reverse)], rel=1e-6)


# --- shape checks: each names the shapes it got -------------------------------------------------------------------


def test_ranking_loss_refuses_tensors_that_are_not_batch_by_dim():
    three_d = torch.ones(2, 3, 1)
    with pytest.raises(ValueError, match=r"ranking_loss needs two \(batch, dim\) tensors of one shape, got "
                                         r"\(2, 3, 1\) and \(2, 3, 1\)\."):
        ranking_loss(three_d, three_d)
    with pytest.raises(ValueError, match=r"got \(2, 3\) and \(2, 4\)\."):
        ranking_loss(torch.ones(2, 3), torch.ones(2, 4))
    queries = torch.ones(2, 3)
    for negatives in (torch.ones(6), torch.ones(4, 2), torch.ones(2, 3, 1), torch.ones(3, 3)):
        with pytest.raises(ValueError, match=rf"hard_negatives must be \(batch \* K, 3\) for a batch of 2, got "
                                             rf"{re_shape(negatives)}\."):
            ranking_loss(queries, queries, negatives)
    with pytest.raises(ValueError, match=r"ranking_loss: temperature must be > 0, got 0\.0\."):
        ranking_loss(queries, queries, temperature=0.0)
    with pytest.raises(ValueError, match=r"ranking_loss: similarity='l2' is not 'dot' or 'cosine'\."):
        ranking_loss(queries, queries, similarity="l2")


def re_shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape)).replace("(", r"\(").replace(")", r"\)")


def test_the_pair_losses_refuse_tensors_that_are_not_pairs_by_dim():
    three_d = torch.ones(2, 3, 1)
    with pytest.raises(ValueError, match=r"contrastive_loss needs two \(batch, dim\) tensors of one shape, got "
                                         r"\(2, 3, 1\) and \(2, 3, 1\)\."):
        contrastive_loss(three_d, three_d, 0.1)
    with pytest.raises(ValueError, match=r"ema_alignment_loss needs two \(pairs, dim\) tensors of one shape, got "
                                         r"student \(2, 3, 1\) and teacher \(2, 3, 1\)\."):
        ema_alignment_loss(three_d, three_d)
    with pytest.raises(ValueError, match=r"cosine_similarity_loss needs two \(pairs, dim\) tensors of one shape and "
                                         r"one score per pair, got \(2, 3, 1\), \(2, 3, 1\) and scores \(2,\)\."):
        cosine_similarity_loss(three_d, three_d, torch.zeros(2))
    with pytest.raises(ValueError, match=r"got \(2, 3\), \(2, 4\) and scores \(2,\)\."):
        cosine_similarity_loss(torch.ones(2, 3), torch.ones(2, 4), torch.zeros(2))


def test_nli_loss_refuses_logits_that_are_not_three_way_and_names_bad_labels():
    for logits, labels in ((torch.zeros(2, 4), torch.zeros(2)), (torch.zeros(2, 3, 1), torch.zeros(2)),
                           (torch.zeros(2, 3), torch.zeros(3)), (torch.zeros(3), torch.zeros(3))):
        with pytest.raises(ValueError, match=rf"nli_loss needs \(n, 3\) logits and n labels, got "
                                             rf"{re_shape(logits)} and {re_shape(labels)}\."):
            nli_loss(logits, labels.long())
    with pytest.raises(ValueError, match=r"NLI labels must be 0, 1 or 2 \(entailment, neutral, contradiction\); got "
                                         r"\[-1, 5\]\. Map the dataset's labels to these ids first\."):
        nli_loss(torch.zeros(4, 3), torch.tensor([5, 0, -1, 5]))


def test_xtr_loss_names_the_three_shapes():
    with pytest.raises(ValueError, match=r"xtr_loss: logits \(2, 4\), target_ids \(2, 5\) and target_mask \(2, 4\) "
                                         r"do not describe the same batch\."):
        xtr_loss(torch.zeros(2, 4), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))
