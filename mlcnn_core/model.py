"""The network of section 2.2, built from a small spec.

A spec is a plain dict (it is stored in the model card as JSON)::

    {"trunk": [["conv", out, kernel, stride, pad], ["maxpool", kernel, stride], ...],
     "head": [4096, 4096], "dropout": 0.5, "norm": false}

`trunk` is the convolutional part, `head` the hidden widths of the fully connected layers; the
last layer (one output per label) is added from ``num_labels``. ``norm`` puts batch
normalisation after every convolution (our default recipe; the paper has none).

Training form (paper, Table 1): trunk → global average pooling → FC layers.
Test form: "one simply need to remove the average pooling layer entirely, and apply the FC
layers 'pixel-wise' on each output feature maps to get the final confidence maps. This
'pixel-wise' operation is precisely a 1×1 convolution which shares the weights of the
corresponding fully connected layer." :meth:`MLCNN.confidence_maps` does exactly that with
views of the same weight tensors: no copy exists, so the two forms cannot drift apart.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .spec import arch_spec, validate_spec


class Trunk(nn.Sequential):
    """Convolutions (+ optional batch norm) with ReLU, and max pooling, as listed in the spec."""

    def __init__(self, layers: list[list], norm: bool):
        modules: list[nn.Module] = []
        channels = 3
        for layer in layers:
            if layer[0] == "conv":
                _, out, k, s, p = layer
                modules.append(nn.Conv2d(channels, out, k, s, p, bias=not norm))
                if norm:
                    modules.append(nn.BatchNorm2d(out))
                modules.append(nn.ReLU(inplace=True))
                channels = out
            else:
                _, k, s = layer
                modules.append(nn.MaxPool2d(k, s))
        super().__init__(*modules)
        self.out_channels = channels


class Head(nn.Module):
    """Fully connected layers that can also run as 1×1 convolutions on a feature map."""

    def __init__(self, in_features: int, hidden: list[int], num_labels: int, dropout: float):
        super().__init__()
        widths = [in_features, *hidden, num_labels]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Training form: ``features`` is [N, C] (the trunk's map after global average pooling)."""
        for i, fc in enumerate(self.fcs):
            features = fc(features)
            if i < len(self.fcs) - 1:
                features = self.dropout(F.relu(features))
        return features

    def hidden_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """Test form up to the last layer: [N, C, h, w] → the last layer's input at each position."""
        for fc in self.fcs[:-1]:
            fmap = self.dropout(F.relu(F.conv2d(fmap, fc.weight[:, :, None, None], fc.bias)))
        return fmap

    def forward_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """Test form: ``fmap`` is [N, C, h, w]; each FC layer is a 1×1 convolution whose kernel is a
        view of the FC weight (``weight[:, :, None, None]`` shares its storage)."""
        last = self.fcs[-1]
        return F.conv2d(self.hidden_map(fmap), last.weight[:, :, None, None], last.bias)


class MLCNN(nn.Module):
    """Trunk + head. ``forward`` is the training form, ``confidence_maps`` the test form."""

    def __init__(self, spec: dict, num_labels: int):
        super().__init__()
        validate_spec(spec)
        self.spec = copy.deepcopy(spec)
        self.trunk = Trunk(spec["trunk"], bool(spec.get("norm", False)))
        self.head = Head(self.trunk.out_channels, spec["head"], num_labels, float(spec.get("dropout", 0.0)))

    @property
    def num_labels(self) -> int:
        return self.head.fcs[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] → [N, l] confidences, through global average pooling."""
        return self.head(self.trunk(x).mean(dim=(2, 3)))

    def confidence_maps(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] → [N, l, h, w]: one confidence map per label, in one forward pass."""
        return self.head.forward_map(self.trunk(x))


def init_paper(model: MLCNN) -> None:
    """Section 2.4: Glorot (normalised, uniform) weights; "Biases were initialized to 0 for the
    lowest and uppermost layers [...] we initialize the biases of all other layers to 1."
    Batch-norm layers, when present, keep their identity initialisation."""
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(weighted):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0.0 if i in (0, len(weighted) - 1) else 1.0)


def init_default(model: MLCNN) -> None:
    """Our default: He (fan-out) init for ReLU convolutions, Glorot for the FC layers, biases 0.
    With batch norm a bias of 1 is absorbed by the normalisation anyway."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


def build_model(arch: str | dict = "compact", num_labels: int = 1, norm: bool = True,
                init: str = "default") -> MLCNN:
    """A freshly initialised network. ``arch`` is a name from ARCHS or a full spec."""
    spec = arch if isinstance(arch, dict) else arch_spec(arch, norm)
    model = MLCNN(spec, num_labels)
    {"paper": init_paper, "default": init_default}[init](model)
    return model


def grow_labels(model: MLCNN, extra: int) -> None:
    """Add ``extra`` output rows for new labels: old rows are kept, the new ones are appended
    (Glorot-scaled weights, bias at the mean of the old biases so they start neither ahead nor
    behind)."""
    if extra <= 0:
        return
    last = model.head.fcs[-1]
    old_w, old_b = last.weight.data, last.bias.data
    bound = math.sqrt(6.0 / (last.in_features + last.out_features + extra))
    new_w = torch.empty(extra, last.in_features, dtype=old_w.dtype).uniform_(-bound, bound)
    new_b = torch.full((extra,), float(old_b.mean()) if old_b.numel() else 0.0, dtype=old_b.dtype)
    grown = nn.Linear(last.in_features, last.out_features + extra)
    grown.weight.data = torch.cat([old_w, new_w])
    grown.bias.data = torch.cat([old_b, new_b])
    model.head.fcs[-1] = grown


def fold_batchnorm(trunk: Trunk) -> nn.Sequential:
    """A copy of the trunk with every Conv→BatchNorm pair merged into one convolution (for
    prediction: same outputs in eval mode, one layer less)."""
    layers = list(trunk)
    folded: list[nn.Module] = []
    i = 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            bn = layers[i + 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=True)
            conv.weight.data = m.weight.data * scale[:, None, None, None]
            bias = m.bias.data if m.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias.data = (bias - bn.running_mean) * scale + bn.bias
            conv.weight.data, conv.bias.data = conv.weight.data.detach(), conv.bias.data.detach()
            folded.append(conv)
            i += 2
        else:
            folded.append(m)
            i += 1
    return nn.Sequential(*folded)
