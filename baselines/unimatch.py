"""UniMatch (Yang et al., CVPR 2023), as in its official medical code
(LiheYoung/UniMatch, `more-scenarios/medical/unimatch.py`).

One network, no EMA teacher, no ramp. Each unlabeled weak view `u_w` is paired with a partner
image; per step:
1. the partners' pseudo-labels and confidences (max softmax) come from a no-grad forward in
   eval mode (running BatchNorm statistics, encoder dropout off);
2. two strong views of `u_w` and of its partner are drawn independently (colour jitter with p
   0.8, Gaussian blur with p 0.5); each view of `u_w` gets its own CutMix box (p 0.5, 2-40 % of
   the area, aspect 0.3-3.3) filled with the same view of the partner;
3. one train-mode forward of [labeled; u_w] with feature perturbation: every encoder map is
   batch-concatenated with a `Dropout2d(0.5)` copy of itself and decoded in one pass; the
   clean `u_w` prediction, detached, is the pseudo-label (argmax) and confidence;
4. one train-mode forward of [s1; s2]; their targets are `u_w`'s labels outside the box and
   the partner's inside, confidences likewise;
5. loss = (sup + (1 - lambda)/2 (L_s1 + L_s2) + lambda L_fp) / 2, lambda = 0.5, sup =
   (CE + Dice) / 2, each unsupervised term over the pixels of confidence >= `conf_thresh`.

Switches where the paper and the medical code differ (README's switch table):
- `unsup_loss: ce` (the paper's Eq.: CE on the confident pixels, divided by all pixels) or
  `dice` (the medical code: 4-class soft Dice over the confident pixels only);
- `fp_levels: all` (the medical UNet: all five encoder maps, the paper being silent on skip
  connections) or `bottleneck` (only the deepest map, the paper's "encoder feature").
Other differences, all tied to the official data loader: partners are a derangement of the same
unlabeled batch (the code draws a third batch of 12 from its own sampler); inputs are not
quantised to 8 bits; the jitter applies brightness then contrast (torchvision: random order,
saturation and hue have no effect on grey images).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from mona.augment import Augmenter
from mona.losses import soft_dice_loss, supervised_loss
from mona.method import Batch, Method, MethodContext
from mona.models import SegmentationNet
from mona.registry import register

UNSUP_LOSSES = ("ce", "dice")
FP_LEVELS = ("all", "bottleneck")


def derangement(count: int, device: torch.device) -> torch.Tensor:
    """A random permutation with no fixed point (each image gets another image as partner)."""
    if count < 2:
        raise ValueError("unimatch needs at least 2 unlabeled images per batch to mix")
    order = torch.randperm(count)
    shift = int(torch.randint(1, count, ()))
    partner = torch.empty(count, dtype=torch.long)
    partner[order] = order.roll(-shift)
    return partner.to(device)


def cutmix_boxes(
    batch: int,
    height: int,
    width: int,
    p: float,
    area: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
) -> torch.Tensor:
    """(B, H, W) float boxes, as the official `obtain_cutmix_box`: with probability p a box of
    area U(area) x H x W (drawn once), then aspect r ~ U(ratio), w = int(sqrt(a / r)),
    h = int(sqrt(a r)) and a top-left corner uniform over the image, redrawn (r and corner)
    until the box fits; else no box."""
    boxes = torch.zeros(batch, height, width)
    for index in range(batch):
        if float(torch.rand(())) >= p:
            continue
        size = float(torch.empty(()).uniform_(*area)) * height * width
        while True:
            aspect = float(torch.empty(()).uniform_(*ratio))
            box_w, box_h = int(math.sqrt(size / aspect)), int(math.sqrt(size * aspect))
            left, top = int(torch.randint(0, width, ())), int(torch.randint(0, height, ()))
            if left + box_w <= width and top + box_h <= height:
                break
        boxes[index, top : top + box_h, left : left + box_w] = 1.0
    return boxes.to(device)


def paste(inside: torch.Tensor, outside: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """`inside` where the (B, H, W) box is 1, `outside` elsewhere (images, labels or maps)."""
    where = box.bool() if inside.dim() == 3 else box.bool().unsqueeze(1)
    return torch.where(where, inside, outside)


def perturbed_logits(
    net: SegmentationNet, images: torch.Tensor, levels: str, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and feature-perturbed logits from one encoder pass and one decoder pass.

    Each perturbed encoder map is `Dropout2d(p)` of the clean one (whole channels per sample,
    kept ones scaled by 1/(1-p)), drawn independently per map; the decoder sees clean and
    perturbed maps stacked on the batch, so its BatchNorm statistics span both.
    """
    features = net.encode(images)
    last = len(features) - 1
    stacked = []
    for level, feature in enumerate(features):
        perturb = levels == "all" or level == last
        noisy = F.dropout2d(feature, p, training=True) if perturb else feature
        stacked.append(torch.cat([feature, noisy]))
    logits = net.head(net.decode(stacked)[-1])
    return logits.chunk(2)


def confident_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    confidence: torch.Tensor,
    threshold: float,
    kind: str,
) -> torch.Tensor:
    """Unsupervised term on the pixels with confidence >= threshold.

    `ce`: pixel CE summed over those pixels and divided by every pixel (the paper, and the
    official natural-image code); `dice`: soft Dice over those pixels only (medical code).
    """
    keep = confidence >= threshold
    if kind == "ce":
        pixel = F.cross_entropy(logits.float(), target, reduction="none")
        return (pixel * keep).sum() / pixel.numel()
    return soft_dice_loss(logits.float().softmax(1), target, keep=keep)


@register("unimatch")
class UniMatch(Method):
    display_name = "UniMatch"
    defaults = {
        "conf_thresh": 0.95,
        "lambda_fp": 0.5,
        "fp_dropout": 0.5,
        "fp_levels": "all",
        "unsup_loss": "ce",
        "jitter_p": 0.8,
        "jitter": [0.5, 1.5],
        "blur_p": 0.5,
        "blur_sigma": [0.1, 2.0],
        "cutmix_p": 0.5,
        "cutmix_area": [0.02, 0.4],
        "cutmix_ratio": [0.3, 1 / 0.3],
    }

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        hp = self.hp
        if hp["unsup_loss"] not in UNSUP_LOSSES:
            raise ValueError(f"methods.unimatch.unsup_loss must be one of {UNSUP_LOSSES}")
        if hp["fp_levels"] not in FP_LEVELS:
            raise ValueError(f"methods.unimatch.fp_levels must be one of {FP_LEVELS}")
        self.net = ctx.build_backbone()
        strong = replace(
            ctx.augmenter.config,
            jitter_p=float(hp["jitter_p"]),
            brightness=tuple(hp["jitter"]),
            contrast=tuple(hp["jitter"]),
            blur_p=float(hp["blur_p"]),
            blur_sigma=tuple(hp["blur_sigma"]),
        )
        self.strong = Augmenter(strong, ctx.augmenter.generator)

    def cutmix_views(
        self, weak: torch.Tensor, partner: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Two strong views of `weak`, each with a box of the same view of its partner."""
        batch, _, height, width = weak.shape
        views, boxes = [], []
        for _ in range(2):
            own = self.strong.photometric(weak)
            other = self.strong.photometric(weak[partner])
            box = cutmix_boxes(
                batch,
                height,
                width,
                float(self.hp["cutmix_p"]),
                tuple(self.hp["cutmix_area"]),
                tuple(self.hp["cutmix_ratio"]),
                weak.device,
            )
            views.append(paste(other, own, box))
            boxes.append(box)
        return views, boxes

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        hp = self.hp
        n, weak = batch.num_labeled, batch.unlabeled_image
        partner = derangement(len(weak), weak.device)
        mode = self.net.training
        self.net.eval()
        with torch.no_grad():
            mix_probs = self.net(weak).logits.float().softmax(1)[partner]
        self.net.train(mode)
        mix_conf, mix_label = mix_probs.max(1)
        views, boxes = self.cutmix_views(weak, partner)

        clean, noisy = perturbed_logits(
            self.net,
            torch.cat([batch.labeled_image, weak]),
            hp["fp_levels"],
            float(hp["fp_dropout"]),
        )
        sup = supervised_loss(clean[:n], batch.labeled_mask)
        strong_logits = self.net(torch.cat(views)).logits.chunk(2)
        conf, label = clean[n:].detach().float().softmax(1).max(1)

        threshold, kind = float(hp["conf_thresh"]), hp["unsup_loss"]
        strong_losses = [
            confident_loss(
                logits, paste(mix_label, label, box), paste(mix_conf, conf, box), threshold, kind
            )
            for logits, box in zip(strong_logits, boxes, strict=True)
        ]
        fp = confident_loss(noisy[n:], label, conf, threshold, kind)
        lam = float(hp["lambda_fp"])
        unsup = (1 - lam) / 2 * (strong_losses[0] + strong_losses[1]) + lam * fp
        return {
            "loss": (sup + unsup) / 2,
            "sup": sup,
            "strong": (strong_losses[0] + strong_losses[1]) / 2,
            "fp": fp,
            "confident": (conf >= threshold).float().mean(),
        }

    def inference_net(self) -> SegmentationNet:
        return self.net
