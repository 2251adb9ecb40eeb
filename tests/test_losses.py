import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainers.losses import contrastive_loss, cosine_similarity_loss, ems_objective, nli_loss, ranking_loss, xtr_loss


def dense_xtr_reference(logits, target_ids, target_mask):
    """KL(p || q) with p built as a dense batch x vocabulary bag of tokens (eq. 7)."""
    p = torch.zeros_like(logits)
    for row in range(target_ids.shape[0]):
        tokens = target_ids[row][target_mask[row]]
        for token in tokens:
            p[row, token] += 1.0 / len(tokens)
    log_q = torch.log_softmax(logits, dim=-1)
    return torch.where(p > 0, p * (torch.log(p) - log_q), torch.zeros_like(p)).sum(dim=-1)


def test_xtr_loss_hand_computed_with_repeated_token_and_padding():
    # vocabulary of 4, uniform prediction: q(w) = 1/4 for every w.
    logits = torch.zeros(2, 4)
    # row 0: tokens [1, 1, 2] then padding -> p = {1: 2/3, 2: 1/3}
    # row 1: tokens [3] plus a special token (id 0) that is masked out -> p = {3: 1}
    target_ids = torch.tensor([[1, 1, 2, 0], [3, 0, 0, 0]])
    target_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    expected_row0 = (2 / 3) * math.log((2 / 3) / 0.25) + (1 / 3) * math.log((1 / 3) / 0.25)
    expected_row1 = 1.0 * math.log(1.0 / 0.25)
    loss = xtr_loss(logits, target_ids, target_mask)
    assert loss.tolist() == pytest.approx([expected_row0, expected_row1], rel=1e-6)


def test_xtr_loss_hand_computed_non_uniform_prediction():
    logits = torch.tensor([[math.log(1.0), math.log(2.0), math.log(1.0)]])  # q = [1/4, 1/2, 1/4]
    target_ids = torch.tensor([[1, 2, 1, 1]])  # p = {1: 3/4, 2: 1/4}
    target_mask = torch.ones_like(target_ids, dtype=torch.bool)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.25)
    assert xtr_loss(logits, target_ids, target_mask).item() == pytest.approx(expected, rel=1e-6)


def test_xtr_loss_is_zero_when_prediction_equals_bag_of_tokens():
    p = torch.tensor([[0.0, 0.5, 0.25, 0.25]])
    logits = torch.log(p.clamp(min=1e-30))
    target_ids = torch.tensor([[1, 2, 1, 3]])
    assert xtr_loss(logits, target_ids, torch.ones(1, 4, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-5)


def test_sparse_xtr_equals_dense_reference_and_gradients():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=generator, requires_grad=True)
    target_ids = torch.randint(1, 50, (6, 12), generator=generator)
    target_ids[:, 5:8] = target_ids[:, :3]  # repeated tokens
    target_mask = torch.rand(6, 12, generator=generator) > 0.3
    target_mask[:, 0] = True
    sparse = xtr_loss(logits, target_ids, target_mask)
    dense = dense_xtr_reference(logits, target_ids, target_mask)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    (grad_sparse,) = torch.autograd.grad(sparse.sum(), logits)
    (grad_dense,) = torch.autograd.grad(dense.sum(), logits)
    torch.testing.assert_close(grad_sparse, grad_dense, rtol=1e-5, atol=1e-6)


def test_xtr_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same batch"):
        xtr_loss(torch.zeros(2, 4), torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5, dtype=torch.bool))


def test_contrastive_loss_hand_computed():
    # two pairs; cosines: s0.t0 = 1, s0.t1 = 0, s1.t0 = 0, s1.t1 = 1 (orthonormal) and T = 0.5
    source = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # unnormalised on purpose: cosine, not dot product
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per_direction = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
    loss = contrastive_loss(source, target, temperature=0.5)
    assert loss.tolist() == pytest.approx([2 * per_direction, 2 * per_direction], rel=1e-6)


def test_contrastive_loss_is_symmetric_in_its_two_terms():
    source = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.2], [0.3, 1.0], [-1.0, 1.0]])
    T = 0.1
    sim = F.normalize(source, dim=-1) @ F.normalize(target, dim=-1).T / T
    expected = F.cross_entropy(sim, torch.arange(3), reduction="none") + F.cross_entropy(
        sim.T, torch.arange(3), reduction="none"
    )
    torch.testing.assert_close(contrastive_loss(source, target, T), expected)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_contrastive_loss_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(torch.ones(2, 3), torch.ones(2, 3), temperature)


def test_contrastive_loss_rejects_mismatched_pairs():
    with pytest.raises(ValueError, match="one shape"):
        contrastive_loss(torch.ones(2, 3), torch.ones(3, 3), 0.1)


def test_ems_objective_weighs_its_terms_and_skips_those_weighted_zero():
    """Eq. 12 on a PairLayout batch of 2 pairs: the weighted sum of the two terms, each checked against its own
    function; a term weighted 0 is neither computed nor returned, so its head's output may be None."""
    torch.manual_seed(0)
    logits, embeddings = torch.randn(4, 7), torch.randn(4, 5)
    ids, mask = torch.tensor([[1, 2], [3, 3], [4, 0], [5, 6]]), torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1]]).bool()
    xtr = (xtr_loss(logits, ids, mask)[:2] + xtr_loss(logits, ids, mask)[2:]).mean()
    contrastive = contrastive_loss(embeddings[:2], embeddings[2:], 0.1).mean()
    loss, terms = ems_objective(logits, embeddings, ids, mask, 0.1, xtr_weight=0.5, contrastive_weight=2.0)
    assert torch.allclose(loss, 0.5 * xtr + 2.0 * contrastive)
    assert torch.allclose(terms["xtr_loss"], xtr) and torch.allclose(terms["contrastive_loss"], contrastive)
    loss, terms = ems_objective(None, embeddings, ids, mask, 0.1, xtr_weight=0.0)
    assert list(terms) == ["contrastive_loss"] and torch.allclose(loss, contrastive)
    loss, terms = ems_objective(logits, None, ids, mask, 0.1, contrastive_weight=0.0)
    assert list(terms) == ["xtr_loss"] and torch.allclose(loss, xtr)


def test_cosine_similarity_loss_is_the_mse_of_the_cosine_to_the_gold_score():
    """Ham & Kim sec. 5.1 by hand: cos((1, 0), (1, 1)) = 1/sqrt(2) against gold 1, cos((0, 2), (0, -1)) = -1 against
    gold 0, so the loss is ((1 - 1/sqrt(2))^2 + 1) / 2; gradients reach both sides."""
    first = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    second = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    loss = cosine_similarity_loss(first, second, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(((1 - 1 / math.sqrt(2)) ** 2 + 1) / 2)
    loss.backward()
    assert first.grad.abs().sum() > 0 and second.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"one score per pair, got \(2, 2\), \(2, 2\) and scores \(3,\)"):
        cosine_similarity_loss(first, second, torch.zeros(3))


def test_ranking_loss_is_eq_2_on_dot_products_by_hand():
    """Multi-task dual-encoder eq. 2: q0 . [c0, c1] = [2, 0], q1 . [c0, c1] = [0, 3] (dot product, unnormalised)."""
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    expected = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-3.0))]
    assert ranking_loss(queries, candidates).tolist() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_hard_negatives_join_every_querys_candidates_by_hand():
    """K = 1 hard negative per query, appended after the candidates: q0 scores [2, 0 | 3, 0], q1 [0, 3 | 0, 0]."""
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    negatives = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    e = math.exp
    expected = [-math.log(e(2) / (e(2) + 1 + e(3) + 1)), -math.log(e(3) / (e(3) + 3))]
    assert ranking_loss(queries, candidates, negatives).tolist() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"hard_negatives must be \(batch \* K, 2\)"):
        ranking_loss(queries, candidates, torch.ones(3, 2))


def reference_ranking(queries, candidates, negatives=None, cosine=False, temperature=1.0):
    """Eq. 2 written out with numpy, one query at a time: -log softmax over [candidates; negatives] of the query's own
    candidate (independent of the code under test)."""
    q, c = np.asarray(queries, dtype=np.float64), np.asarray(candidates, dtype=np.float64)
    pool = c if negatives is None else np.vstack([c, np.asarray(negatives, dtype=np.float64)])
    if cosine:
        q, pool = (m / np.linalg.norm(m, axis=1, keepdims=True) for m in (q, pool))
    losses = []
    for i, query in enumerate(q):
        scores = pool @ query / temperature
        losses.append(np.log(np.exp(scores - scores.max()).sum()) + scores.max() - scores[i])
    return losses


def test_ranking_loss_on_a_non_symmetric_batch_matches_eq_2_row_by_row():
    """Three queries whose similarity matrix is not symmetric: the loss of row i is the softmax over row i (query i
    against every candidate), which a transposed softmax (candidate i against every query) would not give."""
    queries = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 3.0, 1.0]])
    candidates = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 1.0], [-1.0, 2.0, 0.5]])
    scores = (queries @ candidates.T).numpy()
    assert not np.allclose(scores, scores.T)
    expected = reference_ranking(queries, candidates)
    assert ranking_loss(queries, candidates).tolist() == pytest.approx(expected, rel=1e-6)
    transposed = reference_ranking(candidates, queries)
    assert not np.allclose(expected, transposed)  # the case tells the two directions apart
    negatives = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert ranking_loss(queries, candidates, negatives).tolist() == pytest.approx(
        reference_ranking(queries, candidates, negatives), rel=1e-6)
    assert ranking_loss(queries, candidates, similarity="cosine", temperature=0.5).tolist() == pytest.approx(
        reference_ranking(queries, candidates, cosine=True, temperature=0.5), rel=1e-6)


def test_contrastive_loss_is_both_directions_of_eq_8_on_a_non_symmetric_batch():
    """EMS eq. 8: source->target plus target->source cross-entropy over cosine / T, each direction written out."""
    generator = torch.Generator().manual_seed(0)
    source, target = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    forward = reference_ranking(source, target, cosine=True, temperature=0.1)
    backward = reference_ranking(target, source, cosine=True, temperature=0.1)
    assert not np.allclose(forward, backward)
    expected = [f + b for f, b in zip(forward, backward)]
    assert contrastive_loss(source, target, 0.1).tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="similarity='l2'"):
        ranking_loss(source, target, similarity="l2")


def test_nli_loss_is_cross_entropy_by_hand_and_refuses_labels_outside_0_1_2():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    # row 0: uniform, label 1 -> log 3; row 1: softmax (1/2, 1/4, 1/4), label 0 -> log 2
    assert nli_loss(logits, torch.tensor([1, 0])).item() == pytest.approx((math.log(3) + math.log(2)) / 2)
    for bad in (3, -1):
        with pytest.raises(ValueError, match=rf"must be 0, 1 or 2.*got \[{bad}\]"):
            nli_loss(logits, torch.tensor([0, bad]))


# --- false negatives of a multi-parallel batch, masked by text (issue 20) ----------------------------------------


def pooled_reference(queries, pool, own, allowed):
    """-log softmax of `pool[own[i]]` among `pool[allowed[i]]` for each query i, with numpy."""
    losses = []
    for i, query in enumerate(np.asarray(queries, dtype=np.float64)):
        scores = np.asarray(pool, dtype=np.float64)[allowed[i]] @ query
        losses.append(np.log(np.exp(scores).sum()) - float(np.asarray(pool, dtype=np.float64)[own[i]] @ query))
    return losses


def test_ranking_loss_masks_false_negatives_by_hand():
    """Rows 0 and 2 share their query text (one source, two translations: each is the other's positive, not a
    negative); row 0's mined negative is row 1's target. Written as the pool each query's softmax may use."""
    queries = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 3.0, 1.0]])
    candidates = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 1.0], [-1.0, 2.0, 0.5]])
    negatives = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    query_ids, candidate_ids, negative_ids = torch.tensor([10, 11, 10]), torch.tensor([20, 21, 22]), \
        torch.tensor([21, 30, 31])
    pool = torch.cat([candidates, negatives])  # rows 0-2 the candidates, 3-5 the negatives
    allowed = [[0, 1, 3, 4, 5],  # query 0: not candidate 2 (query 2 is the same text)
               [0, 1, 2, 4, 5],  # query 1: not negative 0 (the text of its own candidate)
               [1, 2, 3, 4, 5]]  # query 2: not candidate 0
    expected = pooled_reference(queries, pool, [0, 1, 2], allowed)
    assert expected != pytest.approx(reference_ranking(queries, candidates, negatives))  # the mask changes the loss
    masked = ranking_loss(queries, candidates, negatives, query_ids=query_ids, candidate_ids=candidate_ids,
                          negative_ids=negative_ids)
    assert masked.tolist() == pytest.approx(expected, rel=1e-6)
    # symmetric (EMS eq. 8's reverse direction): candidate i ranks the queries, the same pairs of rows masked
    forward = pooled_reference(queries, candidates, [0, 1, 2], [[0, 1], [0, 1, 2], [1, 2]])
    backward = pooled_reference(candidates, queries, [0, 1, 2], [[0, 1], [0, 1, 2], [1, 2]])
    both = ranking_loss(queries, candidates, symmetric=True, query_ids=query_ids, candidate_ids=candidate_ids)
    assert both.tolist() == pytest.approx([f + b for f, b in zip(forward, backward)], rel=1e-6)
    # a candidate text repeated in another row (two sources, one translation) is masked too
    repeated = ranking_loss(queries, candidates, query_ids=torch.tensor([10, 11, 12]),
                            candidate_ids=torch.tensor([20, 20, 22]))
    assert repeated.tolist() == pytest.approx(
        pooled_reference(queries, candidates, [0, 1, 2], [[0, 2], [1, 2], [0, 1, 2]]), rel=1e-6)
    # distinct texts: nothing masked, eq. 2 as before
    plain = ranking_loss(queries, candidates, negatives, query_ids=torch.tensor([1, 2, 3]),
                         candidate_ids=torch.tensor([4, 5, 6]), negative_ids=torch.tensor([7, 8, 9]))
    assert plain.tolist() == pytest.approx(reference_ranking(queries, candidates, negatives), rel=1e-6)
    with pytest.raises(ValueError, match="give all of them or none"):
        ranking_loss(queries, candidates, negatives, query_ids=query_ids, candidate_ids=candidate_ids)


def test_text_hashes_are_equal_for_equal_texts_only():
    from trainers.collators import text_hashes

    ids = text_hashes(["Hallo", "Bonjour", "Hallo", "hallo"]).tolist()
    assert ids[0] == ids[2] and len({ids[0], ids[1], ids[3]}) == 3 and all(0 <= i < 2**63 for i in ids)
    assert text_hashes(["Hallo"]).tolist() == [ids[0]]  # the same in every batch and process
