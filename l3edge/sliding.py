"""Model-agnostic sliding-window inference over a normalised model-space image.

``run`` is any callable mapping a float32 batch [B, C, H, W] to an array whose first two axes are [B, P] (P
outputs per window: an offset and a presence logit per level the model places) and whose remaining axes (if
any) hold one prediction per window position (the fully convolutional 'strip' output, [B, P, K, 1]). The
OpenVINO runtime and the torch evaluation tools both go through these functions, so serving and evaluation
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from l3edge.errors import UsageError
from l3edge.preprocess import cut_windows, window_tops

RunFn = Callable[[np.ndarray], np.ndarray]


def _as_positions(out: np.ndarray) -> np.ndarray:
    """[B, P, ...] -> [B, K, P]."""
    out = np.asarray(out, dtype=np.float32)
    b, p = out.shape[:2]
    return out.reshape(b, p, -1).transpose(0, 2, 1)


def predict_windows(
    run: RunFn, channels: np.ndarray, window_height: int, stride: int, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Per-window path: cut every window at ``stride`` and run them in batches.

    Returns (tops [N], predictions [N, P]) in the model's output channels (e.g. offset, presence logit).
    """
    tops = window_tops(channels.shape[1], window_height, stride)
    parts = [
        _as_positions(run(cut_windows(channels, tops[i : i + batch_size], window_height)))[:, 0, :]
        for i in range(0, tops.size, batch_size)
    ]
    return tops, (np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.float32))


def predict_strip(
    run: RunFn, channels: np.ndarray, window_height: int, stride: int, output_stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Strip path: run the fully convolutional model over the whole image once per sub-stride shift.

    With output stride S and window stride s (s divides S, or is a multiple of S), strip ``i`` is
    ``channels[:, shift_i:]`` and its output k is the window whose top is ``shift_i + S * k``. The S/s strips
    go through the model as one batch, all as long as the first (a shorter one is extended with its last row;
    outputs whose window would reach into that extension are dropped). Returns the same (tops, predictions)
    as :func:`predict_windows` for a shift-equivariant model.
    """
    tops, (preds,) = predict_strips(run, [channels], window_height, stride, output_stride)
    return tops, preds


def predict_strips(
    run: RunFn, images: list[np.ndarray], window_height: int, stride: int, output_stride: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`predict_strip` for several images of one shape (e.g. a MIP and its mirror) in one batch:
    (tops, one prediction array per image)."""
    if stride % output_stride and output_stride % stride:
        raise UsageError(
            f"stride {stride} must divide the model's output stride {output_stride} or be a multiple of it"
        )
    rows = images[0].shape[1]
    shifts = [s for s in range(0, output_stride, min(stride, output_stride)) if rows - s >= window_height]
    if not shifts:
        return np.zeros(0, dtype=np.int64), [np.zeros((0, 2), dtype=np.float32) for _ in images]
    counts = [(rows - s - window_height) // output_stride + 1 for s in shifts]
    length = window_height + (counts[0] - 1) * output_stride
    c, w = images[0].shape[0], images[0].shape[2]
    batch = np.empty((len(images) * len(shifts), c, length, w), dtype=np.float32)
    for j, channels in enumerate(images):
        for i, s in enumerate(shifts):
            seg = channels[:, s : s + length]
            batch[j * len(shifts) + i, :, : seg.shape[1]] = seg
            batch[j * len(shifts) + i, :, seg.shape[1] :] = seg[:, -1:]
    pos = _as_positions(run(batch))
    tops = np.concatenate([s + output_stride * np.arange(n) for s, n in zip(shifts, counts, strict=True)])
    order = np.argsort(tops, kind="stable")
    tops = tops[order]
    keep = tops % stride == 0 if stride > output_stride else np.ones(tops.size, dtype=bool)
    out = []
    for j in range(len(images)):
        preds = np.concatenate([pos[j * len(shifts) + i, :n] for i, n in enumerate(counts)])[order]
        out.append(preds[keep])
    return tops[keep].astype(np.int64), out


def predict(
    run: RunFn, channels: np.ndarray, window_height: int, stride: int, output_stride: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Strip path when the model has an output stride that fits ``stride``, else the per-window path."""
    tops, (preds,) = predict_images(run, [channels], window_height, stride, output_stride)
    return tops, preds


def predict_images(
    run: RunFn, images: list[np.ndarray], window_height: int, stride: int, output_stride: int | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`predict` for several images of one shape: in strip mode all of them in one batch."""
    if output_stride is not None and not (output_stride % stride and stride % output_stride):
        return predict_strips(run, images, window_height, stride, output_stride)
    results = [predict_windows(run, ch, window_height, stride) for ch in images]
    return results[0][0], [p for _, p in results]
