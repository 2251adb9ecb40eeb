"""GradCache (Gao, Zhang, Han & Callan 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"; sentence-transformers' `CachedMultipleNegativesRankingLoss`): an objective over a whole batch, with the
memory of one mini-batch.

1. every mini-batch of rows is encoded without gradients, keeping the RNG state it started from;
2. the objective runs on the whole batch's per-row outputs, and its gradient with respect to them is cached;
3. in the backward pass of the returned loss, every mini-batch is encoded again, with gradients, from its RNG state
   (the same dropout masks), and back-propagated with its rows' cached gradients.

The loss and the parameters' gradients are those of the whole batch in one pass; only one mini-batch of activations
is alive at a time. The objective must depend on the encoder only through the per-row outputs that `encode` returns,
and the rows must be independent of each other in `encode` (each row's outputs the same whatever rows are beside it).
"""

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch.utils.checkpoint import get_device_states, set_device_states


class RandState:
    """The CPU and device RNG states at creation, replayed by `replay()` (what torch.utils.checkpoint does for a
    checkpointed segment), so a second forward pass draws the dropout masks of the first."""

    def __init__(self, *tensors: torch.Tensor):
        self.cpu_state = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors)

    @contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu_state)
            set_device_states(self.devices, self.device_states)
            yield


def mini_batches(inputs: dict, rows: int) -> list[dict]:
    """`inputs` cut into slices of `rows` rows: every tensor whose first dimension is the batch's row count (that of
    `input_ids`) is sliced, anything else is passed whole; the trailing columns of `input_ids` and `attention_mask`
    that are padding in every row of a slice are dropped (the real tokens keep their positions and states)."""
    total = inputs["input_ids"].shape[0]
    slices = []
    for start in range(0, total, rows):
        part = {key: value[start:start + rows] if torch.is_tensor(value) and value.dim() and value.shape[0] == total
                else value for key, value in inputs.items()}
        width = int(part["attention_mask"].any(dim=0).nonzero().max()) + 1 if part["attention_mask"].any() else 1
        part["input_ids"], part["attention_mask"] = part["input_ids"][:, :width], part["attention_mask"][:, :width]
        slices.append(part)
    return slices


def cached_objective(
    model: torch.nn.Module,
    inputs: dict,
    rows_per_mini_batch: int,
    encode: Callable[[torch.nn.Module, dict], tuple[torch.Tensor | None, ...]],
    objective: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
    no_sync: Callable[[], object] = nullcontext,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective of the whole batch, computed by GradCache (module docstring).

    Args:
        model: what `encode` runs (a DDP-wrapped model included).
        inputs: the batch, one row per input sentence (`input_ids`, `attention_mask` and any per-row tensors).
        rows_per_mini_batch: rows encoded at once.
        encode: `encode(model, mini_batch)` -> per-row output tensors (None for an output the objective skips).
        objective: `objective(*outputs of the whole batch)` -> `(loss, terms)`; may gather across processes.
        no_sync: context in which a mini-batch's backward pass leaves the gradients unsynchronised across processes
            (`accelerator.no_sync(model)`); all but the last mini-batch run in it.

    Returns:
        The loss, detached from the encoder: calling `backward()` on it (or on what is computed from it, e.g.
        divided for gradient accumulation) runs step 3, scaled by the gradient it receives. And the detached terms.
    """
    chunks = mini_batches(inputs, rows_per_mini_batch)
    device = inputs["input_ids"].device
    autocast = (device.type, torch.get_autocast_dtype(device.type), torch.is_autocast_enabled(device.type))
    states, outputs = [], []
    for chunk in chunks:  # step 1
        states.append(RandState(*(value for value in chunk.values() if torch.is_tensor(value))))
        with torch.no_grad():
            outputs.append(encode(model, chunk))
    whole = [None if parts[0] is None else torch.cat(parts).detach().requires_grad_() for parts in zip(*outputs)]
    with torch.enable_grad():  # step 2
        loss, terms = objective(*whole)
    used = [tensor for tensor in whole if tensor is not None]
    gradients = iter(torch.autograd.grad(loss, used, allow_unused=True))
    cached = [None if tensor is None else next(gradients) for tensor in whole]
    sizes = [len(chunk["input_ids"]) for chunk in chunks]
    per_chunk = list(zip(*[[None] * len(chunks) if grad is None else grad.split(sizes) for grad in cached]))
    loss = loss.detach().requires_grad_()
    loss.register_hook(partial(_replay, model=model, encode=encode, chunks=chunks, states=states,
                               gradients=per_chunk, autocast=autocast, no_sync=no_sync))
    return loss, {name: term.detach() for name, term in terms.items()}


def _replay(grad_output, model, encode, chunks, states, gradients, autocast, no_sync) -> None:
    """Step 3: each mini-batch encoded again from its RNG state, under the autocast of step 1, and back-propagated
    with its cached gradients times `grad_output` (gradient accumulation's division, a loss scaler)."""
    device_type, dtype, enabled = autocast
    with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
        for index, (chunk, state, chunk_gradients) in enumerate(zip(chunks, states, gradients)):
            with no_sync() if index < len(chunks) - 1 else nullcontext(), state.replay():
                outputs = encode(model, chunk)
                surrogate = sum((output.float() * gradient.float()).sum()
                                for output, gradient in zip(outputs, chunk_gradients) if gradient is not None)
                (surrogate * grad_output).backward()
