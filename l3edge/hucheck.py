"""Are the pixel values Hounsfield units? Air outside the body must read about -1000 HU (pure numpy).

Some exports store HU + 1000 (or + 1024) with RescaleIntercept 0, so air reads about 0 HU and every tissue
1000 HU too bright: the model then sees nothing it knows and reports a silent "not found". The readers pass
a sparse sample of pixels from a few slices; air (around the body, in the lungs and bowel) is almost always
more than 2% of them, so their 2nd percentile is the air level. Values below -1500 HU are padding outside
the reconstruction circle (-2048, -3024) and are left out.
"""

from __future__ import annotations

import numpy as np

from l3edge.errors import InputError
from l3edge.numeric import percentiles

PADDING_BELOW_HU = -1500.0
"""Sampled values below this are padding, not air."""
AIR_MAX_HU = -500.0
"""An air level above this is not air in HU ..."""
TISSUE_MIN_HU = 600.0
"""... when the 90th percentile (soft tissue in a CT slice, whose body fills far more than a tenth of the
picture) is also above this. A scan cropped so tightly that it holds no air at all keeps a 90th percentile
near soft tissue (under 300 HU) and passes."""


def air_level(samples: np.ndarray) -> tuple[float, float] | None:
    """(2nd, 90th) percentiles in HU of the non-padding sampled pixels; None when there are too few."""
    v = np.asarray(samples, dtype=np.float32)
    v = v[np.isfinite(v) & (v >= PADDING_BELOW_HU)]
    if v.size < 100:
        return None
    p2, p90 = percentiles(v, [2.0, 90.0])
    return p2, p90


def check_hu(where: object, samples: np.ndarray) -> None:
    """Refuse a scan whose values are not HU (air reads near 0 and soft tissue near 1000).

    Raises:
        InputError: one line naming the air and tissue levels and what to fix.
    """
    levels = air_level(samples)
    if levels is None:
        return
    air, tissue = levels
    if air > AIR_MAX_HU and tissue > TISSUE_MIN_HU:
        raise InputError(
            f"{where}: pixel values are not Hounsfield units: air reads about {air:.0f} HU and soft tissue "
            f"about {tissue:.0f} HU (expected -1000 and 0-100); the export probably stores HU + 1000 with "
            "RescaleIntercept 0: fix RescaleSlope/RescaleIntercept (e.g. intercept -1000 or -1024)"
        )
