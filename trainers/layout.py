"""Row layouts of training batches, shared by the collators that build them and the losses that read them."""

import torch


class PairLayout:
    """The layout of a batch of `n` parallel pairs, shared by the pair collator and every trainer that reads it:
    `2n` rows, rows `0..n-1` the sources and rows `n..2n-1` their translations, so the encoder runs once per step
    and row `i`'s translation is row `(i + n) mod 2n`."""

    @staticmethod
    def rows(sources: list, targets: list) -> list:
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} translations: pairs must match one to one.")
        return list(sources) + list(targets)

    @staticmethod
    def split(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(sources, translations)` halves of a `2n`-row tensor."""
        if batch.shape[0] % 2:
            raise ValueError(f"A pair batch has an even number of rows (2n), got {batch.shape[0]}.")
        n = batch.shape[0] // 2
        return batch[:n], batch[n:]

    @staticmethod
    def translations(batch: torch.Tensor) -> torch.Tensor:
        """Row `i` of the result is row `i`'s translation."""
        return batch.roll(batch.shape[0] // 2, dims=0)
