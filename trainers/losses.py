"""Training objectives, each written once and shared by every trainer that needs it."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from .layout import PairLayout


def xtr_loss(xtr_logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Cross-lingual token-level reconstruction, EMS paper eqs. 6-7: `KL(p_S' || q_S)` for each sentence.

    `p_S'(w) = N_w / ||S'||` is the bag of tokens of the translation `S'`; `q_S = softmax(xtr_logits)` is the model's
    prediction from `S`. The KL divergence is a sum over the translation's token positions,
    `(1 / ||S'||) * sum_i [log(N_{w_i} / ||S'||) - log q_S(w_i)]`, so no dense batch x vocabulary target is built.

    Args:
        xtr_logits: `(batch, vocab_size)` logits of `q_S` (eqs. 4-5).
        target_ids: `(batch, target_len)` token ids of each sentence's translation.
        target_mask: `(batch, target_len)`, true for the tokens that count (not padding, not special tokens).

    Returns:
        `(batch,)` KL divergences; a sentence whose translation has no counted token gets 0.
    """
    if xtr_logits.shape[0] != target_ids.shape[0] or target_ids.shape != target_mask.shape:
        raise ValueError(
            f"xtr_loss: logits {tuple(xtr_logits.shape)}, target_ids {tuple(target_ids.shape)} and target_mask "
            f"{tuple(target_mask.shape)} do not describe the same batch."
        )
    mask = target_mask.bool()
    length = mask.sum(dim=1, keepdim=True).clamp(min=1)  # ||S'||
    same_token = (target_ids.unsqueeze(2) == target_ids.unsqueeze(1)) & mask.unsqueeze(1)
    log_p = torch.log(same_token.sum(dim=2).clamp(min=1) / length)  # eq. 7: log(N_w / ||S'||) at each position
    log_q = torch.log_softmax(xtr_logits.float(), dim=-1).gather(1, target_ids.masked_fill(~mask, 0))
    return ((log_p - log_q) * mask).sum(dim=1) / length.squeeze(1)  # eq. 6, one direction


def ranking_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    similarity: str = "dot",
    temperature: float = 1.0,
    symmetric: bool = False,
    gather_across_processes: bool = True,
    query_ids: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch-softmax ranking loss: `-log P~(c_i | q_i)` of the multi-task dual-encoder paper's eq. 2, every other
    candidate of the batch (and each hard negative) competing with the right one.

    Row `i` of `candidates` answers row `i` of `queries`. `similarity` is `phi`: `"dot"` (eq. 2's `g(q)^T g(c)`) or
    `"cosine"`; either is divided by `temperature`. Under `torch.distributed`, candidates (and queries, when
    symmetric) are gathered from all processes with gradients flowing back to their owners, so P processes with
    batch b give the same loss and (DDP-averaged) gradients as one process with batch P * b.

    Args:
        hard_negatives: `(batch * K, dim)`, K negatives per query, query by query (Guo et al.'s hard negatives for
            translation ranking). They are gathered too and appended after all candidates, so every query's label
            stays the row of its own candidate; each negative competes for every query, like the other candidates.
        symmetric: add the candidate -> query direction (EMS eq. 8's second term), without the hard negatives.
        query_ids, candidate_ids, negative_ids: integer ids of the texts (`(batch,)`, `(batch,)`, `(batch * K,)`;
            equal texts, equal ids: `trainers.collators.text_hashes`). With them, the false negatives of a
            multi-parallel batch are masked out of the softmax (as sentence-transformers' GISTEmbedLoss masks its
            false negatives): for query `i`, every other candidate (and hard negative) whose text is the answer of
            a row asking the same query (two rows of one source: their targets translate each other) or, in the
            batch, answers the same query; the reverse direction likewise (`_false_negative_masks`).

    Returns:
        `(batch,)`: for each local query, the cross-entropy of its candidate (plus the reverse one when symmetric).
    """
    if queries.shape != candidates.shape or queries.dim() != 2:
        raise ValueError(
            f"ranking_loss needs two (batch, dim) tensors of one shape, got {tuple(queries.shape)} and "
            f"{tuple(candidates.shape)}."
        )
    if hard_negatives is not None and (hard_negatives.dim() != 2 or hard_negatives.shape[1] != queries.shape[1]
                                       or hard_negatives.shape[0] % max(queries.shape[0], 1)):
        raise ValueError(f"hard_negatives must be (batch * K, {queries.shape[1]}) for a batch of {queries.shape[0]}, "
                         f"got {tuple(hard_negatives.shape)}.")
    if similarity not in ("dot", "cosine"):
        raise ValueError(f"ranking_loss: similarity={similarity!r} is not 'dot' or 'cosine'.")
    if not temperature > 0:
        raise ValueError(f"ranking_loss: temperature must be > 0, got {temperature!r}.")
    sides = [queries, candidates] + ([] if hard_negatives is None else [hard_negatives])
    sides = [F.normalize(side.float(), dim=-1) if similarity == "cosine" else side.float() for side in sides]
    gathered, offset = sides, 0
    if gather_across_processes and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [torch.cat(all_gather(side)) for side in sides]
        offset = dist.get_rank() * queries.shape[0]
    labels = torch.arange(queries.shape[0], device=queries.device) + offset
    all_candidates = torch.cat([gathered[1]] + gathered[2:])  # hard negatives after every candidate: labels hold
    logits = sides[0] @ all_candidates.T / temperature
    masks = None
    if query_ids is not None or candidate_ids is not None:
        masks = _false_negative_masks(labels, query_ids, candidate_ids, negative_ids, hard_negatives,
                                      gathered is not sides)
        logits = logits.masked_fill(masks[0], float("-inf"))
    loss = F.cross_entropy(logits, labels, reduction="none")  # eq. 2
    if symmetric:
        reverse = sides[1] @ gathered[0].T / temperature
        if masks is not None:
            reverse = reverse.masked_fill(masks[1], float("-inf"))
        loss = loss + F.cross_entropy(reverse, labels, reduction="none")
    return loss


def _false_negative_masks(labels, query_ids, candidate_ids, negative_ids, hard_negatives, gathered: bool):
    """The masks of `ranking_loss`'s two directions, true at the false negatives: for the query of row `i`, a
    candidate (in-batch or hard negative) whose text is the answer of any row asking the same query as `i` (its own
    included: two translations of one source), or an in-batch candidate of a row asking the same query; never `i`'s
    own candidate. The reverse direction is the same rule with queries and candidates swapped."""
    if query_ids is None or candidate_ids is None or (hard_negatives is not None) != (negative_ids is not None):
        raise ValueError("ranking_loss masks false negatives with query_ids and candidate_ids (and negative_ids when "
                         "there are hard negatives); give all of them or none.")
    ids = [query_ids, candidate_ids] + ([] if negative_ids is None else [negative_ids])
    if gathered:  # the same rows as the gathered embeddings, in process order
        ids = [torch.cat(_gather_plain(side)) for side in ids]

    def mask(asked, answers, pool):
        same_query = asked[None, :] == asked[labels][:, None]  # (b, B): rows asking what row i asks
        answered = (pool[None, :] == answers[:, None]).float()  # (B, X): row j's answer is pool text x
        false = (same_query.float() @ answered) > 0
        false[:, : len(asked)] |= same_query
        false[torch.arange(len(labels), device=labels.device), labels] = False
        return false

    return mask(ids[0], ids[1], torch.cat(ids[1:])), mask(ids[1], ids[0], ids[0])


def _gather_plain(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def contrastive_loss(
    source: torch.Tensor, target: torch.Tensor, temperature: float, gather_across_processes: bool = True
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on cosine similarity / T, EMS paper eq. 8 (with sim of eq. 9): `ranking_loss`
    in both directions. Row `j` of `source` and of `target` are translations.

    Returns:
        `(batch,)`: for each local pair, the source->target plus the target->source cross-entropy.
    """
    if source.shape != target.shape or source.dim() != 2:
        raise ValueError(
            f"contrastive_loss needs two (batch, dim) tensors of one shape, got {tuple(source.shape)} and "
            f"{tuple(target.shape)}."
        )
    return ranking_loss(source, target, similarity="cosine", temperature=temperature, symmetric=True,
                        gather_across_processes=gather_across_processes)  # eq. 8, both terms, per pair


def nli_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the 3-way NLI logits (multi-task dual-encoder paper sec. 2.2, the softmax output
    layer) against labels in {0, 1, 2} (entailment, neutral, contradiction)."""
    if logits.dim() != 2 or logits.shape[1] != 3 or labels.shape != logits.shape[:1]:
        raise ValueError(f"nli_loss needs (n, 3) logits and n labels, got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}.")
    bad = labels[(labels < 0) | (labels > 2)]
    if bad.numel():
        raise ValueError(f"NLI labels must be 0, 1 or 2 (entailment, neutral, contradiction); got "
                         f"{sorted(set(bad.tolist()))}. Map the dataset's labels to these ids first.")
    return F.cross_entropy(logits.float(), labels.long())


def ems_objective(
    xtr_logits: torch.Tensor | None,
    contrastive_embeddings: torch.Tensor | None,
    translation_ids: torch.Tensor,
    translation_mask: torch.Tensor,
    temperature: float,
    xtr_weight: float = 1.0,
    contrastive_weight: float = 1.0,
    gather_across_processes: bool = True,
    xtr_kl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The joint EMS loss (eq. 12) on a `PairLayout` batch of `2n` rows (sources, then their translations).

    Returns the weighted loss and its terms `{"xtr_loss", "contrastive_loss"}`, each a mean over the local pairs:
    XTR in both directions (eq. 6) and the symmetric contrastive loss (eq. 8) with negatives gathered across
    processes, so the mean of P processes' losses with b pairs each equals one process's loss on the P * b pairs.
    A term weighted 0 is not computed (nor returned), and its input may be None: the model need not run its head.
    `xtr_kl`, the `(2n,)` KL divergences of `xtr_loss` already computed (mini-batch by mini-batch under GradCache),
    stands for `xtr_logits`, `translation_ids` and `translation_mask`.
    """
    terms = {}
    if xtr_weight:
        if xtr_kl is None:
            xtr_kl = xtr_loss(xtr_logits, translation_ids, translation_mask)
        source_kl, target_kl = PairLayout.split(xtr_kl)
        terms["xtr_loss"] = (source_kl + target_kl).mean()  # eq. 6, both directions, per pair
    if contrastive_weight:
        sources, translations = PairLayout.split(contrastive_embeddings)
        terms["contrastive_loss"] = contrastive_loss(sources, translations, temperature,
                                                     gather_across_processes).mean()  # eq. 8
    weights = {"xtr_loss": xtr_weight, "contrastive_loss": contrastive_weight}
    loss = sum(weights[name] * term for name, term in terms.items())  # eq. 12
    return loss, terms


def ema_alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's embeddings of the non-pivot sentences and the teacher's embeddings
    of their pivot translations, Ham & Kim eq. 1. The teacher's side is a target: no gradient reaches it."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(
            f"ema_alignment_loss needs two (pairs, dim) tensors of one shape, got student {tuple(student.shape)} and "
            f"teacher {tuple(teacher.shape)}."
        )
    return F.mse_loss(student.float(), teacher.detach().float())  # eq. 1


def cosine_similarity_loss(first: torch.Tensor, second: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Monolingual similarity training, Ham & Kim sec. 5.1 (SBERT's regression objective): the mean squared error
    between the cosine of each pair's two sentence embeddings and its gold score, already mapped to the cosine's
    range ([0, 1] or [-1, 1]; `trainers.recipes.ema_alignment.stage1.load_scored_pairs`)."""
    if first.shape != second.shape or first.dim() != 2 or scores.shape != first.shape[:1]:
        raise ValueError(
            f"cosine_similarity_loss needs two (pairs, dim) tensors of one shape and one score per pair, got "
            f"{tuple(first.shape)}, {tuple(second.shape)} and scores {tuple(scores.shape)}."
        )
    cosine = F.cosine_similarity(first.float(), second.float(), dim=-1)
    return F.mse_loss(cosine, scores.float())  # sec. 5.1: MSE(cos(u, v), gold)


def distillation_loss(student_pivot: torch.Tensor | None, student_other: torch.Tensor, teacher: torch.Tensor,
                      pivot_weight: float = 1.0, other_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Multilingual knowledge distillation (Reimers & Gurevych 2020, sentence-transformers' `MSELoss`): the student's
    embedding of the pivot sentence and of its translation are each fitted by MSE to the teacher's embedding of the
    pivot sentence, `MSE(s(x_en), t(x_en))` and `MSE(s(x_xx), t(x_en))`. The loss is the weighted mean of the two
    terms, so equal weights give `MSELoss`'s mean over its input columns; a term weighted 0 is not computed (its
    input may be None), and the other term alone is Ham & Kim's eq. 1 with a frozen teacher. The teacher's side is a
    target: no gradient reaches it. Returns the loss and its terms `{"pivot_loss", "other_loss"}`."""
    if pivot_weight < 0 or other_weight < 0 or pivot_weight + other_weight <= 0:
        raise ValueError(f"distillation_loss: pivot_weight={pivot_weight!r} and other_weight={other_weight!r}; "
                         "use weights >= 0, at least one of them > 0.")
    pairs = {"pivot_loss": (student_pivot, pivot_weight), "other_loss": (student_other, other_weight)}
    terms = {name: ema_alignment_loss(student, teacher) for name, (student, weight) in pairs.items() if weight}
    loss = sum(pairs[name][1] * term for name, term in terms.items()) / (pivot_weight + other_weight)
    return loss, terms


def check_matryoshka_dims(dims, width: int, weights=None) -> list[float]:
    """Check Matryoshka dimensions against an embedding of `width` and return their weights (1 each when not
    given): positive integers, strictly decreasing, none above `width`, one weight per dimension."""
    if isinstance(dims, (str, bytes)) or not isinstance(dims, (list, tuple)) or not dims:
        raise ValueError(f"matryoshka_dims={dims!r}: give a list of embedding sizes, largest first, e.g. "
                         "[384, 256, 128, 64].")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"matryoshka_dims={list(dims)}: every dimension must be an integer >= 1.")
    if any(later >= earlier for earlier, later in zip(dims, dims[1:])):
        raise ValueError(f"matryoshka_dims={list(dims)} is not strictly decreasing; list the sizes largest first, "
                         f"e.g. {sorted(set(dims), reverse=True)}.")
    if dims[0] > width:
        raise ValueError(f"matryoshka_dims={list(dims)}: {dims[0]} is larger than the embedding ({width} dims); "
                         f"keep every dimension <= {width}.")
    if weights is None:
        return [1.0] * len(dims)
    if len(weights) != len(dims) or any(not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise ValueError(f"matryoshka_weights={weights!r}: give one weight >= 0 per dimension of "
                         f"matryoshka_dims={list(dims)}.")
    return [float(w) for w in weights]


def matryoshka_loss(loss_fn, embeddings: list[torch.Tensor | None], dims=None, weights=None):
    """Matryoshka representation learning (Kusupati et al. 2022, sentence-transformers' `MatryoshkaLoss`): `loss_fn`
    applied to the leading `d` dimensions of every embedding tensor, for each `d` of `dims`, and summed with
    `weights` (1 each by default). `loss_fn(*embeddings)` returns a loss, or `(loss, terms)`; terms are summed the
    same way. Without `dims`, `loss_fn` on the whole embeddings. None entries (an unused input) pass through.
    Unlike `MatryoshkaLoss`, the truncated embeddings are not re-normalized: a loss on cosine normalizes itself, and
    an MSE to a teacher compares the same leading dimensions of both sides."""
    if not dims:
        return loss_fn(*embeddings)
    width = next(e for e in embeddings if e is not None).shape[-1]
    weights = check_matryoshka_dims(list(dims), width, weights)
    total, total_terms = 0.0, {}
    for dim, weight in zip(dims, weights):
        result = loss_fn(*(None if e is None else e[..., :dim] for e in embeddings))
        loss, terms = result if isinstance(result, tuple) else (result, {})
        total = total + weight * loss
        for name, term in terms.items():
            total_terms[name] = total_terms.get(name, 0.0) + weight * term
    return (total, total_terms) if total_terms else total
