"""Strip-mode training samples: augmented crops of cached scans, their per-output targets, and the loss.

A crop is ``H + 16 (k - 1)`` rows tall (k outputs of the fully convolutional model, output stride 16) and
starts at any integer row, so every sub-stride alignment of windows and vertebrae is seen. A share
``p_positive`` of the crops of scans with the main level (L3) in view contain its row; the rest are uniform.

Targets, per output j (window top ``t_j = start + 16 j``) and per level of the model (``levels``):
offset ``row - t_j`` (unclamped, as in the seed) and presence ``0 <= offset < H``. The loss is the MSE of
offset / H over (output, level) pairs with the level in view and its offset in ``band`` window heights,
default [-1/2, 3/2): windows that see the vertebra or are within half a window of it (far-away windows cannot
see it, and regressing them would only teach the model to guess from context), plus ``presence_weight`` x the
BCE of presence over the pairs whose presence is known (every level of a phantom; the labelled ones of a real
scan). A level outside the scan (or cut off by augmentation) is known absent: presence 0, no regression.

``target="nearest"`` trains a level-agnostic refiner instead: one output per window, the offset of the
vertebral body (any level) whose centre is nearest the window's centre, regressed where that centre lies
inside ``band`` (e.g. the middle quarter of the window).
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
from tools.levels import level_labels, vertebra_rows
from tools.models import OUTPUT_STRIDE

TARGETS = ("levels", "nearest")


class StripBatches(torch.utils.data.IterableDataset):
    """Endless augmented batches (x [B,C,L,W], offset [B,V,k], presence [B,V,k], regression mask [B,V,k],
    presence mask [B,V,k]) with V the number of levels (1 for ``nearest``).

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
        levels: tuple[str, ...] = ("L3",),
        main_level: str = "L3",
        target: str = "levels",
    ) -> None:
        if target not in TARGETS:
            raise UsageError(f"target must be one of {TARGETS}, not {target!r}")
        self.images = [s.image for s in scans]
        self.target = target
        if target == "nearest":
            self.rows = [vertebra_rows(s) for s in scans]
            self.known = [np.ones(r.size, bool) for r in self.rows]
            self.in_view = [self._in_view(s, r) for s, r in zip(scans, self.rows, strict=True)]
            # crops "with the label" hold the vertebra nearest the scan's labelled level (or the middle one)
            self.main = [
                int(np.argmin(np.abs(r - s.label_row)))
                if r.size and math.isfinite(s.label_row)
                else r.size // 2
                for s, r in zip(scans, self.rows, strict=True)
            ]
        else:
            labels = [level_labels(s, levels) for s in scans]
            self.rows = [lab.rows for lab in labels]
            self.known = [lab.known for lab in labels]
            self.in_view = [lab.in_view & np.isfinite(lab.rows) for lab in labels]
            self.main = [levels.index(main_level) if main_level in levels else 0] * len(scans)
        self.n_levels = 1 if target == "nearest" else len(levels)
        self.space, self.b, self.k, self.p_positive, self.band = space, batch, k_outputs, p_positive, band
        self.aug = aug or AugmentConfig()
        self.seed = seed

    @staticmethod
    def _in_view(scan: CachedScan, rows: np.ndarray) -> np.ndarray:
        top = float(scan.grid.z_to_row(scan.z_slices.max()))
        bottom = float(scan.grid.z_to_row(scan.z_slices.min()))
        return (rows >= top - 0.5) & (rows <= bottom + 0.5)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            yield tuple(torch.from_numpy(a) for a in self.batch(rng))

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        sp, h, k, b, v = self.space, self.space.window_height_px, self.k, self.b, self.n_levels
        length = h + OUTPUT_STRIDE * (k - 1)
        x = np.empty((b, sp.channels, length, sp.window_width_px), np.float32)
        off, pres, mask, known = (np.zeros((b, v, k), np.float32) for _ in range(4))
        for i in range(b):
            j = int(rng.integers(len(self.images)))
            img, rows, iv = augment(self.images[j], self.rows[j], self.in_view[j], sp.fill_hu, rng, self.aug)
            n = img.shape[0]
            lo, hi = min(0, n - length), max(0, n - length)
            start = int(rng.integers(lo, hi + 1))
            row = rows[self.main[j]] if rows.size else math.nan
            if rows.size and iv[self.main[j]] and rng.random() < self.p_positive:
                a, z = max(lo, math.ceil(row - length + 1)), min(hi, math.floor(row))
                if a <= z:
                    start = int(rng.integers(a, z + 1))
            crop = np.full((length, sp.window_width_px), sp.fill_hu, np.float32)
            s0, s1 = max(start, 0), min(start + length, n)
            crop[s0 - start : s1 - start] = img[s0:s1]
            x[i] = normalize(crop, sp)
            tops = start + OUTPUT_STRIDE * np.arange(k)
            if self.target == "nearest":
                self._nearest_targets(rows[iv], tops, h, off[i, 0], pres[i, 0], mask[i, 0], known[i, 0])
                continue
            for lvl in range(v):
                if not self.known[j][lvl]:
                    continue
                known[i, lvl] = 1.0
                if iv[lvl]:
                    o = rows[lvl] - tops
                    off[i, lvl] = o
                    pres[i, lvl] = (o >= 0) & (o < h)
                    mask[i, lvl] = (o >= self.band[0] * h) & (o < self.band[1] * h)
        return x, off, pres, mask, known

    def _nearest_targets(
        self,
        rows: np.ndarray,
        tops: np.ndarray,
        h: int,
        off: np.ndarray,
        pres: np.ndarray,
        mask: np.ndarray,
        known: np.ndarray,
    ) -> None:
        known[:] = 1.0
        if rows.size == 0:
            return
        centre = tops + h / 2
        nearest = rows[np.argmin(np.abs(rows[None, :] - centre[:, None]), axis=1)]
        o = nearest - tops
        off[:] = o
        inside = (o >= self.band[0] * h) & (o < self.band[1] * h)
        pres[:] = inside
        mask[:] = inside


def strip_loss(
    out: torch.Tensor,
    off: torch.Tensor,
    pres: torch.Tensor,
    mask: torch.Tensor,
    known: torch.Tensor,
    h: int,
    presence_weight: float,
) -> tuple[torch.Tensor, float, float]:
    """Masked MSE of offset / H plus weighted, masked presence BCE; returns (loss, mse, bce).

    ``out`` is the model output [B, 2 V, k, 1]: offsets of the V levels, then their logits."""
    v = off.shape[1]
    if out.shape[1] != 2 * v or out.shape[2] != off.shape[2]:
        raise UsageError(
            f"model gives {tuple(out.shape[1:3])} (channels, outputs) per crop, the sampler needs "
            f"({2 * v}, {off.shape[2]})"
        )
    po, pl = out[:, :v, :, 0].float(), out[:, v:, :, 0].float()
    mse = (((po - off) / h) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
    bce_all = F.binary_cross_entropy_with_logits(pl, pres, reduction="none")
    bce = (bce_all * known).sum() / known.sum().clamp(min=1.0)
    return mse + presence_weight * bce, float(mse.detach()), float(bce.detach())
