"""Export a checkpoint to an OpenVINO IR carrying the l3edge metadata (the only writer of that metadata).

torch -> ONNX (opset 17, dynamic batch and height: input ``mip`` [N, 3, H, W], output ``l3`` [N, 2 L, K, 1]
with L the levels the model places) ->
OpenVINO IR (FP32 weights) with ``ModelMetadata`` as a JSON string in rt_info under ``l3edge_metadata``.

    python -m tools.export runs/vgg16.pt --out models/l3edge-vgg16.xml [--name N] [--version V] [--onnx]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from l3edge.metadata import RT_INFO_KEY, ModelMetadata, ModelSpace
from l3edge.place import CONFIDENCE_VERSION
from tools.checkpoint import load_checkpoint, sha256_file
from tools.models import OUTPUT_STRIDE, L3Net, build_model, describe

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "mip"
OUTPUT_NAME = "l3"
_META_FIELDS = {f.name for f in dataclasses.fields(ModelMetadata)}


def architecture_label(arch: str, pruning: Mapping[str, Any] | None) -> str:
    """``vgg16`` or ``vgg16-pruned0.85``."""
    if pruning and pruning.get("ratio"):
        return f"{arch}-pruned{float(pruning['ratio']):.2f}"
    return arch


def default_name(arch: str, pruning: Mapping[str, Any] | None, precision: str = "fp32") -> str:
    """``l3edge-vgg16-p85-fp32`` style names."""
    prune = f"-p{round(float(pruning['ratio']) * 100):02d}" if pruning and pruning.get("ratio") else ""
    return f"l3edge-{arch}{prune}-{precision}"


def metadata_from_checkpoint(ckpt: Mapping[str, Any], parent_sha256: str, **overrides: Any) -> ModelMetadata:
    """ModelMetadata for a checkpoint dict (from ``load_checkpoint``); ``overrides`` replace any field."""
    unknown = set(overrides) - _META_FIELDS
    if unknown:
        raise ValueError(f"unknown metadata fields {sorted(unknown)}; choose from {sorted(_META_FIELDS)}")
    arch = str(ckpt["arch"])
    pruning = ckpt.get("pruning")
    levels = tuple(str(v) for v in ckpt.get("levels") or ())
    extra: dict[str, Any] = {
        "arch": arch,
        "widths": [int(w) for w in ckpt["widths"]],
        "hidden": int(ckpt["hidden"]),
        "outputs": int(ckpt.get("outputs", 2)),
        "metrics": dict(ckpt.get("metrics") or {}),
        "exported_with": {"torch": torch.__version__, "openvino": ov.__version__, "onnx_opset": OPSET},
        "confidence": CONFIDENCE_VERSION,  # its review_below is chosen for this confidence (l3edge.place)
    }
    if pruning:
        extra["pruning"] = dict(pruning)
    extra.update(overrides.pop("extra", None) or {})
    base = ModelMetadata(
        name=default_name(arch, pruning),
        version=str(ckpt.get("version") or "1"),
        space=ckpt["space_obj"],
        output_stride_px=OUTPUT_STRIDE,
        level=str(ckpt.get("level") or "L3"),
        levels=levels if len(levels) > 1 else (),
        precision="fp32",
        architecture=architecture_label(arch, pruning),
        trained_on=str(ckpt.get("trained_on") or ""),
        parent_sha256=parent_sha256,
        extra=extra,
    )
    meta = dataclasses.replace(base, **overrides)
    meta.validate()
    return meta


def to_onnx(model: L3Net, space: ModelSpace, onnx_path: Path) -> Path:
    """Trace to ONNX with dynamic batch and height (width is fixed by the model space)."""
    model = model.eval()
    example = torch.zeros(1, space.channels, space.window_height_px, space.window_width_px)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter (dynamo=False) handles dynamic spatial axes of this plain conv net reliably;
    # its deprecation warnings are noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height"}, OUTPUT_NAME: {0: "batch", 2: "positions"}},
        )
    return onnx_path


def to_openvino(model: L3Net, space: ModelSpace, onnx_path: Path | None = None) -> ov.Model:
    """torch -> ONNX -> ov.Model with input [-1, C, -1, W]; keeps the ONNX file at ``onnx_path`` if given."""
    with tempfile.TemporaryDirectory() as tmp:
        path = to_onnx(model, space, onnx_path or Path(tmp) / "model.onnx")
        return ov.convert_model(str(path))


def write_ir(ov_model: ov.Model, meta: ModelMetadata, out_xml: str | Path) -> Path:
    """Set the metadata JSON in rt_info and save the IR (weights not compressed). Used by quantize too."""
    out_xml = Path(out_xml)
    if out_xml.suffix != ".xml":
        raise ValueError(f"output must be an .xml path, got {out_xml}")
    meta.validate()
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov_model.set_rt_info(meta.to_json(), RT_INFO_KEY)
    ov.save_model(ov_model, str(out_xml), compress_to_fp16=False)
    return out_xml


def read_metadata(xml: str | Path) -> ModelMetadata:
    """Metadata of an IR written by :func:`write_ir` (raises ModelError if absent or invalid)."""
    model = ov.Core().read_model(str(xml))
    if not model.has_rt_info(RT_INFO_KEY):
        from l3edge.errors import ModelError

        raise ModelError(f"{xml} has no l3edge metadata; export it with tools/export.py")
    return ModelMetadata.from_json(model.get_rt_info(RT_INFO_KEY).astype(str))


def check_parity(
    model: L3Net, ov_model: ov.Model, space: ModelSpace, rtol: float = 1e-4, seed: int = 0
) -> float:
    """Compare torch and OpenVINO (f32) on a random 2-item, 4-window strip; returns the max relative error."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(
        (2, space.channels, space.window_height_px + 3 * OUTPUT_STRIDE, space.window_width_px)
    )
    x = x.astype(np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    got = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    err = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-6))
    if got.shape != ref.shape or err > rtol:
        raise RuntimeError(
            f"exported IR disagrees with torch: shapes {got.shape} vs {ref.shape}, rel err {err:.2e}"
        )
    return err


def export(
    model_or_ckpt: str | Path | L3Net,
    out_xml: str | Path,
    metadata_overrides: Mapping[str, Any] | None = None,
    keep_onnx: bool = False,
    refiner: str | Path | None = None,
) -> Path:
    """Export a checkpoint (path) or an in-memory L3Net to an FP32 IR with metadata; returns the .xml path.

    For an L3Net, ``metadata_overrides`` must hold ``space`` (ModelSpace) and may hold ``arch`` (default:
    guessed from the conv count). With ``keep_onnx`` the ONNX file is written next to the IR. ``refiner``: a
    refiner IR to name in the metadata (see :func:`attach_refiner`).
    """
    overrides = dict(metadata_overrides or {})
    if isinstance(model_or_ckpt, L3Net):
        model = model_or_ckpt
        if "space" not in overrides:
            raise ValueError("exporting an in-memory model needs metadata_overrides['space']")
        d = describe(model)
        ckpt: dict[str, Any] = {
            "arch": overrides.pop("arch", "vgg16" if len(d["widths"]) == 13 else "cnn4"),
            **d,
            "space_obj": overrides["space"],
        }
        sha = overrides.pop("parent_sha256", "")
    else:
        model, ckpt = load_checkpoint(model_or_ckpt)
        sha = sha256_file(model_or_ckpt)
    meta = metadata_from_checkpoint(ckpt, sha, **overrides)
    out_xml = Path(out_xml)
    if refiner is not None:
        meta = attach_refiner(meta, refiner, out_xml)
    ov_model = to_openvino(model, meta.space, out_xml.with_suffix(".onnx") if keep_onnx else None)
    err = check_parity(model, ov_model, meta.space)
    log.info("exported %s (torch/OpenVINO max rel err %.1e) -> %s", meta.name, err, out_xml)
    return write_ir(ov_model, meta, out_xml)


def attach_refiner(meta: ModelMetadata, refiner_xml: str | Path, out_xml: str | Path) -> ModelMetadata:
    """``meta`` naming the refiner IR ``refiner_xml``, which is copied next to ``out_xml`` if it is elsewhere.

    Raises:
        UsageError: ``refiner_xml`` is not a refiner (exported with ``--refine-band``) for the same level.
    """
    from l3edge.errors import UsageError

    src, dst_dir = Path(refiner_xml), Path(out_xml).parent
    rmeta = read_metadata(src)
    if not rmeta.is_refiner or rmeta.level not in ("any", meta.level):
        raise UsageError(f"{src} is not a {meta.level} refiner (export it with --refine-band)")
    dst_dir.mkdir(parents=True, exist_ok=True)
    for f in (src, src.with_suffix(".bin")):
        if not (dst_dir / f.name).exists() or not (dst_dir / f.name).samefile(f):
            shutil.copyfile(f, dst_dir / f.name)
    return dataclasses.replace(meta, refiner=src.name)


def rebuild_torch(meta: ModelMetadata) -> L3Net:
    """An untrained torch model of the IR's architecture (for parameter and MAC counts)."""
    e = meta.extra
    return build_model(
        e["arch"],
        meta.space.window_height_px,
        meta.space.window_width_px,
        meta.space.channels,
        hidden=e.get("hidden"),
        widths=e.get("widths"),
        outputs=int(e.get("outputs", 2)),
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output IR path (.xml; .bin written beside it)")
    p.add_argument("--name", help="model name (default: l3edge-<arch>[-pNN]-fp32)")
    p.add_argument("--version", help="model version (default: checkpoint's 'version' or '1')")
    p.add_argument("--stride", type=int, default=4, help="default stride between window tops, model px")
    p.add_argument("--threshold", type=float, default=0.5, help="presence threshold for 'found'")
    p.add_argument(
        "--review-below",
        type=float,
        default=0.0,
        help="flag results with a lower confidence for review (choose it on validation scans)",
    )
    p.add_argument("--trained-on", help="override the training-data description")
    p.add_argument("--onnx", action="store_true", help="also keep the intermediate ONNX file")
    p.add_argument("--refiner", type=Path, help="refiner IR to use after this model (copied next to --out)")
    p.add_argument(
        "--refine-band",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="export a refiner: the offsets it was trained on (train --band), in window heights",
    )
    p.add_argument(
        "--refine-shifts-px",
        type=int,
        nargs="+",
        default=[-8, 0, 8],
        help="a refiner's window centres around the coarse estimate, model px",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides: dict[str, Any] = {
        "default_stride_px": a.stride,
        "presence_threshold": a.threshold,
        "review_below": a.review_below,
    }
    for key, value in (("name", a.name), ("version", a.version), ("trained_on", a.trained_on)):
        if value is not None:
            overrides[key] = value
    if a.refine_band:
        overrides.update(refine_band=tuple(a.refine_band), refine_shifts_px=tuple(a.refine_shifts_px))
    print(export(a.checkpoint, a.out, overrides, keep_onnx=a.onnx, refiner=a.refiner))


if __name__ == "__main__":
    main()
