"""Matryoshka losses (`trainers.losses.matryoshka_loss`): each term on the leading dimensions, summed with weights,
checked by hand on tiny cases; bad dimensions are clear errors."""

import math

import pytest
import torch

from trainers.losses import check_matryoshka_dims, ema_alignment_loss, matryoshka_loss, ranking_loss


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
