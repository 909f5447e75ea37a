"""Bidirectional copy-paste (Bai et al., CVPR 2023), as in its official code
(DeepMed-Lab-ECNU/BCP, `code/ACDC_BCP_train.py`).

Two stages, one network trained in both:
- `pretrain`: labeled images only. The labeled batch is split into halves a and b; one box of
  `box_fraction` (2/3) of each side, at a random position shared by the batch, takes b's pixels
  and labels into a ("copy-paste on labeled data"); loss = (Dice + CE) / 2 over the mix.
- `selftrain`: student and EMA teacher both start from stage 1's network. Labeled halves a, b
  and unlabeled halves ua, ub; with one box M per step,
  `ua` outside the box + `a` inside  ->  targets: teacher pseudo-labels of ua, labels of a;
  `b` outside the box + `ub` inside  ->  targets: labels of b, pseudo-labels of ub.
  Pseudo-labels: argmax of the teacher's softmax on the unmixed unlabeled images, then per image
  and class the largest 8-connected component (`largest_component`). Every region's Dice and
  CE is weighted 1 where its target is a label and `u_weight` (0.5) where it is a pseudo-label;
  loss = (Dice_in + Dice_out + CE_in + CE_out over both mixes) / 2. Teacher: EMA with the
  constant decay `ema_decay` after every step, run in train mode like the student.

Region losses (the code's `mix_loss`): Dice is the 4-class (background included), batch-pooled,
squared-denominator Dice over the region's pixels, smoothing 1e-10; CE is the region's summed
pixel CE divided by its pixel count.

Where this differs from the official script, all by the engine's shared protocol: the lr follows
the config's schedule (the script keeps SGD at 0.01 throughout), each stage starts a fresh
optimizer (the script carries stage 1's momentum), stage 1 hands over its last weights, or its
best validation weights under `protocol.checkpoint: best_val` (the script: best validation), and
stage 1 lasts `train.stage_iterations.pretrain` (the script parses `--pre_iterations 10000` but
pre-trains for `max_iterations`, 30 000). Its unused consistency ramp is left out.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from mona.contrastive import load_backbone
from mona.losses import ema_update, frozen_copy, soft_dice_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register

# 8-connectivity, as skimage.measure.label's default on 2D images
CONNECTIVITY = np.ones((3, 3), dtype=bool)


def copy_paste_mask(height: int, width: int, fraction: float, device: torch.device) -> torch.Tensor:
    """(H, W) long mask, 0 inside one box of int(fraction x side) per side, 1 outside; the
    top-left corner is uniform over 0 .. side - box - 1 (numpy's exclusive randint bound)."""
    box_h, box_w = int(height * fraction), int(width * fraction)
    if box_h < 1 or box_w < 1 or box_h >= height or box_w >= width:
        raise ValueError(f"bcp box_fraction {fraction} gives no box inside {height}x{width}")
    top = int(torch.randint(0, height - box_h, ()))
    left = int(torch.randint(0, width - box_w, ()))
    mask = torch.ones(height, width, dtype=torch.long, device=device)
    mask[top : top + box_h, left : left + box_w] = 0
    return mask


def mix(outside: torch.Tensor, inside: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`outside` where the mask is 1, `inside` in the box (images (B, C, H, W) or labels)."""
    return outside * mask + inside * (1 - mask)


def region_losses(
    logits: torch.Tensor,
    outside_target: torch.Tensor,
    inside_target: torch.Tensor,
    mask: torch.Tensor,
    outside_weight: float,
    inside_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dice, CE) of a mixed image: each region against its own target, weighted."""
    logits = logits.float()
    probs = logits.softmax(1)
    outside = mask.expand(len(logits), -1, -1).to(logits.dtype)
    inside = 1 - outside
    dice = outside_weight * soft_dice_loss(probs, outside_target, 1e-10, keep=outside)
    dice = dice + inside_weight * soft_dice_loss(probs, inside_target, 1e-10, keep=inside)
    ce = 0.0
    for target, region, weight in (
        (outside_target, outside, outside_weight),
        (inside_target, inside, inside_weight),
    ):
        pixel = F.cross_entropy(logits, target.long(), reduction="none")
        ce = ce + weight * (pixel * region).sum() / (region.sum() + 1e-16)
    return dice, ce


def largest_components(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image and foreground class, keep only its largest 8-connected component; pixels
    of dropped components become background. (B, H, W) long in and out."""
    host = labels.cpu().numpy()
    kept = np.zeros_like(host)
    for index, image in enumerate(host):
        for cls in range(1, num_classes):
            components, count = scipy.ndimage.label(image == cls, structure=CONNECTIVITY)
            if count == 0:
                continue
            sizes = np.bincount(components.ravel())[1:]
            kept[index][components == int(np.argmax(sizes)) + 1] = cls
    return torch.from_numpy(kept).to(labels.device)


@register("bcp")
class BidirectionalCopyPaste(Method):
    display_name = "BCP"
    stages = ("pretrain", "selftrain")
    defaults = {
        "box_fraction": 2 / 3,
        "u_weight": 0.5,
        "ema_decay": 0.99,
        "largest_component": True,
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.stage = "selftrain" if ctx.stage == "selftrain" else "pretrain"
        self.net = ctx.build_backbone()
        if self.stage == "selftrain":
            self.teacher = frozen_copy(self.net)

    def start_from(self, previous_stage: dict[str, torch.Tensor]) -> None:
        """Stage 2: stage 1's network into the student and the teacher."""
        if self.stage == "pretrain":
            super().start_from(previous_stage)
            return
        load_backbone(self.net, previous_stage)
        load_backbone(self.teacher, previous_stage)

    def box(self, images: torch.Tensor) -> torch.Tensor:
        _, _, height, width = images.shape
        return copy_paste_mask(height, width, float(self.hp["box_fraction"]), images.device)

    def halves(self, tensor: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tensor[:size], tensor[size : 2 * size]

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if self.stage == "pretrain":
            return self.pretrain_step(batch)
        return self.selftrain_step(batch)

    def pretrain_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        half = batch.num_labeled // 2
        if half < 1:
            raise ValueError("bcp needs at least 2 labeled images per batch to copy-paste")
        image_a, image_b = self.halves(batch.labeled_image, half)
        label_a, label_b = self.halves(batch.labeled_mask, half)
        mask = self.box(image_a)
        logits = self.net(mix(image_a, image_b, mask)).logits
        dice, ce = region_losses(logits, label_a, label_b, mask, 1.0, 1.0)
        return {"loss": (dice + ce) / 2, "dice": dice, "ce": ce}

    @torch.no_grad()
    def pseudo_labels(self, images: torch.Tensor) -> torch.Tensor:
        labels = self.teacher(images).logits.float().softmax(1).argmax(1)
        if self.hp["largest_component"]:
            labels = largest_components(labels, self.ctx.num_classes)
        return labels

    def selftrain_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        half = min(batch.num_labeled, len(batch.unlabeled_image)) // 2
        if half < 1:
            raise ValueError("bcp needs at least 2 labeled and 2 unlabeled images per batch")
        image_a, image_b = self.halves(batch.labeled_image, half)
        label_a, label_b = self.halves(batch.labeled_mask, half)
        u_image_a, u_image_b = self.halves(batch.unlabeled_image, half)
        pseudo_a, pseudo_b = self.pseudo_labels(u_image_a), self.pseudo_labels(u_image_b)
        mask = self.box(image_a)
        u_weight = float(self.hp["u_weight"])
        logits_u = self.net(mix(u_image_a, image_a, mask)).logits
        logits_l = self.net(mix(image_b, u_image_b, mask)).logits
        dice_u, ce_u = region_losses(logits_u, pseudo_a, label_a, mask, u_weight, 1.0)
        dice_l, ce_l = region_losses(logits_l, label_b, pseudo_b, mask, 1.0, u_weight)
        dice, ce = dice_u + dice_l, ce_u + ce_l
        return {"loss": (dice + ce) / 2, "dice": dice, "ce": ce, "mix_u": (dice_u + ce_u) / 2}

    def after_step(self, step: int) -> None:
        if self.stage == "selftrain":
            ema_update(self.teacher, self.net, step, self.hp["ema_decay"], warmup=False)

    def inference_net(self) -> SegmentationNet:
        return self.net
