"""The RMSprop variant of section 2.5.

    Msq_0 = 1
    Msq_t = 0.9 Msq_{t−1} + 0.1 (∂E/∂W)²
    W_t   = W_{t−1} − min(α_max, α_0 / √Msq_t) · ∂E/∂W

"where all operations - division, squaring, square root and minimum - are element-wise."
There is no epsilon: Msq starts at 1 and only shrinks towards g², and the min() caps the step
where Msq is small. Note what this means with the paper's α_0 = α_max = 0.01: as long as
Msq < 1 (it starts at 1 and decays towards g², which is tiny for most weights) the step is
capped at α_max, i.e. plain SGD at 0.01.
"""

from __future__ import annotations

import math

import torch


class PaperRMSprop(torch.optim.Optimizer):
    """Section 2.5's optimiser, vectorised over all parameters of a group with ``torch._foreach``."""

    def __init__(self, params, lr: float = 0.01, lr_max: float = 0.01, decay: float = 0.9,
                 weight_decay: float = 0.0):
        if lr <= 0 or lr_max <= 0:
            raise ValueError("learning rates must be positive")
        if not 0.0 <= decay < 1.0:
            raise ValueError("decay must be in [0, 1)")
        super().__init__(params, {"lr": lr, "lr_max": lr_max, "decay": decay, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            msqs = []
            for p in params:
                state = self.state[p]
                if "msq" not in state:
                    state["msq"] = torch.ones_like(p, memory_format=torch.preserve_format)
                msqs.append(state["msq"])
            decay = group["decay"]
            torch._foreach_mul_(msqs, decay)
            torch._foreach_addcmul_(msqs, grads, grads, value=1.0 - decay)
            # rate = min(α_max, α_0 / √Msq), element-wise
            rates = torch._foreach_sqrt(msqs)
            torch._foreach_reciprocal_(rates)
            torch._foreach_mul_(rates, group["lr"])
            torch._foreach_clamp_max_(rates, group["lr_max"])
            torch._foreach_mul_(rates, grads)
            torch._foreach_sub_(params, rates)
        return loss


def warmup_cosine(step: int, total: int, warmup_fraction: float) -> float:
    """Multiplier of the base rate at ``step`` (from 0) of ``total``: a linear warm-up over
    ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warm = max(1, int(warmup_fraction * total))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1 + math.cos(math.pi * progress))
