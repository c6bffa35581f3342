"""Which end of a stored MIP is the head: from a flag, or detected by running a model both ways.

The public L3 dataset does not say whether its MIPs store the head first or last. Detection runs a model (the
bundled one, or ``--orient-model``; through the public ``L3Locator.predict_projection``, refiner off) on each
MIP as stored and flipped, and takes the orientation whose result is more confident. Why a model rather than a
hand-made anatomical rule: the model already encodes the whole craniocaudal context it was trained to count
on (ribs above, pelvis below), whereas a rule (say, lateral bone mass above and below the label) would be
tuned on the same phantoms and has its own blind spots (scans cut just below L3 show no pelvis).

On 125 phantom MIPs with L3 (``l3edge.phantom.fast_projection``, seeds 1000-1149), the bundled 0.2.0 model was
more confident the right way up in 119 (95%); on chest-only MIPs it is often more confident upside down. So:

- only scans labelled with some level present vote, and only when the two confidences differ by at least
  ``min_margin``;
- ``detect`` (the default): a file is assumed to store all its MIPs the same way (one pipeline wrote it);
  the majority of its votes decides for every scan of that file, and a split vote (majority share under
  ``min_share``) is an error that asks for a flag;
- ``detect-per-scan``: each voting scan takes its own vote, the others the file's majority.

Every scan records ``orientation``, ``orientation_by`` and the two confidences in its cache metadata.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from l3edge.errors import InputError, UsageError
from tools.mips import ORIENTATIONS, MipScan

log = logging.getLogger("tools.orientation")

MODES = ("head-first", "head-last", "detect", "detect-per-scan", "default")
Scorer = Callable[[MipScan, np.ndarray], dict[str, float]]


def locator_scorer(model: str | None = None) -> Scorer:
    """Confidence of ``L3Locator`` (``model``: path, else $L3EDGE_MODEL, else the bundled model) both ways."""
    from l3edge import L3Locator

    locator = L3Locator.load(model, refine=False)
    logging.getLogger("l3edge").setLevel(logging.WARNING)  # not one line per scan and orientation

    def score(scan: MipScan, mip: np.ndarray) -> dict[str, float]:
        return {
            o: float(locator.predict_projection(scan.projection(mip, o), path=scan.path).confidence)
            for o in ORIENTATIONS
        }

    return score


def score_all(
    scans: Sequence[MipScan], scorer: Scorer, progress: Callable[[bool], None] | None = None
) -> list[dict[str, float] | None]:
    """The scorer's confidences for every scan that will vote (None for the others and unreadable ones)."""
    out: list[dict[str, float] | None] = []
    for s in scans:
        scores = None
        if s.has_label:
            try:
                scores = scorer(s, s.load())
            except InputError:  # the cache job reports it
                scores = None
        out.append(scores)
        if progress:
            progress(scores is not None)
    return out


def vote(scores: dict[str, float] | None, min_margin: float) -> str | None:
    """The more confident orientation, or None when there are no scores or they differ by < min_margin."""
    if not scores:
        return None
    a, b = scores["head-first"], scores["head-last"]
    if abs(a - b) < min_margin:
        return None
    return "head-first" if a > b else "head-last"


def decide(
    scans: Sequence[MipScan],
    scores: Sequence[dict[str, float] | None],
    mode: str,
    min_margin: float = 0.05,
    min_share: float = 0.8,
) -> list[MipScan]:
    """The scans with their orientation set (see the module docstring); UsageError on a split vote."""
    if mode in ORIENTATIONS:
        return [s.oriented(mode, "flag") for s in scans]
    if mode == "default":  # a manifest's convention: row 0 is the head end
        return [s.oriented("head-first", "default") for s in scans]
    if mode not in MODES:
        raise UsageError(f"orientation mode must be one of {', '.join(MODES)}, not {mode!r}")
    votes = [vote(sc, min_margin) for sc in scores]
    out = list(scans)
    for origin in sorted({s.origin for s in scans}):
        idx = [i for i, s in enumerate(scans) if s.origin == origin]
        tally = Counter(votes[i] for i in idx if votes[i] is not None)
        if not tally:
            raise UsageError(
                f"{origin}: cannot detect which end is the head (no scan with a label gave a clear vote); "
                "look at a few MIPs and pass --head-first or --head-last"
            )
        best, n_best = tally.most_common(1)[0]
        share = n_best / sum(tally.values())
        log.info(
            "%s: orientation votes %s (%d of %d scans voted)",
            origin,
            dict(sorted(tally.items())),
            sum(tally.values()),
            len(idx),
        )
        if mode == "detect" and share < min_share:
            raise UsageError(
                f"{origin}: the orientation vote is split ({dict(sorted(tally.items()))}); pass --head-first "
                "or --head-last, or --detect-per-scan if the file mixes orientations"
            )
        majority = f"detected: file majority ({n_best} of {sum(tally.values())} votes)"
        for i in idx:
            own, sc = votes[i], scores[i]
            if mode == "detect-per-scan" and own is not None:
                out[i] = scans[i].oriented(own, "detected: this scan", sc)
            else:
                out[i] = scans[i].oriented(str(best), majority, sc)
    return out


def summarize_orientation(metas: Sequence[dict], min_margin: float = 0.05) -> dict[str, dict[str, int]]:
    """Counts over cached MIP scans (for the build summary): orientation used, how it was chosen, and how
    the scans' own votes compare with it (``with``, ``against``, ``no vote``: no label or too close)."""
    votes: Counter[str] = Counter()
    for m in metas:
        v = vote(m.get("orientation_scores"), min_margin)
        votes["no vote" if v is None else "with" if v == m["orientation"] else "against"] += 1
    return {
        "orientation": dict(sorted(Counter(m["orientation"] for m in metas).items())),
        "by": dict(sorted(Counter(str(m["orientation_by"]) for m in metas).items())),
        "votes": dict(sorted(votes.items())),
    }
