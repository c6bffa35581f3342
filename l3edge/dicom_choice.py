"""Which of several axial CT series holds L3: candidates, a preference order, and a choice by content.

Pure logic on header records (no pydicom, no model, no I/O). The model's opinion comes in through a
callback that scores one candidate (``choose``), so this module never learns what a model is.

Candidates: every usable axial CT series (see ``dicom_select``); a series whose acquisitions overlap in z
(one SeriesInstanceUID holding, say, a chest and an abdomen pass) is split into one candidate per
non-overlapping part, by AcquisitionNumber or, failing that, by reconstruction geometry (in-plane
position of the first pixel, pixel spacing, matrix, slice thickness).

Preference, for body-composition work (the order candidates are read in, and the tie-break among those
that show L3 equally well):
1. kernel: soft tissue (e.g. B30f, STANDARD, SOFT, FC18) before unknown, before sharp (lung, bone, B70f);
2. contrast phase (from SeriesDescription): portal venous before unknown / non-contrast, before arterial
   or delayed;
3. slice thickness 2.5-5 mm before thinner or thicker;
4. larger z coverage, then more slices, then the UID (deterministic).

Choice: the candidates are scored in preference order. Among those where L3 is found, the ones whose
confidence is within ``MARGIN`` of the best are equally good and the most preferred of them wins; when L3
is found nowhere, the most preferred candidate is reported. Reading stops as soon as no candidate left
could change the answer (the winner's confidence + ``MARGIN`` >= 1), so a clear first answer costs one read.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from l3edge.dicom_select import Header, Stack
from l3edge.errors import InputError
from l3edge.numeric import median

MARGIN = 0.10
"""Confidences within this of the best found are equally good; the preference order decides among them."""
THICKNESS_MM = (2.5, 5.0)
"""Preferred slice thickness range for body composition."""

_SOFT_KERNELS = {"soft", "standard", "stnd", "std", "body", "smooth", "abdomen", "abd"}
_SHARP_KERNELS = {"lung", "bone", "boneplus", "edge", "detail", "sharp", "chest", "ultra", "hr"}
_SOFT_WORDS = {"soft", "mediastinum", "mediastinal", "std", "standard"}
"""SeriesDescription words that name a soft-tissue reconstruction (only when the kernel says nothing)."""
_SHARP_WORDS = {"lung", "lungs", "bone", "pulmo", "sharp", "hr"}
_PORTAL = {"portal", "pv", "venous", "ven", "portalvenous", "portovenous", "pvp", "hepatic"}
_ARTERIAL = {"arterial", "art", "arteriell", "cta", "angio", "early"}
_DELAYED = {"delay", "delayed", "late", "excretory", "urogram", "equilibrium"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def kernel_class(kernel: str, description: str = "") -> str:
    """``soft`` / ``sharp`` / ``unknown`` from ConvolutionKernel (and the series description as a hint).

    Siemens ``B30f``, ``Br40``, ``I31f``: the number is the sharpness (<= 45 soft, >= 50 sharp); Canon
    ``FC01``..``FC19`` soft, ``FC30``+ bone/lung; Philips ``A``/``B``/``C`` soft, ``D``/``E``/``L``/``Y*``
    sharp; GE ``SOFT``/``STANDARD`` soft, ``LUNG``/``BONE``/``BONEPLUS``/``EDGE``/``DETAIL`` sharp.
    """
    k = kernel.strip().upper()
    m = re.match(r"^FC(\d+)", k)
    if m:
        return "soft" if int(m.group(1)) < 30 else "sharp"
    m = re.match(r"^[A-Z]{1,2}(\d{2})", k)
    if m:
        return "soft" if int(m.group(1)) <= 45 else "sharp"
    first = k.split("\\")[0]
    if first in ("A", "B", "C"):
        return "soft"
    if first in ("D", "E", "L") or re.match(r"^Y[A-F]$", first):
        return "sharp"
    words = _words(kernel)
    if words & _SHARP_KERNELS:
        return "sharp"
    if words & _SOFT_KERNELS:
        return "soft"
    hint = _words(description)
    if hint & _SHARP_WORDS:
        return "sharp"
    if hint & _SOFT_WORDS:
        return "soft"
    return "unknown"


def phase(description: str) -> str:
    """``portal venous`` / ``arterial`` / ``delayed`` / ``unknown`` from the SeriesDescription's words."""
    words = _words(description)
    if words & _ARTERIAL and not words & _PORTAL:
        return "arterial"
    if words & _PORTAL:
        return "portal venous"
    if words & _DELAYED:
        return "delayed"
    return "unknown"


@dataclass(frozen=True)
class Candidate:
    """One stack of slices that may hold L3: a series, or one part of a series split by acquisition."""

    series_uid: str
    part: str | None
    """``acquisition N`` or ``part K`` when the series was split; None for a whole series."""
    headers: tuple[Header, ...]

    @property
    def label(self) -> str:
        return self.series_uid if self.part is None else f"{self.series_uid} ({self.part})"


@dataclass(frozen=True)
class Traits:
    """What the preference order looks at, for one stacked candidate."""

    kernel: str
    kernel_class: str
    phase: str
    thickness_mm: float
    coverage_mm: float
    n_slices: int

    def key(self, uid: str) -> tuple[int, int, int, float, int, str]:
        """Sort key: smaller is preferred."""
        k = {"soft": 0, "unknown": 1, "sharp": 2}[self.kernel_class]
        p = {"portal venous": 0, "unknown": 1, "delayed": 2, "arterial": 2}[self.phase]
        lo, hi = THICKNESS_MM
        t = 0 if lo - 0.01 <= self.thickness_mm <= hi + 0.01 else 1
        return k, p, t, -round(self.coverage_mm, 1), -self.n_slices, uid

    def describe(self) -> str:
        kernel = f"kernel {self.kernel or '?'} ({self.kernel_class})"
        return (
            f"{self.n_slices} slices, {self.thickness_mm:.3g} mm, {self.coverage_mm:.0f} mm covered, "
            f"{kernel}, phase {self.phase}"
        )


def traits(stack: Stack) -> Traits:
    hs = stack.headers
    first = hs[0]
    thick = [h.slice_thickness for h in hs if h.slice_thickness is not None]
    spacing = median(np.abs(np.diff(stack.z_mm))) if len(hs) > 1 else 0.0
    return Traits(
        kernel=first.kernel,
        kernel_class=kernel_class(first.kernel, first.series_description),
        phase=phase(first.series_description),
        thickness_mm=median(thick) if thick else spacing,
        coverage_mm=float(abs(stack.z_mm[0] - stack.z_mm[-1])),
        n_slices=len(hs),
    )


def _z(h: Header) -> float:
    return h.ipp[2] if h.ipp is not None else 0.0


def _merge_disjoint(groups: list[list[Header]]) -> list[list[Header]]:
    """Greedily pack groups into parts whose z ranges do not overlap (largest groups first): groups that
    tile the z axis (an acquisition per table position or per slice) end up together, overlapping passes
    apart."""
    parts: list[tuple[list[Header], list[tuple[float, float]]]] = []  # spans sorted, pairwise disjoint
    for g in sorted(groups, key=lambda g: (-len(g), min(_z(h) for h in g))):
        zs = sorted(_z(h) for h in g)
        step = median(np.diff(zs)) if len(zs) > 1 else 0.0
        lo, hi = zs[0], zs[-1]
        tol = max(0.5 * step, 0.01)
        for members, spans in parts:
            i = bisect.bisect_left(spans, (lo, hi))
            near = spans[max(0, i - 1) : i]  # the span starting before, and every one starting inside
            near += [s for s in spans[i:] if s[0] <= hi] if i < len(spans) and spans[i][0] <= hi else []
            if all(min(hi, b) - max(lo, a) <= tol for a, b in near):
                members.extend(g)
                bisect.insort(spans, (lo, hi))
                break
        else:
            parts.append((list(g), [(lo, hi)]))
    return [m for m, _ in parts]


def split_series(hs: list[Header]) -> list[tuple[str | None, list[Header]]]:
    """One series -> its parts that do not overlap in z (one part, unnamed, when nothing overlaps)."""
    by_acq: dict[int | None, list[Header]] = {}
    for h in hs:
        by_acq.setdefault(h.acquisition_number, []).append(h)
    if len(by_acq) > 1:
        parts = _merge_disjoint(list(by_acq.values()))
        if len(parts) > 1:
            out = []
            for p in parts:
                acqs = sorted({h.acquisition_number for h in p}, key=lambda a: (a is None, a or 0))
                name = f"acquisition {acqs[0]}" if len(acqs) == 1 and acqs[0] is not None else None
                out.append((name, p))
            return [(name or f"part {i + 1}", p) for i, (name, p) in enumerate(_by_z(out))]
    by_geo: dict[tuple[object, ...], list[Header]] = {}
    for h in hs:
        xy = (round(h.ipp[0], 1), round(h.ipp[1], 1)) if h.ipp is not None else None
        by_geo.setdefault((xy, h.spacing, h.rows, h.cols, h.slice_thickness), []).append(h)
    if len(by_geo) > 1:
        parts = _merge_disjoint(list(by_geo.values()))
        if len(parts) > 1:
            return [(f"part {i + 1}", p) for i, (_, p) in enumerate(_by_z([(None, p) for p in parts]))]
    return [(None, hs)]


def _by_z(parts: list[tuple[str | None, list[Header]]]) -> list[tuple[str | None, list[Header]]]:
    """Parts ordered head to feet (highest z first), so 'part 1' is the most superior."""
    return sorted(parts, key=lambda p: -max(_z(h) for h in p[1]))


class Scored(Protocol):
    """What ``choose`` needs from the callback's answer (``L3Result`` has both)."""

    @property
    def found(self) -> bool: ...

    @property
    def confidence(self) -> float: ...


T = TypeVar("T", bound=Scored)


@dataclass(frozen=True)
class Choice(Generic[T]):
    """The outcome of ``choose``."""

    index: int
    """The winner, as an index into the candidates given (in preference order)."""
    outcomes: tuple[T | InputError | None, ...]
    """Per candidate: its score, the error reading it raised, or None when it was not read."""

    @property
    def n_found(self) -> int:
        return sum(1 for o in self.outcomes if o is not None and not isinstance(o, Exception) and o.found)

    @property
    def n_read(self) -> int:
        return sum(1 for o in self.outcomes if o is not None)


def choose(n: int, evaluate: Callable[[int], T], margin: float = MARGIN) -> Choice[T]:
    """Score candidates 0..n-1 (most preferred first) and pick one (see the module docstring).

    ``evaluate(i)`` reads and scores candidate i; an InputError it raises marks that candidate unusable.

    Raises:
        InputError: every candidate read raised one (the most preferred candidate's error).
    """
    outcomes: list[T | InputError | None] = [None] * n
    winner: int | None = None
    for i in range(n):
        if winner is not None and _conf(outcomes[winner]) + margin >= 1.0:
            break  # a later (less preferred) candidate would need a confidence above 1 to win
        try:
            outcomes[i] = evaluate(i)
        except InputError as exc:
            outcomes[i] = exc
        winner = _winner(outcomes, margin)
    if winner is None:
        scored = [o for o in outcomes if o is not None and not isinstance(o, InputError)]
        if not scored:
            first = next(o for o in outcomes if isinstance(o, InputError))
            raise first
        winner = next(i for i, o in enumerate(outcomes) if o is not None and not isinstance(o, InputError))
    return Choice(index=winner, outcomes=tuple(outcomes))


def _conf(o: Scored | InputError | None) -> float:
    return float(o.confidence) if o is not None and not isinstance(o, InputError) else 0.0


def _winner(outcomes: Sequence[Scored | InputError | None], margin: float) -> int | None:
    found = [
        (i, float(o.confidence))
        for i, o in enumerate(outcomes)
        if o is not None and not isinstance(o, InputError) and o.found
    ]
    if not found:
        return None
    best = max(c for _, c in found)
    return min(i for i, c in found if c >= best - margin)


def explain(choice: Choice[T], labels: Sequence[str], described: Sequence[str]) -> tuple[str, list[str]]:
    """The result's ``series_choice`` line and one warning per other candidate."""
    n, w = len(labels), choice.index
    won = choice.outcomes[w]
    if choice.n_found == 0:
        why = f"L3 found in none of the {n} candidate series; reporting the preferred one ({described[w]})"
    elif choice.n_found == 1:
        why = f"the only one of {n} candidate series where L3 is found ({described[w]})"
    else:
        why = (
            f"L3 found in {choice.n_found} of {n} candidate series; this one is preferred among those within "
            f"{MARGIN:.2f} of the best confidence ({described[w]})"
        )
    if won is not None and not isinstance(won, InputError):
        why += f", confidence {won.confidence:.2f}"
    others = []
    for i, o in enumerate(choice.outcomes):
        if i == w:
            continue
        head = f"other candidate series {labels[i]} ({described[i]})"
        if o is None:
            others.append(f"{head}: not read (it could not change the choice)")
        elif isinstance(o, InputError):
            others.append(f"{head}: unusable: {o}")
        else:
            status = "L3 found" if o.found else "L3 not found"
            others.append(f"{head}: {status}, confidence {o.confidence:.2f}")
    return why, others
