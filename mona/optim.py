"""SGD with momentum and weight decay, the same arithmetic as `torch.optim.SGD(foreach=True)`.

Why not torch.optim: its `step` imports `torch._dynamo` on first use, about 1.4 s in every fresh
process, and every Snakemake job is a fresh process. This one is a handful of `_foreach` ops
(few kernel launches on a GPU) with the same update: d = g + wd p; b = m b + d (b = d at the
first step); p -= lr b.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SGD:
    """Minimal optimizer: `param_groups`, `zero_grad`, `step`, `state_dict`, `load_state_dict`."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": list(params),
                "lr": lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
            }
        ]
        self.momentum_buffers: list[list[torch.Tensor | None]] = [
            [None] * len(group["params"]) for group in self.param_groups
        ]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group, buffers in zip(self.param_groups, self.momentum_buffers, strict=True):
            indices = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not indices:
                continue
            params = [group["params"][i] for i in indices]
            grads = [params[k].grad for k in range(len(params))]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["momentum"]:
                fresh = [i for i in indices if buffers[i] is None]
                for i in fresh:
                    k = indices.index(i)
                    buffers[i] = torch.clone(grads[k]).detach()
                old = [buffers[i] for i in indices if i not in fresh]
                old_grads = [grads[k] for k, i in enumerate(indices) if i not in fresh]
                if old:
                    torch._foreach_mul_(old, group["momentum"])
                    torch._foreach_add_(old, old_grads)
                grads = [buffers[i] for i in indices]
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "param_groups": [
                {k: v for k, v in group.items() if k != "params"} for group in self.param_groups
            ],
            "momentum_buffers": self.momentum_buffers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group, saved in zip(self.param_groups, state["param_groups"], strict=True):
            group.update(saved)
        self.momentum_buffers = [list(buffers) for buffers in state["momentum_buffers"]]
