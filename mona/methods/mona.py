"""MONA (You et al., "Mine yOur owN Anatomy"): GLCon pre-training, then anatomical contrastive
reconstruction fine-tuning. Every component is a hyperparameter, so Tables 2-3 and Figures 7-9
are runs of this one method (`mona~tailness=false`, `mona~lambda1=0.1`, ...).

Stage "pretrain" (any stage other than "finetune", so a one-stage benchmark measures it): the
framework named by `pretrain_framework` (`mona.methods.glcon`; GLCon by default).

Stage "finetune" starts from stage 1's student: its weights go into both the student and the
EMA teacher (constant decay `ema`, no warm-up, as the paper and the official code). Per step,
with `sup` on the labeled weak view:
- Views of the unlabeled slices: the engine's weak view, or a strong view (weak + a
  diffeomorphic warp, contrast/brightness jitter, blur and CutMix), for the student and the
  teacher as `student_aug` / `teacher_aug` say (paper default weak / strong, Table 3). One warp
  and one CutMix are drawn per step and shared by the strong branches (photometric noise is
  drawn per branch); a weak branch's predictions and features are carried into the strong
  frame with that geometry, so pseudo-labels and features compare pixel by pixel. With two
  weak views both see the same image.
- `unsup` (lambda3): cross-entropy on the teacher's pseudo-labels. `unsup_mode: paper`: only
  pixels whose confidence reaches `delta0` count, summed and divided by all valid pixels.
  `unsup_mode: official` (the official code, after ReCo): every valid pixel counts, each
  image's CE scaled by the fraction of its pixels that reach `delta0`, averaged over pixels.
  Early in training few pixels reach 0.97, so the paper form is near zero where the official
  one trains on every pseudo-label at a small weight.
- `sup`: `sup_weight` x (CE + Dice), in both stages. The paper says "equal combination of dice
  loss and cross-entropy loss"; the official code weighs the sum 1 (default), SSL4MIS 0.5.
- Tailness (`tailness`, lambda1): the ACF loss on the representation head's embeddings
  (`embed_dim`). Labels: ground truth on labeled pixels, teacher pseudo-labels elsewhere (all
  of them: the paper splits pseudo-labels into easy and hard, it does not drop any).
  Per class, `queries` student pixels, hard first (teacher confidence in the pixel's label
  below `delta0`, then easy ones); positive key = the class's mean student embedding
  (detached, as ReCo); per query class `keys` negative keys, shared by its queries (the
  paper's "512 key embeddings for each mini-batch"), from a class-aware bank of teacher
  embeddings, `class_memory` per class, fed each step with up to `keys` random pixels of each
  class present; the class of each negative is drawn by the class relation graph; temperature
  `temperature`.
- Consistency (`consistency`, lambda2): the equivariance loss under a random affine +
  photometric transform, on labeled and unlabeled student inputs (one extra student pass).
  `eqv_mode: paper` is Eq. 6 as printed: KL both ways, gradient through both predictions,
  every pixel. `eqv_mode: official` is what the official code computes: KL(sg T(F(x)) ||
  F(T(x))) one way, on pixels of a foreground label (ground truth, or a teacher pseudo-label
  of confidence >= `eqv_confidence`, 0.7 there), unlabeled images taken in their
  pseudo-labels' frame (with a weak student and strong teacher, one more student pass without
  gradient). Eq. 6's every-pixel form is minimised by predicting background everywhere,
  which short runs on LiTS fall into (the paper reports "object collapsing" for consistency
  alone); the official form does not reward it.
- Diversity (`diversity`, lambda4): each image's mean student embedding is pulled to its
  `nn_k` nearest neighbours among the teacher's embeddings of earlier images (FIFO bank of
  `nn_memory`), with gradient to the student.
- Total: sup + lambda1 contrast + lambda2 eqv + lambda3 unsup + lambda4 nn. A switched-off
  component is not computed at all; with all three off ("Vanilla" of Table 2) stage 2 is
  sup + lambda3 unsup from GLCon's weights.

Where the paper is silent: queries are counted per class (ReCo); the class bank holds 2048
keys per class; the nearest-neighbour bank holds 36 image embeddings, the size of stage 1's
bank ("an equally sized pool"); the diversity term works on per-image embeddings (the official
code kept whole feature maps); the representation head fuses to `rep_width` channels before
the last 1x1 layer lifts sampled pixels to `embed_dim`. Stage 2's K is named `nn_k` (not `K`)
so that run folders `mona~k=..` and `mona~nn_k=..` stay distinct on case-insensitive disks.

Memory: at 256 x 256, batch 3 + 3, m = 512 and widths 16-256, a stage-2 step keeps about
1.9 GiB of tensors for backward and peaks about 2.6 GiB above the process's baseline (measured
on CPU; stage 1: 1.5 and 2.7 GiB), well inside a 12 GB GPU; nothing in it grows with m but
the sampled pixels and the banks.

Not copied from the official code (known defects): stage 2 really starts from stage 1's weights
(`start_from`); the nearest-neighbour term passes gradient to the student; banks hold
embeddings, not feature maps; queries are sampled hard first, not uniformly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mona.contrastive import load_backbone
from mona.losses import ema_update, frozen_copy, supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.methods.anatomy import (
    ClassMemory,
    EquivarianceTransform,
    RepresentationHead,
    StrongGeometry,
    acf_loss,
    class_means,
    equivariance_loss,
    nearest_neighbour_loss,
    official_equivariance_loss,
    pixel_vectors,
    sample_negatives,
    sample_per_class,
    unsupervised_ce,
    weighted_unsupervised_ce,
)
from mona.methods.glcon import FifoMemory, get_framework
from mona.models import SegmentationNet
from mona.registry import register

PRETRAIN_DEFAULTS: dict[str, Any] = {
    "pretrain_framework": "glcon",
    "k": 5,
    "view_set": 36,
    "view_size": 64,
    "memory_size": 36,
    "tau_s": 0.1,
    "tau_t": 0.01,
    "proj_dim": 512,
    "sup_weight": 1.0,
}
FINETUNE_DEFAULTS: dict[str, Any] = {
    "tailness": True,
    "consistency": True,
    "diversity": True,
    "student_aug": "weak",
    "teacher_aug": "strong",
    "lambda1": 0.01,
    "lambda2": 1.0,
    "lambda3": 1.0,
    "lambda4": 1.0,
    "delta0": 0.97,
    "unsup_mode": "paper",
    "eqv_mode": "paper",
    "eqv_confidence": 0.7,
    "nn_k": 5,
    "embed_dim": 512,
    "temperature": 0.5,
    "queries": 256,
    "keys": 512,
    "class_memory": 2048,
    "nn_memory": 36,
    "rep_width": 64,
}
VIEWS = ("weak", "strong")
EQV_MODES = ("paper", "official")
UNSUP_MODES = ("paper", "official")


@register("mona")
class Mona(Method):
    display_name = "MONA"
    stages = ("pretrain", "finetune")
    defaults: ClassVar[dict[str, Any]] = {**PRETRAIN_DEFAULTS, "ema": 0.99, **FINETUNE_DEFAULTS}
    # Keys that only stage 2 reads: variants differing only in these share stage 1's run.
    finetune_only: ClassVar[frozenset[str]] = frozenset(FINETUNE_DEFAULTS)

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.check_hparams(self.hp)
        self.stage = "finetune" if ctx.stage == "finetune" else "pretrain"
        if self.stage == "pretrain":
            self.pretrain = get_framework(self.hp["pretrain_framework"])(ctx, self.hp)
            return
        hp = self.hp
        self.student = ctx.build_backbone()
        self.teacher = frozen_copy(self.student)
        if hp["tailness"] or hp["diversity"]:
            width, dim = int(hp["rep_width"]), int(hp["embed_dim"])
            self.rep_head = RepresentationHead(self.student.decoder_channels, width, dim)
            self.teacher_rep_head = frozen_copy(self.rep_head)
        if hp["tailness"]:
            self.class_memory = ClassMemory(ctx.num_classes, int(hp["class_memory"]), dim)
        if hp["diversity"]:
            self.nn_memory = FifoMemory(int(hp["nn_memory"]), dim)

    @staticmethod
    def check_hparams(hp: dict[str, Any]) -> None:
        problems = []
        for key in ("student_aug", "teacher_aug"):
            if hp[key] not in VIEWS:
                problems.append(f"mona {key} must be 'weak' or 'strong', not {hp[key]!r}")
        if hp["unsup_mode"] not in UNSUP_MODES:
            problems.append(
                f"mona unsup_mode must be one of {UNSUP_MODES}, not {hp['unsup_mode']!r}"
            )
        if hp["eqv_mode"] not in EQV_MODES:
            problems.append(f"mona eqv_mode must be one of {EQV_MODES}, not {hp['eqv_mode']!r}")
        for key in ("tailness", "consistency", "diversity"):
            if not isinstance(hp[key], bool):
                problems.append(f"mona {key} must be true or false, not {hp[key]!r}")
        get_framework(hp["pretrain_framework"])  # raises on an unknown name
        if problems:
            raise ValueError("; ".join(problems))

    # stage hand-over -----------------------------------------------------------------------
    def start_from(self, previous_stage: dict[str, Tensor]) -> None:
        """Stage 2: stage 1's student backbone into both the student and the teacher."""
        if self.stage == "pretrain":
            super().start_from(previous_stage)
            return
        load_backbone(self.student, previous_stage, prefix="pretrain.student.")
        load_backbone(self.teacher, previous_stage, prefix="pretrain.student.")

    def inference_net(self) -> SegmentationNet:
        return self.pretrain.student if self.stage == "pretrain" else self.student

    def after_step(self, step: int) -> None:
        if self.stage == "pretrain":
            self.pretrain.after_step(step)
            return
        decay = float(self.hp["ema"])
        ema_update(self.teacher, self.student, step, decay, warmup=False)  # constant, as the paper
        if hasattr(self, "rep_head"):
            ema_update(self.teacher_rep_head, self.rep_head, step, decay, warmup=False)

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if self.stage == "pretrain":
            return self.pretrain.train_step(batch, step)
        return self.finetune_step(batch)

    # stage 2 ---------------------------------------------------------------------------------
    def finetune_step(self, batch: Batch) -> dict[str, Tensor]:
        hp, augmenter = self.hp, self.ctx.augmenter
        n = batch.num_labeled
        weak_u = batch.unlabeled_image
        strong_student = hp["student_aug"] == "strong"
        strong_teacher = hp["teacher_aug"] == "strong"
        geometry = (
            StrongGeometry.draw(augmenter, weak_u) if strong_student or strong_teacher else None
        )
        student_u = geometry.view(augmenter, weak_u) if strong_student else weak_u
        teacher_u = geometry.view(augmenter, weak_u) if strong_teacher else weak_u

        def common(maps: Tensor, strong: bool) -> Tensor:
            """Unlabeled maps in the frame where both branches' pixels correspond."""
            return maps if geometry is None or strong else geometry.apply(maps)

        student_in = torch.cat([batch.labeled_image, student_u])
        output = self.student(student_in)
        with torch.no_grad():
            teacher_out = self.teacher(torch.cat([batch.labeled_image, teacher_u]))
            teacher_probs = teacher_out.logits.float().softmax(1)
            probs_u = common(teacher_probs[n:], strong_teacher)
            confidence_u, pseudo_u = probs_u.max(1)
        valid_u = (
            geometry.valid
            if geometry is not None
            else torch.ones_like(pseudo_u, dtype=torch.bool)
        )

        sup = supervised_loss(output.logits[:n], batch.labeled_mask, float(hp["sup_weight"]))
        unsup_loss = unsupervised_ce if hp["unsup_mode"] == "paper" else weighted_unsupervised_ce
        unsup = unsup_loss(
            common(output.logits[n:], strong_student), pseudo_u, confidence_u, valid_u,
            float(hp["delta0"]),
        )  # fmt: skip
        losses = {"sup": sup, "unsup": unsup}
        total = sup + hp["lambda3"] * unsup

        if hp["tailness"] or hp["diversity"]:
            size = tuple(student_in.shape[-2:])
            hidden_s = self.rep_head.hidden(output.decoder, size)
            with torch.no_grad():
                hidden_t = self.teacher_rep_head.hidden(teacher_out.decoder, size)
        if hp["tailness"]:
            labels = torch.cat([batch.labeled_mask, torch.where(valid_u, pseudo_u, -1)])
            confidence_l = teacher_probs[:n].gather(1, batch.labeled_mask.unsqueeze(1))[:, 0]
            confidence = torch.cat([confidence_l, confidence_u])
            student_maps = torch.cat([hidden_s[:n], common(hidden_s[n:], strong_student)])
            teacher_maps = torch.cat([hidden_t[:n], common(hidden_t[n:], strong_teacher)])
            contrast = self.anatomical_contrast(student_maps, teacher_maps, labels, confidence)
            losses["contrast"] = contrast
            total = total + hp["lambda1"] * contrast
        if hp["consistency"] and hp["eqv_mode"] == "paper":
            transform = EquivarianceTransform.draw(augmenter, student_in)
            moved_logits = self.student(transform.input(student_in)).logits
            eqv = equivariance_loss(
                output.logits.float().softmax(1), moved_logits.float().softmax(1), transform
            )
            losses["eqv"] = eqv
            total = total + hp["lambda2"] * eqv
        elif hp["consistency"]:
            # official code: unlabeled images in the frame of their pseudo-labels
            if geometry is None or strong_student:
                frame_u, target_u = student_u, output.logits[n:].detach()
            else:
                frame_u = teacher_u
                with torch.no_grad():
                    target_u = self.student(teacher_u).logits
            eqv_in = torch.cat([batch.labeled_image, frame_u])
            transform = EquivarianceTransform.draw(augmenter, eqv_in)
            moved_logits = self.student(transform.input(eqv_in)).logits
            certain = torch.ones(batch.labeled_mask.shape, device=confidence_u.device)
            eqv = official_equivariance_loss(
                torch.cat([output.logits[:n].detach(), target_u]).float().softmax(1),
                moved_logits,
                torch.cat([batch.labeled_mask, torch.where(valid_u, pseudo_u, 0)]),
                torch.cat([certain, confidence_u]),
                transform,
                float(hp["eqv_confidence"]),
            )
            losses["eqv"] = eqv
            total = total + hp["lambda2"] * eqv
        if hp["diversity"]:
            image_s = self.rep_head.embed(hidden_s.mean(dim=(2, 3)))
            nn_loss = nearest_neighbour_loss(
                image_s, self.nn_memory.memory.clone(), self.nn_memory.valid_mask(),
                int(hp["nn_k"]),
            )  # fmt: skip
            with torch.no_grad():
                image_t = self.teacher_rep_head.embed(hidden_t.mean(dim=(2, 3)))
                self.nn_memory.enqueue(F.normalize(image_t.float(), dim=-1))
            losses["nn"] = nn_loss
            total = total + hp["lambda4"] * nn_loss
        return {"loss": total, **losses}

    def anatomical_contrast(
        self, student_maps: Tensor, teacher_maps: Tensor, labels: Tensor, confidence: Tensor
    ) -> Tensor:
        """ACF loss from fused maps (B, width, H, W) of student and teacher; labels -1 = skip."""
        hp = self.hp
        generator = self.ctx.augmenter.generator
        num_classes = self.ctx.num_classes
        flat_labels = labels.flatten()
        hard = confidence.flatten() < float(hp["delta0"])
        index, query_labels = sample_per_class(
            flat_labels, num_classes, int(hp["queries"]), generator, priority=hard
        )
        with torch.no_grad():
            key_index, key_labels = sample_per_class(
                flat_labels, num_classes, int(hp["keys"]), generator
            )
            keys = self.teacher_rep_head.embed(pixel_vectors(teacher_maps, key_index))
            self.class_memory.enqueue(F.normalize(keys.float(), dim=-1), key_labels)
            means, _ = class_means(student_maps.detach(), labels, num_classes)
            positives = self.rep_head.embed(means).detach()
            negative_index, has_negative = sample_negatives(
                self.class_memory.prototypes(), self.class_memory.count, int(hp["keys"]),
                float(hp["temperature"]), self.class_memory.size, generator,
            )  # fmt: skip
            negatives = self.class_memory.memory.flatten(0, 1)[negative_index]
        usable = has_negative[query_labels]
        if not bool(usable.any()):
            return student_maps.sum() * 0.0
        queries = self.rep_head.embed(pixel_vectors(student_maps, index[usable]))
        return acf_loss(
            queries, query_labels[usable], positives, negatives, float(hp["temperature"])
        )
