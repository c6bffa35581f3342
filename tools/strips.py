"""Strip-mode training samples: augmented crops of cached scans, their per-output targets, and the loss.

A crop is ``H + 16 (k - 1)`` rows tall (k outputs of the fully convolutional model, output stride 16) and
starts at any integer row, so every sub-stride alignment of windows and vertebra is seen. A share
``p_positive`` of the crops of scans with the label in view contain the label row; the rest are uniform (many
without it). Targets of output j (window top ``t_j = start + 16 j``): offset ``label_row - t_j`` (unclamped,
as in the seed) and presence ``0 <= offset < H``. The loss is the MSE of offset / H over outputs with offset
in ``band`` window heights, default [-1/2, 3/2): windows that see the vertebra or are within half a window of
it (far-away windows cannot see it, and regressing them would only teach the model to guess from context; the
half-window margin keeps the ramp straight where the correlation step reads it), plus ``presence_weight`` x
BCE of presence over all outputs. Scans without the label in view give presence 0 everywhere and no regression
target.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from l3edge.errors import UsageError
from l3edge.metadata import ModelSpace
from l3edge.preprocess import normalize
from tools.augment import AugmentConfig, augment
from tools.data import CachedScan
from tools.models import OUTPUT_STRIDE


class StripBatches(torch.utils.data.IterableDataset):
    """Endless augmented batches (x [B,C,L,W], offset [B,k], presence [B,k], regression mask [B,k]).

    Each DataLoader worker draws from its own generator seeded by (seed, worker id), so a run is reproducible
    for a given seed and worker count."""

    def __init__(
        self,
        scans: list[CachedScan],
        space: ModelSpace,
        batch: int,
        k_outputs: int = 8,
        p_positive: float = 0.8,
        band: tuple[float, float] = (-0.5, 1.5),
        aug: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.images = [s.image for s in scans]
        self.rows = [s.label_row for s in scans]
        self.in_view = [bool(s.in_view and math.isfinite(s.label_row)) for s in scans]
        self.space, self.b, self.k, self.p_positive, self.band = space, batch, k_outputs, p_positive, band
        self.aug = aug or AugmentConfig()
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            yield tuple(torch.from_numpy(a) for a in self.batch(rng))

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        sp, h, k, b = self.space, self.space.window_height_px, self.k, self.b
        length = h + OUTPUT_STRIDE * (k - 1)
        x = np.empty((b, sp.channels, length, sp.window_width_px), np.float32)
        off, pres, mask = (np.zeros((b, k), np.float32) for _ in range(3))
        for i in range(b):
            j = int(rng.integers(len(self.images)))
            row = self.rows[j] if self.in_view[j] else 0.0
            img, row, iv = augment(self.images[j], row, self.in_view[j], sp.fill_hu, rng, self.aug)
            n = img.shape[0]
            lo, hi = min(0, n - length), max(0, n - length)
            start = int(rng.integers(lo, hi + 1))
            if iv and rng.random() < self.p_positive:
                a, z = max(lo, math.ceil(row - length + 1)), min(hi, math.floor(row))
                if a <= z:
                    start = int(rng.integers(a, z + 1))
            crop = np.full((length, sp.window_width_px), sp.fill_hu, np.float32)
            s0, s1 = max(start, 0), min(start + length, n)
            crop[s0 - start : s1 - start] = img[s0:s1]
            x[i] = normalize(crop, sp)
            if iv:
                o = row - (start + OUTPUT_STRIDE * np.arange(k))
                off[i] = o
                pres[i] = (o >= 0) & (o < h)
                mask[i] = (o >= self.band[0] * h) & (o < self.band[1] * h)
        return x, off, pres, mask


def strip_loss(
    out: torch.Tensor,
    off: torch.Tensor,
    pres: torch.Tensor,
    mask: torch.Tensor,
    h: int,
    presence_weight: float,
) -> tuple[torch.Tensor, float, float]:
    """Masked MSE of offset / H plus weighted presence BCE; returns (loss, mse, bce)."""
    po, pl = out[:, 0, :, 0].float(), out[:, 1, :, 0].float()
    if po.shape != off.shape:
        raise UsageError(f"model gives {tuple(po.shape)} outputs per crop, the sampler {tuple(off.shape)}")
    mse = (((po - off) / h) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(pl, pres)
    return mse + presence_weight * bce, float(mse.detach()), float(bce.detach())
