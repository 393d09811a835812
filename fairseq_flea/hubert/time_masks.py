"""HuBERT's time masks drawn on the model's device, for the whole batch at once.

fairseq's ``compute_mask_indices`` draws each utterance's masked spans in a Python loop of
numpy calls, reads each utterance's length from the padding mask with ``.item()`` (on a GPU,
a wait for the device per utterance) and hands back a numpy array that is then copied to the
device: 2.7-4.9 ms of the development CPU per batch of the shipped configs' shapes (more
under load), inside a training step that waits for the CPU (BENCHMARKS.md). ``span_time_mask`` follows the same
procedure with tensor operations on the device, without waiting for it:

- each utterance of ``length`` frames gets ``int(mask_prob * length / mask_length + u)`` spans
  (u uniform in [0, 1)), at least ``min_masks``;
- their starts are distinct and uniform over the first ``length - mask_length`` frames
  (fewer, when that leaves no room, as fairseq shortens its range);
- each span masks ``mask_length`` frames, overlaps merging, none past the utterance's end;
- every utterance then keeps as many masked frames as the one with the fewest, a uniform
  random subset of its own (fairseq's ``require_same_masks``).

The masks are the same random variable, not the same draws: fairseq (0.12.3) draws them from
a numpy generator the operating system seeds, so its masks cannot be reproduced; these come
from torch's generator, which fairseq seeds with ``common.seed``. Where fairseq would raise
(an utterance too short to keep any frame unmasked), these mask it whole.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.models.hubert import HubertModel

# A key above every uniform draw: positions that cannot be chosen sort last.
NEVER = 2.0
MIN_MASKS = 2  # what fairseq's HubertModel.apply_mask asks compute_mask_indices for


def uniform_subset(candidates: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """A uniform random subset of each row's True positions in ``candidates`` (batch, frames),
    of ``sizes`` (batch,) elements each: the positions whose random keys are the lowest.
    float64 keys: a tie at the cut, which would keep one more, has a chance of ~frames/2^53."""
    keys = torch.rand(candidates.shape, device=candidates.device, dtype=torch.float64)
    keys.masked_fill_(~candidates, NEVER)
    last = (sizes.unsqueeze(1) - 1).clamp(min=0, max=candidates.shape[1] - 1)
    cut = keys.sort(dim=1).values.gather(1, last)
    return candidates & (keys <= cut) & (sizes.unsqueeze(1) > 0)


def span_time_mask(shape: Tuple[int, int], padding_mask: Optional[torch.Tensor], mask_prob: float,
                   mask_length: int, min_masks: int, device: torch.device) -> torch.Tensor:
    """fairseq's static, overlapping ``compute_mask_indices`` with ``require_same_masks``,
    as a (batch, frames) boolean tensor on ``device`` (see the module's docstring)."""
    batch, frames = shape
    positions = torch.arange(frames, device=device).unsqueeze(0)
    if padding_mask is None:
        lengths = torch.full((batch,), frames, device=device)
    else:
        lengths = frames - padding_mask.to(device).sum(dim=1)
    draws = torch.rand(batch, device=device, dtype=torch.float64)
    spans = (mask_prob * lengths.double() / mask_length + draws).long().clamp(min=min_masks)
    shortest = torch.where(lengths - mask_length <= spans, lengths - spans - 1,
                           torch.full_like(lengths, mask_length))
    start_range = (lengths - shortest).unsqueeze(1)
    starts = uniform_subset((positions < start_range).expand(batch, frames), spans)
    # A frame is masked when a span starts within mask_length frames before it, or at it.
    started = starts.long().cumsum(dim=1)
    before = F.pad(started, (mask_length, 0))[:, :frames]
    masked = (started > before) & (positions < lengths.unsqueeze(1))
    counts = masked.sum(dim=1)
    return uniform_subset(masked, counts.min().expand(batch))


def apply_time_mask_on_device(model: HubertModel, x: torch.Tensor, padding_mask: Optional[torch.Tensor],
                              target_list) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``HubertModel.apply_mask`` with the time mask from ``span_time_mask``."""
    if model.mask_prob <= 0:
        return x, None
    batch, frames, _ = x.shape
    mask = span_time_mask((batch, frames), padding_mask, model.mask_prob, model.mask_length, MIN_MASKS, x.device)
    return torch.where(mask.unsqueeze(-1), model.mask_emb.to(x.dtype), x), mask


def time_masks_on_device(model: torch.nn.Module) -> int:
    """Draw the time masks of every HuBERT model in ``model`` with ``span_time_mask``, where
    fairseq's settings are the ones it follows (static spans that may overlap, no channel
    masks); returns the number of models changed."""
    changed = 0
    for module in model.modules():
        if (isinstance(module, HubertModel) and module.mask_selection == "static"
                and not module.no_mask_overlap and module.mask_channel_prob == 0):
            module.apply_mask = apply_time_mask_on_device.__get__(module)
            changed += 1
    return changed
