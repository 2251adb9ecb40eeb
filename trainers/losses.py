"""Training objectives, each written once and shared by every trainer that needs it."""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from .collators import PairLayout


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


def contrastive_loss(
    source: torch.Tensor, target: torch.Tensor, temperature: float, gather_across_processes: bool = True
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on cosine similarity / T, EMS paper eq. 8 (with sim of eq. 9).

    Row `j` of `source` and of `target` are translations; every other sentence of the other side is a negative. Under
    `torch.distributed`, the negatives are gathered from all processes with gradients flowing back to their owners, so
    P processes with batch b give the same loss and (DDP-averaged) gradients as one process with batch P * b.

    Returns:
        `(batch,)`: for each local pair, the source->target plus the target->source cross-entropy.
    """
    if source.shape != target.shape or source.dim() != 2:
        raise ValueError(
            f"contrastive_loss needs two (batch, dim) tensors of one shape, got {tuple(source.shape)} and "
            f"{tuple(target.shape)}."
        )
    if not temperature > 0:
        raise ValueError(f"contrastive_loss: temperature must be > 0, got {temperature!r}.")
    source, target = F.normalize(source.float(), dim=-1), F.normalize(target.float(), dim=-1)
    all_source, all_target, offset = source, target, 0
    if gather_across_processes and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        all_source, all_target = torch.cat(all_gather(source)), torch.cat(all_gather(target))
        offset = dist.get_rank() * source.shape[0]
    labels = torch.arange(source.shape[0], device=source.device) + offset
    source_to_target = F.cross_entropy(source @ all_target.T / temperature, labels, reduction="none")
    target_to_source = F.cross_entropy(target @ all_source.T / temperature, labels, reduction="none")
    return source_to_target + target_to_source  # eq. 8, both terms, per pair


def ems_objective(
    xtr_logits: torch.Tensor | None,
    contrastive_embeddings: torch.Tensor | None,
    translation_ids: torch.Tensor,
    translation_mask: torch.Tensor,
    temperature: float,
    xtr_weight: float = 1.0,
    contrastive_weight: float = 1.0,
    gather_across_processes: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The joint EMS loss (eq. 12) on a `PairLayout` batch of `2n` rows (sources, then their translations).

    Returns the weighted loss and its terms `{"xtr_loss", "contrastive_loss"}`, each a mean over the local pairs:
    XTR in both directions (eq. 6) and the symmetric contrastive loss (eq. 8) with negatives gathered across
    processes, so the mean of P processes' losses with b pairs each equals one process's loss on the P * b pairs.
    A term weighted 0 is not computed (nor returned), and its input may be None: the model need not run its head.
    """
    terms = {}
    if xtr_weight:
        source_kl, target_kl = PairLayout.split(xtr_loss(xtr_logits, translation_ids, translation_mask))
        terms["xtr_loss"] = (source_kl + target_kl).mean()  # eq. 6, both directions, per pair
    if contrastive_weight:
        sources, translations = PairLayout.split(contrastive_embeddings)
        terms["contrastive_loss"] = contrastive_loss(sources, translations, temperature,
                                                     gather_across_processes).mean()  # eq. 8
    weights = {"xtr_loss": xtr_weight, "contrastive_loss": contrastive_weight}
    loss = sum(weights[name] * term for name, term in terms.items())  # eq. 12
    return loss, terms


def ema_tau(step: int, total_steps: int, tau_base: float) -> float:
    """The EMA teacher's decay rate at training step `k = step` of `K = total_steps` (Ham & Kim, sec. 5.3, after
    BYOL): `tau_base` at `k = 0`, rising along a half cosine to 1 at `k = K`."""
    if not 0.0 <= tau_base <= 1.0:
        raise ValueError(f"tau_base={tau_base!r} is outside [0, 1]; use a decay rate such as the paper's 0.99999.")
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r}: the schedule needs K >= 1; pass the run's max_steps.")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step={step!r} is outside [0, K={total_steps}]; pass the 0-based index of the current step.")
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0  # sec. 5.3


def ema_alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's embeddings of the non-pivot sentences and the teacher's embeddings
    of their pivot translations, Ham & Kim eq. 1. The teacher's side is a target: no gradient reaches it."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(
            f"ema_alignment_loss needs two (pairs, dim) tensors of one shape, got student {tuple(student.shape)} and "
            f"teacher {tuple(teacher.shape)}."
        )
    return F.mse_loss(student.float(), teacher.detach().float())  # eq. 1
