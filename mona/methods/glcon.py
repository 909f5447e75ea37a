"""MONA's stage 1, GLCon: relational (ISD-style) global and local instance discrimination.

A student and its EMA teacher embed two views of each unlabeled slice; the student's embedding
(through an extra predictor) and the teacher's are compared with a set of anchors, and the
student's similarity distribution (temperature tau_s) is taught the teacher's (tau_t):
`KL(teacher || student)` (the paper's Eq. 1-2, as ISD).

- Views: both share the batch's weak geometry and get independent photometric noise (contrast,
  brightness, blur). Sharing the geometry is what lets the local branch compare crops "at the
  same location" of the two outputs.
- Anchors (the paper's mined views, "other unlabeled slices chosen at random and augmented"):
  FIFO banks of the teacher's keys of earlier steps. Each step compares against the banks as
  they were before it, then enqueues its own keys, as ISD's `train_isd.py` and the official
  MONA `model_2D.py` do. A query therefore never meets its own key among the anchors: at
  tau_t = 0.01 a self-anchor at cosine 1 would outweigh every other anchor by more than e^3 and
  turn the teacher's distribution one-hot on self (InfoNCE, not relational discrimination).
  The engine's batches are random, so the banks hold other slices of the unlabeled set. While
  a bank is empty (the first step) its loss is zero.
- Global branch: encoder bottleneck -> average pool -> projection MLP (`proj_dim`); the
  student adds a predictor MLP. Bank: `memory_size` slice embeddings (the paper's 36).
- Local branch: `view_set` crops of `view_size` x `view_size` at random locations, the same in
  both views, of the output logits; each pixel is projected to `proj_dim` and a crop is the
  mean of its pixels' projections (evaluated as the projection of the mean hidden vector,
  the same number without a full-resolution `proj_dim` map). Bank: the teacher's crops of the
  last `memory_size` slices (`memory_size` x `view_set` crop embeddings), as the official
  code keeps a bank of earlier crops. `view_size` is clipped to the image size.
- k nearest neighbours: the teacher's distribution keeps only its `k` most similar anchors
  (the mined positives); the student's spans every anchor, so the other anchors are pushed
  away. With `k` >= the number of anchors this is plain ISD.
- Loss: `sup + L_global + L_local`, `sup` on the labeled weak view. The teacher (backbone and
  projection heads, not the predictors) is the EMA of the student with the constant decay
  `ema` (the paper's xi = 0.99 xi + 0.01 theta and the official code; no warm-up).

Where the paper and the official code differ: tau_t is 0.01 in the paper, 0.1 in the code
(`tau_t`, default the paper's); the code takes 49 sliding 64-px crops, the paper "36 random
crops" (`view_set`, default the paper's).

Where the paper is silent: projection and predictor MLPs are Linear-ReLU-Linear with hidden
width `proj_dim` and no BatchNorm (MoCo v2's head; works with a batch of one); ISD's KL is
averaged over queries; banks start empty rather than with random vectors (ISD and the official
code start from noise, whose targets carry no information).

Stage-1 frameworks are pluggable: `register_framework("name")` on a `PretrainFramework`
subclass makes `pretrain_framework: name` train it. A framework owns a `student`
(SegmentationNet) that stage 2 starts from; settings of its own become keys of
`mona.methods.mona.Mona.defaults`, the only keys a config may set.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mona.contrastive import GlobalProjectionHead
from mona.losses import ema_update, frozen_copy, supervised_loss
from mona.method import Batch, MethodContext
from mona.models import SegmentationNet

# Finite stand-in for log(0): masked anchors get zero probability without NaN gradients.
_MASKED = -1e9

FRAMEWORKS: dict[str, type[PretrainFramework]] = {}


def register_framework(name: str):
    """Class decorator: make a `PretrainFramework` selectable as `pretrain_framework: name`."""

    def decorate(cls: type[PretrainFramework]) -> type[PretrainFramework]:
        if name in FRAMEWORKS and FRAMEWORKS[name] is not cls:
            raise ValueError(f"pre-training framework {name!r} is registered twice")
        FRAMEWORKS[name] = cls
        return cls

    return decorate


def get_framework(name: str) -> type[PretrainFramework]:
    if name not in FRAMEWORKS:
        raise ValueError(
            f"unknown pretrain_framework {name!r}; registered: {', '.join(sorted(FRAMEWORKS))}"
        )
    return FRAMEWORKS[name]


class PretrainFramework(nn.Module):
    """A stage-1 objective: owns `student` (carried into stage 2) and computes its losses."""

    display_name: ClassVar[str] = ""  # as the paper's Table 5 names it
    student: SegmentationNet

    def __init__(self, ctx: MethodContext, hp: dict[str, Any]):
        super().__init__()
        self.ctx = ctx
        self.hp = hp

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """EMA teachers and the like; called after the optimizer step."""


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


class FifoMemory(nn.Module):
    """A first-in-first-out bank of `size` embeddings of width `dim`.

    Buffers (so checkpoints carry the bank): `memory` (size, dim), `pointer` (the next slot)
    and `count` (filled slots). Enqueueing never reads a value back to the host.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        self.size = int(size)
        self.register_buffer("memory", torch.zeros(self.size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, vectors: Tensor) -> None:
        """Append rows of `vectors` (N, dim); beyond `size` the oldest entries are overwritten."""
        vectors = vectors.detach()[-self.size :]
        n = vectors.shape[0]
        if n == 0:
            return
        slots = (self.pointer + torch.arange(n, device=vectors.device)) % self.size
        self.memory[slots] = vectors.to(self.memory.dtype)
        self.pointer.copy_((self.pointer + n) % self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))

    def valid_mask(self) -> Tensor:
        """(size,) True where a slot holds an embedding."""
        return torch.arange(self.size, device=self.memory.device) < self.count

    def entries(self) -> Tensor:
        """Filled entries, oldest first (reads the count back; for inspection and tests)."""
        count = int(self.count)
        if count < self.size:
            return self.memory[:count].clone()
        return torch.roll(self.memory, -int(self.pointer), dims=0).clone()


def _masked_similarities(queries: Tensor, anchors: Tensor, valid: Tensor | None) -> Tensor:
    sim = F.normalize(queries.float(), dim=-1) @ F.normalize(anchors.float(), dim=-1).transpose(
        -1, -2
    )
    if valid is not None:
        sim = sim.masked_fill(~valid.unsqueeze(-2), _MASKED)
    return sim


def teacher_log_distribution(
    teacher: Tensor,
    anchors: Tensor,
    tau_t: float,
    k: int | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """log p_t (..., Q, M): softmax of cosine / tau_t over the `k` most similar valid anchors."""
    sim_t = _masked_similarities(teacher, anchors, valid)
    logits_t = sim_t / tau_t
    if k is not None and k < sim_t.shape[-1]:
        threshold = sim_t.topk(k, dim=-1).values[..., -1:]
        logits_t = logits_t.masked_fill(sim_t < threshold, _MASKED)
    return logits_t.log_softmax(-1)


def relational_kl(
    student: Tensor,
    teacher: Tensor,
    anchors: Tensor,
    tau_s: float,
    tau_t: float,
    k: int | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """ISD's loss: KL(teacher || student) of softmaxed cosine similarities to the anchors.

    student, teacher (..., Q, D); anchors (..., M, D) (leading dims broadcast); valid (..., M)
    marks usable anchors. The teacher's distribution is restricted to its `k` most similar
    valid anchors (None: all). Mean over queries of sum_j p_t(j) (log p_t(j) - log p_s(j)).
    """
    log_t = teacher_log_distribution(teacher, anchors, tau_t, k, valid)
    log_s = (_masked_similarities(student, anchors, valid) / tau_s).log_softmax(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def crop_boxes(
    batch: int, height: int, width: int, count: int, size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, int]:
    """Top-left corners (B, N) of `count` random square crops per image, and their side.

    The side is `size` clipped to the image, so every crop lies inside it.
    """
    side = max(1, min(int(size), height, width))
    draw = torch.rand(2, batch, count, generator=generator, device=generator.device)
    top = (draw[0] * (height - side + 1)).floor().long()
    left = (draw[1] * (width - side + 1)).floor().long()
    return top, left, side


def crop_means(maps: Tensor, top: Tensor, left: Tensor, side: int) -> Tensor:
    """Mean vector (B, N, C) of maps (B, C, H, W) over each crop [top, top+side) x [left, ...)."""
    _, _, height, width = maps.shape
    rows = torch.arange(height, device=maps.device)
    cols = torch.arange(width, device=maps.device)
    top, left = top.to(maps.device), left.to(maps.device)
    in_rows = ((rows >= top[..., None]) & (rows < top[..., None] + side)).to(maps.dtype)
    in_cols = ((cols >= left[..., None]) & (cols < left[..., None] + side)).to(maps.dtype)
    summed = torch.einsum("bchw,bnh->bncw", maps, in_rows)
    return torch.einsum("bncw,bnw->bnc", summed, in_cols) / (side * side)


class CropProjectionHead(nn.Module):
    """Per-pixel projection of a map (1x1 conv, BN, ReLU, linear), averaged over crops.

    The final linear layer commutes with the mean, so it is applied to each crop's mean
    hidden vector: the same value as projecting every pixel and averaging.
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)
        )
        self.out = nn.Linear(dim, dim)

    def forward(self, maps: Tensor, top: Tensor, left: Tensor, side: int) -> Tensor:
        return self.out(crop_means(self.hidden(maps), top, left, side))


class RelationalBanks(nn.Module):
    """The global and local anchor banks of relational discrimination (GLCon, ISD).

    `losses` compares the step's queries and keys with the banks as they are, and only then
    enqueues the keys, so the anchors never contain the current step's keys.
    """

    def __init__(self, memory_size: int, view_set: int, dim: int):
        super().__init__()
        self.memory = FifoMemory(memory_size, dim)
        self.local_memory = FifoMemory(memory_size * view_set, dim)

    def losses(
        self,
        student_global: Tensor,
        teacher_global: Tensor,
        student_local: Tensor,
        teacher_local: Tensor,
        tau_s: float,
        tau_t: float,
        k: int | None,
    ) -> tuple[Tensor, Tensor]:
        """(global, local) KL losses; global (B, D), local (B, N, D) per crop."""
        global_loss = relational_kl(
            student_global, teacher_global, self.memory.memory.clone(), tau_s, tau_t, k,
            valid=self.memory.valid_mask(),
        )  # fmt: skip
        local_loss = relational_kl(
            student_local.flatten(0, 1), teacher_local.flatten(0, 1),
            self.local_memory.memory.clone(), tau_s, tau_t, k,
            valid=self.local_memory.valid_mask(),
        )  # fmt: skip
        self.memory.enqueue(F.normalize(teacher_global.detach().float(), dim=-1))
        self.local_memory.enqueue(F.normalize(teacher_local.detach().flatten(0, 1).float(), dim=-1))
        return global_loss, local_loss


@register_framework("glcon")
class GLCon(PretrainFramework):
    """Global + local relational instance discrimination plus `sup` (the module docstring)."""

    display_name = "GLCon"

    def __init__(self, ctx: MethodContext, hp: dict[str, Any]):
        super().__init__(ctx, hp)
        dim = int(hp["proj_dim"])
        self.student = ctx.build_backbone()
        self.teacher = frozen_copy(self.student)
        self.global_head = GlobalProjectionHead(self.student.bottleneck_channels, dim, dim)
        self.teacher_global_head = frozen_copy(self.global_head)
        self.global_predictor = mlp(dim, dim, dim)
        self.local_head = CropProjectionHead(ctx.num_classes, dim)
        self.teacher_local_head = frozen_copy(self.local_head)
        self.local_predictor = mlp(dim, dim, dim)
        self.banks = RelationalBanks(int(hp["memory_size"]), int(hp["view_set"]), dim)

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        hp, augmenter = self.hp, self.ctx.augmenter
        n, n_u = batch.num_labeled, batch.unlabeled_image.shape[0]
        view_s = augmenter.photometric(batch.unlabeled_image)
        view_t = augmenter.photometric(batch.unlabeled_image)
        _, _, height, width = view_s.shape
        top, left, side = crop_boxes(
            n_u, height, width, int(hp["view_set"]), int(hp["view_size"]),
            augmenter.generator,
        )  # fmt: skip

        output = self.student(torch.cat([batch.labeled_image, view_s]))
        sup = supervised_loss(output.logits[:n], batch.labeled_mask, float(hp["sup_weight"]))
        with torch.no_grad():
            key = self.teacher(view_t)
            teacher_global = self.teacher_global_head(key.bottleneck)
            teacher_local = self.teacher_local_head(key.logits, top, left, side)
        student_global = self.global_predictor(self.global_head(output.bottleneck[n:]))
        student_local = self.local_predictor(self.local_head(output.logits[n:], top, left, side))
        global_loss, local_loss = self.banks.losses(
            student_global, teacher_global, student_local, teacher_local,
            float(hp["tau_s"]), float(hp["tau_t"]), int(hp["k"]),
        )  # fmt: skip
        return {
            "loss": sup + global_loss + local_loss,
            "sup": sup,
            "inst_global": global_loss,
            "inst_local": local_loss,
        }

    def after_step(self, step: int) -> None:
        decay = float(self.hp["ema"])
        for teacher, student in (
            (self.teacher, self.student),
            (self.teacher_global_head, self.global_head),
            (self.teacher_local_head, self.local_head),
        ):
            ema_update(teacher, student, step, decay, warmup=False)
