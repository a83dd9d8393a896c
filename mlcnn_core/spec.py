"""Architecture specs: plain data (stored in model cards), no torch, so model files can be checked
without importing it. :mod:`mlcnn_core.model` builds networks from them."""

from __future__ import annotations

import copy


def _paper_trunk() -> list[list]:
    return (
        [["conv", 64, 7, 2, 3], ["maxpool", 3, 2], ["conv", 128, 3, 2, 1]]
        + [["conv", 128, 3, 1, 1]] * 4
        + [["maxpool", 3, 2]]
        + [["conv", 256, 3, 1, 1]] * 5
        + [["maxpool", 3, 2]]
        + [["conv", 512, 3, 1, 1]] * 5
    )


ARCHS: dict[str, dict] = {
    # Table 1 exactly: 16 convolutions, GAP, FC 4096, FC 4096, FC l; dropout 0.5 after each hidden FC.
    "paper": {"trunk": _paper_trunk(), "head": [4096, 4096], "dropout": 0.5},
    # Table 2's shape (network in network): the last trunk layer is 1024 wide, one FC layer.
    "nin": {
        "trunk": [
            ["conv", 96, 7, 4, 0], ["conv", 96, 1, 1, 0], ["conv", 96, 1, 1, 0], ["maxpool", 3, 2],
            ["conv", 256, 5, 1, 2], ["conv", 256, 1, 1, 0], ["conv", 256, 1, 1, 0], ["maxpool", 3, 2],
            ["conv", 384, 3, 1, 1], ["conv", 384, 1, 1, 0], ["conv", 384, 1, 1, 0], ["maxpool", 3, 2],
            ["conv", 1024, 3, 1, 1],
        ],
        "head": [],
        "dropout": 0.0,
    },
    # Table 1's layout at about a sixth of its cost, for CPUs: same strides and pooling, fewer and
    # narrower layers, one 512-unit hidden FC layer.
    "compact": {
        "trunk": [
            ["conv", 32, 7, 2, 3], ["maxpool", 3, 2], ["conv", 64, 3, 2, 1],
            ["conv", 64, 3, 1, 1], ["conv", 64, 3, 1, 1], ["maxpool", 3, 2],
            ["conv", 128, 3, 1, 1], ["conv", 128, 3, 1, 1], ["conv", 128, 3, 1, 1], ["maxpool", 3, 2],
            ["conv", 256, 3, 1, 1], ["conv", 256, 3, 1, 1], ["conv", 256, 3, 1, 1],
        ],
        "head": [512],
        "dropout": 0.5,
    },
    # For tests and demos only: trains in seconds.
    "tiny": {
        "trunk": [["conv", 8, 5, 2, 2], ["maxpool", 3, 2], ["conv", 16, 3, 2, 1], ["maxpool", 3, 2],
                  ["conv", 32, 3, 1, 1]],
        "head": [32],
        "dropout": 0.0,
    },
}


def arch_spec(name: str, norm: bool) -> dict:
    """A copy of a named spec with the normalisation choice filled in."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHS)}")
    spec = copy.deepcopy(ARCHS[name])
    spec["name"] = name
    spec["norm"] = norm
    return spec


def validate_spec(spec: dict) -> None:
    """Raise ValueError when a spec (e.g. read from a model file) is not one we can build."""
    if not isinstance(spec, dict):
        raise ValueError("architecture spec is not an object")
    trunk, head = spec.get("trunk"), spec.get("head")
    if not isinstance(trunk, list) or not trunk:
        raise ValueError("architecture spec has no trunk")
    if not any(isinstance(layer, list) and layer and layer[0] == "conv" for layer in trunk):
        raise ValueError("architecture trunk has no convolution")
    for layer in trunk:
        ok = isinstance(layer, list) and (
            (len(layer) == 5 and layer[0] == "conv") or (len(layer) == 3 and layer[0] == "maxpool")
        )
        if not ok or not all(isinstance(v, int) and 0 <= v <= 8192 for v in layer[1:]):
            raise ValueError(f"bad trunk layer {layer!r}")
    if not isinstance(head, list) or not all(isinstance(w, int) and 0 < w <= 65536 for w in head):
        raise ValueError(f"bad head widths {head!r}")
    if not isinstance(spec.get("dropout", 0.0), (int, float)) or not 0 <= spec.get("dropout", 0.0) < 1:
        raise ValueError("bad dropout")


def trunk_stride(spec: dict) -> int:
    """Product of the strides of the trunk: how many input pixels one map position spans."""
    stride = 1
    for layer in spec["trunk"]:
        stride *= layer[3] if layer[0] == "conv" else layer[2]
    return stride
