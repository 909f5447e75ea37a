"""MONA's stage 2 pieces: anatomical contrastive reconstruction (paper Sec. 3.2).

- `RepresentationHead`: FPN-style fusion of the decoder maps into an m-dimensional embedding
  per pixel (training only).
- Tailness, `acf_loss`: each sampled query pixel is pulled to its class's mean embedding (the
  positive key) and pushed from keys of other classes drawn from a class-aware memory bank
  (`ClassMemory`), one set per query class, the class of each key chosen by a softmax over
  the class relation graph (cosine similarities of class means) as ReCo does.
  `sample_per_class` picks the queries hard first: pixels whose teacher confidence is below
  delta0.
- Consistency, `equivariance_loss`: KL(T(F(x)) || F(T(x))) + KL(F(T(x)) || T(F(x))) for a
  random affine + photometric transform T (`EquivarianceTransform`), the paper's Eq. 6; or
  `official_equivariance_loss`, what the official code computes instead.
- Diversity, `nearest_neighbour_loss`: an embedding is pulled (squared distance of unit
  vectors, summed over dimensions) to its K nearest neighbours in a FIFO bank of earlier
  embeddings; the bank is a constant, so the gradient reaches the student.
- `unsupervised_ce`: cross-entropy on the teacher's confident pseudo-labels.
- `StrongGeometry`: the deformation and CutMix of a strong view, kept so that a prediction made
  on the weak view can be carried into the strong view's frame (pseudo-labels and features then
  compare pixel by pixel).

Memory is bounded by design: the fused map has `width` channels (not m); the last 1x1 layer
that lifts it to m dimensions is applied only to the sampled pixels and to class means (a
linear layer commutes with the mean), and the banks hold embeddings, never feature maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mona.augment import ALIGN_CORNERS, Augmenter, affine_theta, identity_grid, max_shift_for

# A warped map counts as inside the image where a warped all-ones map stays above this.
_INSIDE = 0.999
_LOG_EPS = 1e-8


# ------------------------------------------------------------------- representation head


class RepresentationHead(nn.Module):
    """FPN over decoder maps -> `width`-channel map -> (per pixel) `embed_dim` embedding.

    Laterals (1x1 conv) bring every decoder map to `width`; a top-down pass upsamples the
    coarser sum and adds the next lateral; a 3x3 conv + BN + ReLU smooths the finest result
    (`hidden`); a linear layer (a 1x1 conv) lifts chosen vectors to `embed_dim` (`embed`).
    """

    def __init__(self, decoder_channels: list[int], width: int, embed_dim: int):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in decoder_channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.embed = nn.Linear(width, embed_dim)

    def hidden(self, decoder_maps: list[Tensor], size: tuple[int, int]) -> Tensor:
        """(B, width, H, W) at the image size `size` from decoder maps (coarsest first)."""
        fused = self.laterals[0](decoder_maps[0])
        for lateral, feature in zip(self.laterals[1:], decoder_maps[1:], strict=True):
            fused = F.interpolate(
                fused, size=feature.shape[-2:], mode="bilinear", align_corners=False
            )
            fused = fused + lateral(feature)
        if tuple(fused.shape[-2:]) != tuple(size):
            fused = F.interpolate(fused, size=size, mode="bilinear", align_corners=False)
        return self.smooth(fused)


def pixel_vectors(maps: Tensor, index: Tensor) -> Tensor:
    """Rows (N, C) of maps (B, C, H, W) at flat pixel indices into (B, H, W)."""
    batch, channels, height, width = maps.shape
    return maps.flatten(2)[index // (height * width), :, index % (height * width)]


def class_means(maps: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mean vector (C, channels) of maps (B, channels, H, W) over each class's pixels.

    labels (B, H, W), -1 = ignore. Also returns the pixel counts (C,); an absent class has
    a zero mean.
    """
    one_hot = F.one_hot(labels.clamp_min(0), num_classes).to(maps.dtype)
    one_hot = one_hot * (labels >= 0).unsqueeze(-1).to(maps.dtype)
    sums = torch.einsum("bchw,bhwk->kc", maps, one_hot)
    counts = one_hot.sum(dim=(0, 1, 2))
    return sums / counts.clamp_min(1).unsqueeze(-1), counts


# ---------------------------------------------------------------------------- sampling


def sample_per_class(
    labels: Tensor,
    num_classes: int,
    per_class: int,
    generator: torch.Generator,
    priority: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Up to `per_class` random pixels of each class, without replacement.

    labels (N,) with -1 = ignore. Pixels where `priority` (N,) is True are taken first (in
    random order), the others fill what is left. Returns (indices, their labels).
    """
    draw = torch.rand(labels.shape, generator=generator, device=generator.device)
    order = draw.to(labels.device)
    if priority is not None:
        order = order + (~priority).to(order.dtype)  # priority in [0, 1), the rest in [1, 2)
    indices, classes = [], []
    for c in range(num_classes):
        candidates = labels == c
        count = min(int(candidates.sum()), per_class)
        if count == 0:
            continue
        keyed = torch.where(candidates, order, torch.full_like(order, 3.0))
        chosen = keyed.topk(count, largest=False).indices
        indices.append(chosen)
        classes.append(torch.full((count,), c, dtype=torch.long, device=labels.device))
    if not indices:
        empty = torch.empty(0, dtype=torch.long, device=labels.device)
        return empty, empty
    return torch.cat(indices), torch.cat(classes)


class ClassMemory(nn.Module):
    """A class-aware bank: one FIFO queue of `size` embeddings per class.

    Buffers `memory` (C, size, dim), `pointer` (C,) and `count` (C,), so checkpoints carry the
    bank. A class absent from the current batch keeps its older keys as negatives.
    """

    def __init__(self, num_classes: int, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"class memory size must be >= 1, got {size}")
        self.size = int(size)
        self.register_buffer("memory", torch.zeros(num_classes, self.size, dim))
        self.register_buffer("pointer", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, vectors: Tensor, labels: Tensor) -> None:
        """Append each row of `vectors` (N, dim) to the queue of its class `labels` (N,)."""
        for c in torch.unique(labels).tolist():
            rows = vectors[labels == c].detach()[-self.size :]
            n = rows.shape[0]
            slots = (self.pointer[c] + torch.arange(n, device=rows.device)) % self.size
            self.memory[c, slots] = rows.to(self.memory.dtype)
            self.pointer[c] = (self.pointer[c] + n) % self.size
            self.count[c] = torch.clamp(self.count[c] + n, max=self.size)

    def entries(self, c: int) -> Tensor:
        """Class `c`'s filled entries, oldest first."""
        count = int(self.count[c])
        if count < self.size:
            return self.memory[c, :count].clone()
        return torch.roll(self.memory[c], -int(self.pointer[c]), dims=0).clone()

    def prototypes(self) -> Tensor:
        """Unit-length mean (C, dim) of each class's filled entries (zero if empty)."""
        filled = torch.arange(self.size, device=self.memory.device) < self.count.unsqueeze(1)
        sums = (self.memory * filled.unsqueeze(-1)).sum(1)
        return F.normalize(sums, dim=-1)


def sample_negatives(
    prototypes: Tensor,
    counts: Tensor,
    keys: int,
    temperature: float,
    bank_size: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Indices (C, keys) into the flattened class bank (C * bank_size): each class's negatives.

    The class of each negative key of query class c is drawn from softmax_p(G[c, p] / t) over
    the classes p != c that have entries, G the cosine similarity of class prototypes (ReCo's
    class relation graph: similar, confusable classes give more negatives); the entry is
    uniform within that class. One set per class, shared by its queries (the paper's "512 key
    embeddings for each mini-batch"). Also returns (C,) whether a class has any negative.
    """
    num_classes = prototypes.shape[0]
    graph = prototypes @ prototypes.T / temperature
    others = ~torch.eye(num_classes, dtype=torch.bool, device=counts.device)
    allowed = (counts > 0).unsqueeze(0) & others
    has_negative = allowed.any(1)
    logits = graph.masked_fill(~allowed, -torch.inf)
    logits[~has_negative] = 0.0  # placeholder rows, never used
    sample_device = generator.device
    classes = torch.multinomial(
        logits.softmax(1).to(sample_device), keys, replacement=True, generator=generator
    ).to(counts.device)
    draw = torch.rand(classes.shape, generator=generator, device=sample_device).to(counts.device)
    position = (draw * counts[classes]).floor().long().clamp_max(bank_size - 1)
    return classes * bank_size + position, has_negative


# ------------------------------------------------------------------------------ losses


def acf_loss(
    queries: Tensor,
    query_labels: Tensor,
    positives: Tensor,
    negatives: Tensor,
    temperature: float,
) -> Tensor:
    """Anatomical contrastive loss (paper Eq. 3), mean over classes of the mean over queries.

    queries (Q, D); query_labels (Q,); positives (C, D) the class-mean keys; negatives
    (C, n, D) the negative keys of each query class. Per query of class c:
    -log(e^{q.r+/t} / (e^{q.r+/t} + sum_n e^{q.r-_n/t})), cosine similarities.
    """
    q = F.normalize(queries.float(), dim=-1)
    positives = F.normalize(positives.float(), dim=-1)
    negatives = F.normalize(negatives.float(), dim=-1)
    per_class = []
    for c in torch.unique(query_labels).tolist():
        rows = q[query_labels == c]
        logits = torch.cat([rows @ positives[c : c + 1].T, rows @ negatives[c].T], dim=1)
        logits = logits / temperature
        per_class.append((logits.logsumexp(1) - logits[:, 0]).mean())
    return torch.stack(per_class).mean()


def nearest_neighbour_loss(
    embeddings: Tensor, memory: Tensor, valid: Tensor, neighbours: int
) -> Tensor:
    """Mean squared distance of each unit embedding to its K nearest valid bank entries.

    embeddings (N, D) carry the gradient; memory (M, D) is a constant; valid (M,). Distance
    of unit vectors summed over D (= 2 - 2 cos). Zero (attached) when the bank is empty.
    """
    e = F.normalize(embeddings.float(), dim=-1)
    m = F.normalize(memory.float().detach(), dim=-1)
    k = min(int(neighbours), m.shape[0])
    with torch.no_grad():
        similarity = (e @ m.T).masked_fill(~valid.unsqueeze(0), -torch.inf)
        index = similarity.topk(k, dim=1).indices  # (N, K)
        weight = valid[index].to(e.dtype)
    squared = ((e.unsqueeze(1) - m[index]) ** 2).sum(-1)
    return (squared * weight).sum() / weight.sum().clamp_min(1.0)


def symmetric_kl(log_p: Tensor, log_q: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid pixels of KL(p || q) + KL(q || p); log-probabilities (B, C, H, W)."""
    per_pixel = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(1)
    mask = valid.to(per_pixel.dtype)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)


def equivariance_loss(
    probs: Tensor, probs_of_transformed: Tensor, transform: EquivarianceTransform
) -> Tensor:
    """Paper Eq. 6: KL(T(F(x)) || F(T(x))) + KL(F(T(x)) || T(F(x))), over pixels inside T.

    probs = F(x), probs_of_transformed = F(T(x)), both softmax maps (B, C, H, W).
    """
    moved = transform.output(probs.float())
    log_moved = moved.clamp_min(_LOG_EPS).log()
    log_direct = probs_of_transformed.float().clamp_min(_LOG_EPS).log()
    return symmetric_kl(log_moved, log_direct, transform.valid)


def official_equivariance_loss(
    target_probs: Tensor,
    logits_of_transformed: Tensor,
    labels: Tensor,
    confidence: Tensor,
    transform: EquivarianceTransform,
    threshold: float,
) -> Tensor:
    """The official MONA code's equivariance term: KL(sg T(F(x)) || F(T(x))), one way.

    target_probs = F(x) (detached here), logits_of_transformed = F(T(x)); labels and
    confidence (B, H, W) in the frame of x. Only pixels of a foreground label whose
    confidence reaches `threshold` count (as the official code's mask, moved by T with zero
    padding); each image's masked mean, then the mean over images.
    """
    target = transform.output(target_probs.detach().float())
    keep = ((labels > 0) & (confidence >= threshold)).unsqueeze(1).float()
    mask = (transform.output(keep)[:, 0] > 0.5) & transform.valid
    log_q = logits_of_transformed.float().log_softmax(1)
    per_pixel = (target * (target.clamp_min(_LOG_EPS).log() - log_q)).sum(1)
    mask = mask.to(per_pixel.dtype)
    per_image = (per_pixel * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) + 1e-7)
    return per_image.mean()


def unsupervised_ce(
    logits: Tensor, pseudo: Tensor, confidence: Tensor, valid: Tensor, threshold: float
) -> Tensor:
    """Cross-entropy on pixels whose pseudo-label confidence reaches `threshold` (paper form).

    Summed over those pixels and divided by all valid pixels, so a batch with few confident
    pixels weighs little. Not ReCo's form: that is `weighted_unsupervised_ce`.
    """
    confident = (valid & (confidence >= threshold)).float()
    ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
    return (ce * confident).sum() / valid.float().sum().clamp_min(1.0)


def weighted_unsupervised_ce(
    logits: Tensor, pseudo: Tensor, confidence: Tensor, valid: Tensor, threshold: float
) -> Tensor:
    """The official code's (ReCo's) form: CE on every valid pixel, each image's scaled by the
    fraction of its valid pixels whose confidence reaches `threshold`; the mean over valid
    pixels whose CE is above zero (the reference's `masked_select(loss > 0)`).
    """
    valid_f = valid.float()
    confident = ((confidence >= threshold) & valid).flatten(1).float().sum(1)
    weight = confident / valid_f.flatten(1).sum(1).clamp_min(1.0)
    ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
    counted = (valid & (ce > 0)).float()
    weighted = weight[:, None, None] * ce * counted
    return weighted.sum() / counted.sum().clamp_min(1.0)


# ------------------------------------------------------------------------- transforms


def _uniform(generator: torch.Generator, size: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, device=generator.device)


@dataclass
class EquivarianceTransform:
    """A random affine map (rotation, zoom, flip, shift, ranges of the augment config) for the
    output and the same map plus photometric noise for the input."""

    theta: Tensor  # (B, 2, 3), output-to-input normalised coordinates
    augmenter: Augmenter
    valid: Tensor  # (B, H, W) pixels whose source lies inside the image

    @classmethod
    def draw(cls, augmenter: Augmenter, images: Tensor) -> EquivarianceTransform:
        cfg, generator = augmenter.config, augmenter.generator
        batch, _, height, width = images.shape
        device = images.device
        angle = (_uniform(generator, batch, -1.0, 1.0) * torch.pi * cfg.rotate_deg / 180.0)
        zoom = _uniform(generator, batch, *cfg.scale)
        flip = _uniform(generator, batch, 0.0, 1.0) < cfg.flip_p
        shift = _uniform(generator, 2 * batch, -1.0, 1.0).view(batch, 2)
        theta = affine_theta(angle, zoom, flip, shift * max_shift_for(zoom), height, width)
        theta = theta.to(device)
        ones = torch.ones(batch, 1, height, width, device=device)
        valid = _affine(ones, theta)[:, 0] > _INSIDE
        return cls(theta, augmenter, valid)

    def output(self, maps: Tensor) -> Tensor:
        """T on a prediction: the affine map only (bilinear; probabilities stay on the simplex)."""
        return _affine(maps, self.theta)

    def input(self, images: Tensor) -> Tensor:
        """T on an image: the affine map, then photometric noise."""
        return self.augmenter.photometric(_affine(images, self.theta))


def _affine(maps: Tensor, theta: Tensor) -> Tensor:
    batch, channels, height, width = maps.shape
    grid = F.affine_grid(theta.float(), [batch, channels, height, width], ALIGN_CORNERS)
    return F.grid_sample(maps, grid.to(maps.dtype), "bilinear", "zeros", ALIGN_CORNERS)


@dataclass
class StrongGeometry:
    """The geometric part of a strong view: a diffeomorphic warp, then CutMix.

    Drawn once per step and shared by every branch that is given a strong view; `apply`
    carries any map of the weak view's frame into the strong view's frame, so weak- and
    strong-view predictions compare pixel by pixel.
    """

    grid: Tensor  # (B, H, W, 2) sampling grid of the warp (identity where its gate is closed)
    source: Tensor  # (B, H, W) batch index each pixel comes from after CutMix
    valid: Tensor  # (B, H, W) pixels whose source lies inside the image

    @classmethod
    def draw(cls, augmenter: Augmenter, images: Tensor) -> StrongGeometry:
        batch, _, height, width = images.shape
        device = images.device
        generator = augmenter.generator
        gate = _uniform(generator, batch, 0.0, 1.0).to(device) < augmenter.config.deform_p
        displacement = augmenter.sample_displacement(batch, height, width, device)
        grid = identity_grid(batch, height, width, device) + displacement * gate.view(-1, 1, 1, 1)
        pixel = torch.arange(batch * height * width, device=device).view(batch, height, width)
        _, mixed = augmenter.cutmix(images, pixel)  # the augmenter's own CutMix, on indices
        source = mixed // (height * width)
        geometry = cls(grid, source, torch.ones(batch, height, width, dtype=torch.bool,
                                                device=device))  # fmt: skip
        ones = torch.ones(batch, 1, height, width, device=device)
        geometry.valid = geometry.apply(ones)[:, 0] > _INSIDE
        return geometry

    def warp(self, maps: Tensor) -> Tensor:
        return F.grid_sample(maps, self.grid.to(maps.dtype), "bilinear", "zeros", ALIGN_CORNERS)

    def mix(self, maps: Tensor) -> Tensor:
        index = self.source.unsqueeze(1).expand(-1, maps.shape[1], -1, -1)
        return torch.gather(maps, 0, index)

    def apply(self, maps: Tensor) -> Tensor:
        """A weak-frame map (B, C, H, W) in the strong view's frame."""
        return self.mix(self.warp(maps))

    def view(self, augmenter: Augmenter, images: Tensor) -> Tensor:
        """The strong view of weak-view images: warp, photometric noise, then CutMix."""
        return self.mix(augmenter.photometric(self.warp(images)))
