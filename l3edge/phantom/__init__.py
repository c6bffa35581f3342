"""Synthetic CT phantoms with exactly known vertebral levels (training data, test fixtures, benchmarks, demo).

Runtime dependencies: numpy, scipy, pydicom (nibabel only for NIfTI output, imported lazily). See levels.py
for how vertebral levels are named in the anatomical variants.
"""

from l3edge.phantom.anatomy import Anatomy, Truth, build_anatomy
from l3edge.phantom.config import GENERATOR_VERSION, REGIONS, PhantomConfig
from l3edge.phantom.render import fast_projection, project_full, render_slices
from l3edge.phantom.sampling import sample_config
from l3edge.phantom.writers import write_phantom

__all__ = [
    "GENERATOR_VERSION",
    "REGIONS",
    "Anatomy",
    "PhantomConfig",
    "Truth",
    "build_anatomy",
    "fast_projection",
    "project_full",
    "render_slices",
    "sample_config",
    "write_phantom",
]
