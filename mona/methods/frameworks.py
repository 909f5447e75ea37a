"""The contrastive frameworks MONA's Table 5 compares with GLCon, as stage-1 objectives.

Each is a `PretrainFramework` (`mona.methods.glcon`), so `mona~pretrain_framework=moco` pre-trains
with MoCo v2 and then runs MONA's fine-tuning from its student; the "pre-training only" setting
evaluates that run's stage 1.

Everything but the instance-discrimination loss is GLCon's, so the comparison isolates the
objective:
- Views: two photometric views (contrast, brightness, blur) of the batch's weak unlabeled slices,
  sharing the weak geometry so that crops "at the same location" correspond. The student embeds
  the query view; the key view is embedded by an EMA copy of the student (MoCo v2, kNN-MoCo, BYOL,
  ISD) or by the student itself (SimCLR).
- Global branch: encoder bottleneck -> average pool -> projection MLP (`proj_dim`).
- Local branch: `view_set` crops of `view_size` px at the same random locations of both views'
  output logits, each projected to `proj_dim` (GLCon's `CropProjectionHead`). For the
  contrastive objectives a crop's positive is the key crop at its location and its negatives
  the slice's other key crops; ISD's anchors are a bank of earlier crops, as GLCon's.
- Loss: `sup + L_global + L_local`, `sup` on the labeled weak view.

The objectives:
- MoCo v2: InfoNCE at temperature 0.2; global negatives are a FIFO queue of earlier keys
  (`memory_size` entries, enqueued after the loss, as MoCo); key encoder and heads are the EMA of
  the query's with momentum 0.999.
- kNN-MoCo: MoCo v2 whose positives also include the `k` entries nearest (cosine) to the key:
  in the queue (global) and among the slice's other key crops (local). The loss averages
  log-probabilities over the positives (Khosla et al.'s L_out).
- SimCLR: NT-Xent at temperature 0.5 (`mona.contrastive.nt_xent`); both views go through the
  student; global negatives are the batch's other views, local ones the slice's other crops of
  both views.
- BYOL: a predictor MLP on the online side regresses the target's projection,
  `2 - 2 cos(prediction, target)`; no negatives. Target momentum 0.996 (BYOL's base value).
- ISD: a predictor MLP on the student; `KL(teacher || student)` of softmaxed similarities to
  banks of the teacher's keys of earlier steps (GLCon's `RelationalBanks`: `memory_size` slice
  embeddings globally, those slices' crops locally; compared first, the step's keys enqueued
  after, as `train_isd.py` does) at temperatures `tau_s` / `tau_t`, without GLCon's k-nearest
  restriction. Momentum 0.99.

Where the paper is silent: queues and banks take GLCon's size (`memory_size` = 36), not the
65536 of ImageNet training; every framework shares GLCon's settings `proj_dim`, `k`, `view_set`,
`view_size`, `tau_s`, `tau_t`; the momenta and temperatures of MoCo v2, SimCLR and BYOL are
their papers' (class constants, not config keys); every momentum is constant, as in MoCo,
ISD and GLCon (BYOL's cosine rise from 0.996 to 1 is left out); losses are one-directional
(the student sees the query view only) except SimCLR's NT-Xent, which is symmetric by definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mona.contrastive import GlobalProjectionHead, cosine_logits, nt_xent
from mona.losses import ema_update, frozen_copy, supervised_loss
from mona.method import Batch, MethodContext
from mona.methods.glcon import (
    CropProjectionHead,
    FifoMemory,
    PretrainFramework,
    RelationalBanks,
    crop_boxes,
    mlp,
    register_framework,
)

# Finite stand-in for log(0): candidates outside a query's set get zero probability, no NaN.
_MASKED = -1e9


@dataclass
class Embeddings:
    """One step's projections: the student's query view and the other (key) view.

    Global (B, D) per slice, local (B, N, D) per crop; `query_*` are after the predictor, if any.
    """

    query_global: Tensor
    key_global: Tensor
    query_local: Tensor
    key_local: Tensor


def info_nce(
    queries: Tensor,
    candidates: Tensor,
    positive: Tensor,
    temperature: float,
    valid: Tensor | None = None,
) -> Tensor:
    """InfoNCE with one or more positives per query, mean over queries.

    For query i: -1/|P_i| sum_{p in P_i} log( exp(s_ip / t) / sum_{j valid} exp(s_ij / t) ),
    s the cosine similarity. queries (Q, D), candidates (C, D); positive (Q, C) marks P_i (every
    query has one, and it is valid); valid (Q, C) or (C,) marks the candidates a query sees.
    """
    logits = cosine_logits(queries, candidates, temperature)
    if valid is not None:
        logits = logits.masked_fill(~valid.expand_as(logits), _MASKED)
    log_prob = logits.log_softmax(dim=1)
    summed = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(summed / positive.sum(dim=1)).mean()


def nearest_mask(keys: Tensor, anchors: Tensor, k: int, valid: Tensor) -> Tensor:
    """(Q, M) True at the `k` valid anchors most cosine-similar to each key (fewer if fewer)."""
    similarity = cosine_logits(keys, anchors, 1.0)
    valid = valid.expand_as(similarity)
    chosen = torch.zeros_like(valid)
    k = min(int(k), anchors.shape[0])
    if k > 0:
        index = similarity.masked_fill(~valid, float("-inf")).topk(k, dim=1).indices
        chosen.scatter_(1, index, True)
    return chosen & valid


def byol_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """BYOL's normalised MSE, 2 - 2 cos(prediction, target), mean over rows; no negatives."""
    cosine = F.cosine_similarity(predictions.float(), targets.detach().float(), dim=-1)
    return (2.0 - 2.0 * cosine).mean()


def same_slice(slices: int, crops: int, device: torch.device) -> Tensor:
    """(S*N, S*N) True where two flattened crops belong to the same slice."""
    owner = torch.arange(slices, device=device).repeat_interleave(crops)
    return owner[:, None] == owner[None, :]


class InstanceFramework(PretrainFramework):
    """Shared body: views, `sup`, global and local projections, the EMA key network.

    Subclasses set `momentum` (None: the student embeds both views, no key network),
    `predictor` (an MLP after the student's projections) and implement `instance_losses`.
    """

    momentum: ClassVar[float | None] = None
    predictor: ClassVar[bool] = False

    def __init__(self, ctx: MethodContext, hp: dict[str, Any]):
        super().__init__(ctx, hp)
        dim = int(hp["proj_dim"])
        self.student = ctx.build_backbone()
        self.global_head = GlobalProjectionHead(self.student.bottleneck_channels, dim, dim)
        self.local_head = CropProjectionHead(ctx.num_classes, dim)
        if self.predictor:
            self.global_predictor = mlp(dim, dim, dim)
            self.local_predictor = mlp(dim, dim, dim)
        if self.momentum is not None:
            self.teacher = frozen_copy(self.student)
            self.teacher_global_head = frozen_copy(self.global_head)
            self.teacher_local_head = frozen_copy(self.local_head)

    def instance_losses(self, embeddings: Embeddings) -> tuple[Tensor, Tensor]:
        """(global, local) instance-discrimination losses of one step."""
        raise NotImplementedError

    def embed(self, batch: Batch) -> tuple[Tensor, Embeddings]:
        """`sup` on the labeled weak view and the projections of both unlabeled views."""
        hp, augmenter = self.hp, self.ctx.augmenter
        n, n_u = batch.num_labeled, batch.unlabeled_image.shape[0]
        view_q = augmenter.photometric(batch.unlabeled_image)
        view_k = augmenter.photometric(batch.unlabeled_image)
        _, _, height, width = view_q.shape
        top, left, side = crop_boxes(
            n_u, height, width, int(hp["view_set"]), int(hp["view_size"]), augmenter.generator
        )
        if self.momentum is None:
            output = self.student(torch.cat([batch.labeled_image, view_q, view_k]))
            key_global = self.global_head(output.bottleneck[n + n_u :])
            key_local = self.local_head(output.logits[n + n_u :], top, left, side)
        else:
            output = self.student(torch.cat([batch.labeled_image, view_q]))
            with torch.no_grad():
                key_out = self.teacher(view_k)
                key_global = self.teacher_global_head(key_out.bottleneck)
                key_local = self.teacher_local_head(key_out.logits, top, left, side)
        sup = supervised_loss(output.logits[:n], batch.labeled_mask, float(hp["sup_weight"]))
        query_global = self.global_head(output.bottleneck[n : n + n_u])
        query_local = self.local_head(output.logits[n : n + n_u], top, left, side)
        if self.predictor:
            query_global = self.global_predictor(query_global)
            query_local = self.local_predictor(query_local)
        return sup, Embeddings(query_global, key_global, query_local, key_local)

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        sup, embeddings = self.embed(batch)
        global_loss, local_loss = self.instance_losses(embeddings)
        return {
            "loss": sup + global_loss + local_loss,
            "sup": sup,
            "inst_global": global_loss,
            "inst_local": local_loss,
        }

    def after_step(self, step: int) -> None:
        if self.momentum is None:
            return
        for teacher, student in (
            (self.teacher, self.student),
            (self.teacher_global_head, self.global_head),
            (self.teacher_local_head, self.local_head),
        ):
            ema_update(teacher, student, step, self.momentum, warmup=False)


@register_framework("moco")
class MoCo(InstanceFramework):
    """MoCo v2: InfoNCE against the key and a FIFO queue of earlier keys (module docstring)."""

    display_name = "MoCov2"
    momentum = 0.999
    temperature: ClassVar[float] = 0.2
    neighbours: ClassVar[bool] = False  # kNN-MoCo: the k nearest keys are positives too

    def __init__(self, ctx: MethodContext, hp: dict[str, Any]):
        super().__init__(ctx, hp)
        self.queue = FifoMemory(int(hp["memory_size"]), int(hp["proj_dim"]))

    def queue_positives(self, keys: Tensor) -> Tensor:
        """(B, M) queue entries that are positives of each key: none for MoCo v2."""
        valid = self.queue.valid_mask()
        if not self.neighbours:
            return torch.zeros(keys.shape[0], self.queue.size, dtype=torch.bool,
                               device=keys.device)  # fmt: skip
        return nearest_mask(keys, self.queue.memory, int(self.hp["k"]), valid)

    def global_loss(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Positive: the slice's own key (plus neighbours); negatives: the queue."""
        b = keys.shape[0]
        own = torch.eye(b, dtype=torch.bool, device=keys.device)
        queue_valid = self.queue.valid_mask().expand(b, -1)
        candidates = torch.cat([keys, self.queue.memory.clone()])
        positive = torch.cat([own, self.queue_positives(keys)], dim=1)
        valid = torch.cat([own, queue_valid], dim=1)
        return info_nce(queries, candidates, positive, self.temperature, valid)

    def local_loss(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Per crop: the key crop at the same location is positive, the slice's others negative."""
        slices, crops, _ = keys.shape
        queries, keys = queries.flatten(0, 1), keys.flatten(0, 1)
        valid = same_slice(slices, crops, keys.device)
        positive = torch.eye(len(keys), dtype=torch.bool, device=keys.device)
        if self.neighbours:
            positive |= nearest_mask(keys, keys, int(self.hp["k"]), valid & ~positive)
        return info_nce(queries, keys, positive, self.temperature, valid)

    def instance_losses(self, embeddings: Embeddings) -> tuple[Tensor, Tensor]:
        global_loss = self.global_loss(embeddings.query_global, embeddings.key_global)
        local_loss = self.local_loss(embeddings.query_local, embeddings.key_local)
        self.queue.enqueue(F.normalize(embeddings.key_global.float(), dim=-1))
        return global_loss, local_loss


@register_framework("knn_moco")
class KnnMoCo(MoCo):
    """MoCo v2 with the `k` nearest neighbours of each key as extra positives."""

    display_name = "kNN-MoCo"
    neighbours = True


@register_framework("simclr")
class SimCLR(InstanceFramework):
    """NT-Xent between the student's two views: of the slices, and per slice of the crops."""

    display_name = "SimCLR"
    temperature: ClassVar[float] = 0.5

    def instance_losses(self, embeddings: Embeddings) -> tuple[Tensor, Tensor]:
        global_loss = nt_xent(embeddings.query_global, embeddings.key_global, self.temperature)
        local_loss = torch.stack(
            [
                nt_xent(query, key, self.temperature)
                for query, key in zip(embeddings.query_local, embeddings.key_local, strict=True)
            ]
        ).mean()
        return global_loss, local_loss


@register_framework("byol")
class BYOL(InstanceFramework):
    """The online prediction regresses the target projection, per slice and per crop."""

    display_name = "BYOL"
    momentum = 0.996
    predictor = True

    def instance_losses(self, embeddings: Embeddings) -> tuple[Tensor, Tensor]:
        return (
            byol_loss(embeddings.query_global, embeddings.key_global),
            byol_loss(embeddings.query_local, embeddings.key_local),
        )


@register_framework("isd")
class ISD(InstanceFramework):
    """KL(teacher || student) of similarities to a bank of teacher keys (and, locally, crops)."""

    display_name = "ISD"
    momentum = 0.99
    predictor = True

    def __init__(self, ctx: MethodContext, hp: dict[str, Any]):
        super().__init__(ctx, hp)
        self.banks = RelationalBanks(
            int(hp["memory_size"]), int(hp["view_set"]), int(hp["proj_dim"])
        )

    def instance_losses(self, embeddings: Embeddings) -> tuple[Tensor, Tensor]:
        return self.banks.losses(
            embeddings.query_global, embeddings.key_global, embeddings.query_local,
            embeddings.key_local, float(self.hp["tau_s"]), float(self.hp["tau_t"]), None,
        )  # fmt: skip
