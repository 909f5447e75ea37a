"""Batched, seeded weak and strong augmentations that run on the tensors' own device.

Every op transforms a whole batch at once with torch ops, draws all its randomness from one
`torch.Generator` (same seed -> same output), and never reads a tensor value back to the host,
so a training step on a GPU is not stalled by augmentation. Geometric ops move image and mask
with one sampling grid per sample: bilinear for the image, nearest for the mask, so a mask can
only hold labels it held before (or background, where the view leaves the image).

Weak view (paper): rotation, random crop/rescale, horizontal flip.
Strong view (paper and its official code): weak geometry, colour jitter (contrast and
brightness), Gaussian blur, CutMix of half the area and a random diffeomorphic warp.
Methods that need other combinations compose the public building blocks.

For the fastest GPU runs pass a generator living on the data's device
(`torch.Generator(device="cuda")`); with a CPU generator the random parameters are drawn on the
CPU (the same on every machine) and copied over, which costs a small host-to-device copy per op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ALIGN_CORNERS = False  # one convention for every grid, so an identity grid hits pixel centres
WEAK_VIEWS = ("paper", "ssl4mis")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges and probabilities of every op; defaults follow the official code where stated."""

    # "paper": continuous rotation, crop/rescale, horizontal flip (bilinear); "ssl4mis": the
    # SSL4MIS RandomGenerator (`Augmenter.ssl4mis_weak`).
    weak: str = "paper"
    rotate_deg: float = 20.0
    scale: tuple[float, float] = (0.8, 1.2)
    flip_p: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: tuple[float, float] = (0.75, 1.25)
    jitter_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.15, 1.15)
    blur_p: float = 0.5
    cutmix_p: float = 0.5
    deform_p: float = 0.5
    deform_grid: int = 8
    deform_strength: float = 0.25  # velocity std, in units of the control-point spacing
    deform_steps: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.weak not in WEAK_VIEWS:
            problems.append(f"weak must be one of {WEAK_VIEWS}, got {self.weak!r}")
        for name in ("flip_p", "jitter_p", "blur_p", "cutmix_p", "deform_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("scale", "contrast", "brightness", "blur_sigma"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                problems.append(f"{name} must be a range 0 < low <= high, got {(low, high)}")
        if self.rotate_deg < 0:
            problems.append(f"rotate_deg must be >= 0, got {self.rotate_deg}")
        if self.deform_grid < 1 or self.deform_steps < 0 or self.deform_strength < 0:
            problems.append("deform_grid must be >= 1, deform_steps and deform_strength >= 0")
        if problems:
            raise ValueError("; ".join(problems))


def identity_grid(batch: int, height: int, width: int, device: torch.device) -> Tensor:
    """Sampling grid (B, H, W, 2) in normalised (x, y) coordinates that reproduces the input."""
    theta = torch.eye(2, 3, device=device).expand(batch, 2, 3)
    return F.affine_grid(theta, [batch, 1, height, width], align_corners=ALIGN_CORNERS)


def warp(
    image: Tensor, mask: Tensor | None, grid: Tensor, image_mode: str = "bilinear"
) -> tuple[Tensor, Tensor | None]:
    """Resample image (`image_mode`) and mask (nearest) through the same grid; outside is 0.

    Nearest sampling of the mask as float returns either one of its own values or the zero
    padding, so no label outside the original set can appear.
    """
    warped = F.grid_sample(
        image, grid.to(image.dtype), mode=image_mode, padding_mode="zeros",
        align_corners=ALIGN_CORNERS,
    )
    if mask is None:
        return warped, None
    _check_mask(image, mask)
    warped_mask = F.grid_sample(
        mask.unsqueeze(1).float(), grid.float(), mode="nearest", padding_mode="zeros",
        align_corners=ALIGN_CORNERS,
    )
    return warped, warped_mask.squeeze(1).round().to(mask.dtype)


def _check_mask(image: Tensor, mask: Tensor) -> None:
    batch, _, height, width = image.shape
    if mask.shape != (batch, height, width):
        raise ValueError(
            f"mask must be (B, H, W) = {(batch, height, width)} for an image of shape "
            f"{tuple(image.shape)}, got {tuple(mask.shape)}"
        )


def max_shift_for(zoom: Tensor) -> Tensor:
    """Largest crop offset (B, 1), normalised units, keeping the window inside the frame."""
    return (1.0 - 1.0 / zoom).abs().unsqueeze(-1)


def affine_theta(
    angle: Tensor, zoom: Tensor, flip: Tensor, shift: Tensor, height: int, width: int
) -> Tensor:
    """Output-to-input affine maps (B, 2, 3) for F.affine_grid.

    angle (B,) radians, zoom (B,) > 1 enlarges, flip (B,) bool mirrors left-right, shift
    (B, 2) normalised (x, y) offset of the sampled window. The rotation is done in pixel
    units (normalised x and y span W and H pixels), so right angles survive on non-square
    images.
    """
    batch = angle.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width
    sign = torch.where(flip, -1.0, 1.0)
    linear = torch.stack(
        [
            torch.stack([cos * sign, -sin * aspect], dim=-1),
            torch.stack([sin * sign / aspect, cos], dim=-1),
        ],
        dim=-2,
    ) / zoom.view(batch, 1, 1)
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)


def affine_warp(
    image: Tensor, mask: Tensor | None, theta: Tensor, image_mode: str = "bilinear"
) -> tuple[Tensor, Tensor | None]:
    """Apply per-sample affine maps theta (B, 2, 3) from output to input normalised coords."""
    batch, _, height, width = image.shape
    grid = F.affine_grid(
        theta.float(), [batch, 1, height, width], align_corners=ALIGN_CORNERS
    )
    return warp(image, mask, grid, image_mode)


def integrate_velocity(velocity: Tensor, steps: int) -> Tensor:
    """Displacement (B, H, W, 2) of exp(velocity) by scaling and squaring.

    velocity: (B, 2, H, W) stationary field in normalised (x, y) units. The field is divided by
    2**steps (small enough to be invertible) and composed with itself `steps` times:
    u <- u + u o (id + u). Composition of invertible maps stays invertible, so the result
    does not fold for smooth fields.
    """
    batch, _, height, width = velocity.shape
    base = identity_grid(batch, height, width, velocity.device).to(velocity.dtype)
    displacement = velocity / (2**steps)
    for _ in range(steps):
        resampled = F.grid_sample(
            displacement, base + displacement.permute(0, 2, 3, 1), mode="bilinear",
            padding_mode="border", align_corners=ALIGN_CORNERS,
        )
        displacement = displacement + resampled
    return displacement.permute(0, 2, 3, 1)


def gaussian_blur(image: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Blur each sample with its own sigma (B,), separable kernel, reflect padding.

    All samples share one kernel width (from max_sigma) so the whole batch is one grouped
    convolution per axis.
    """
    batch, channels, height, width = image.shape
    radius = max(1, min(math.ceil(3.0 * max_sigma), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1).float()) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(image.dtype)
    weights = weights.repeat_interleave(channels, dim=0)  # (B*C, K)
    flat = image.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, weights.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    flat = F.conv2d(flat, weights.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


class Augmenter:
    """Weak and strong views of a batch, with every random draw taken from `generator`.

    Each op draws a fixed number of values whatever the gates decide, so the random stream,
    and hence every later view, depends only on the seed and the batch shape. To replay the
    same geometry on another tensor (e.g. logits), save `generator.get_state()` before the
    call and restore it before replaying.
    """

    def __init__(self, config: AugmentConfig, generator: torch.Generator):
        self.config = config
        self.generator = generator

    # random draws -------------------------------------------------------------------------
    def _uniform(self, size: int, low: float, high: float, device: torch.device) -> Tensor:
        draw = torch.rand(size, generator=self.generator, device=self.generator.device)
        return (low + (high - low) * draw).to(device)

    def _bernoulli(self, size: int, p: float, device: torch.device) -> Tensor:
        return self._uniform(size, 0.0, 1.0, device) < p

    # views --------------------------------------------------------------------------------
    def weak(self, image: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Student view: rotation, crop/rescale and horizontal flip (or SSL4MIS's, `weak`)."""
        if self.config.weak == "ssl4mis":
            return self.ssl4mis_weak(image, mask)
        return self.geometric(image, mask)

    def ssl4mis_weak(
        self, image: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """SSL4MIS's RandomGenerator, per sample: with p 0.5 np.rot90 by k in 0..3 then a
        flip on a random axis; else with p 0.5 (0.25 overall) a rotation by an integer angle
        in [-20, 20) degrees; else nothing. Nearest sampling for the image too (its order 0),
        zero fill, no scaling. A flip on the first axis is a half turn and a left-right flip.
        """
        batch, _, height, width = image.shape
        device = image.device
        rot_flip = self._bernoulli(batch, 0.5, device)
        rotate = self._bernoulli(batch, 0.5, device) & ~rot_flip
        quarter_turns = (self._uniform(batch, 0.0, 4.0, device)).floor().clamp(max=3)
        first_axis = self._bernoulli(batch, 0.5, device)
        degrees = (self._uniform(batch, -20.0, 20.0, device)).floor().clamp(max=19)
        turn = quarter_turns * (math.pi / 2) + torch.where(first_axis, math.pi, 0.0)
        angle = torch.where(rot_flip, turn, torch.where(rotate, torch.deg2rad(degrees), 0.0))
        ones = torch.ones(batch, device=device)
        theta = affine_theta(
            angle, ones, rot_flip, torch.zeros(batch, 2, device=device), height, width
        )
        return affine_warp(image, mask, theta, image_mode="nearest")

    def strong(
        self, image: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher view: weak geometry, diffeomorphic warp, jitter and blur, then CutMix.

        The affine map and the warp are composed into one sampling grid, so the image is
        interpolated once (less blur, and the mask stays as close to it as a single warp
        allows). CutMix comes last so the pasted box keeps straight edges.
        """
        batch, _, height, width = image.shape
        theta = self._geometric_theta(image)
        displacement = self._gated_displacement(image)
        grid = identity_grid(batch, height, width, image.device) + displacement
        grid = torch.einsum("bhwj,bij->bhwi", grid, theta[:, :, :2]) + theta[:, None, None, :, 2]
        image, mask = warp(image, mask, grid)
        image = self.photometric(image)
        return self.cutmix(image, mask)

    # building blocks ----------------------------------------------------------------------
    def geometric(
        self, image: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Rotation, crop/rescale and flip composed into one affine grid per sample.

        A zoom factor s > 1 crops a window 1/s of the image and enlarges it; s < 1 shrinks the
        image inside a zero border. The window is shifted at random as far as it can go
        without leaving (s > 1) or overflowing (s < 1) the frame.
        """
        return affine_warp(image, mask, self._geometric_theta(image))

    def _geometric_theta(self, image: Tensor) -> Tensor:
        cfg = self.config
        batch, _, height, width = image.shape
        device = image.device
        angle = self._uniform(batch, -1.0, 1.0, device) * math.radians(cfg.rotate_deg)
        zoom = self._uniform(batch, cfg.scale[0], cfg.scale[1], device)
        flip = self._bernoulli(batch, cfg.flip_p, device)
        shift = self._uniform(2 * batch, -1.0, 1.0, device).view(batch, 2)
        return affine_theta(angle, zoom, flip, shift * max_shift_for(zoom), height, width)

    def photometric(self, image: Tensor) -> Tensor:
        """Colour jitter (brightness then contrast, gated together) then Gaussian blur.

        Touches only the image and clamps to [0, 1] after each op, as torchvision does.
        Contrast blends each sample with its own mean intensity.
        """
        cfg = self.config
        batch = image.shape[0]
        device = image.device
        shape = (batch, 1, 1, 1)
        jitter = self._bernoulli(batch, cfg.jitter_p, device).view(shape)
        brightness = self._uniform(batch, *cfg.brightness, device).view(shape)
        contrast = self._uniform(batch, *cfg.contrast, device).view(shape)
        blur = self._bernoulli(batch, cfg.blur_p, device).view(shape)
        sigma = self._uniform(batch, *cfg.blur_sigma, device)

        jittered = (image * brightness.to(image.dtype)).clamp(0.0, 1.0)
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((jittered - mean) * contrast.to(image.dtype) + mean).clamp(0.0, 1.0)
        image = torch.where(jitter, jittered, image)
        blurred = gaussian_blur(image, sigma, max_sigma=cfg.blur_sigma[1]).clamp(0.0, 1.0)
        return torch.where(blur, blurred, image)

    def cutmix(
        self, image: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Paste a random box of half the image area from a permuted partner of the batch.

        The box keeps the image's aspect ratio; image and mask receive the same box. A sample
        drawn as its own partner, or not selected by the gate, is unchanged.
        """
        batch, _, height, width = image.shape
        device = image.device
        gate = self._bernoulli(batch, self.config.cutmix_p, device)
        partner = torch.randperm(
            batch, generator=self.generator, device=self.generator.device
        ).to(device)
        box_h = min(height, round(height * math.sqrt(0.5)))
        box_w = min(width, round(width * math.sqrt(0.5)))
        top = (self._uniform(batch, 0.0, 1.0, device) * (height - box_h + 1)).floor()
        left = (self._uniform(batch, 0.0, 1.0, device) * (width - box_w + 1)).floor()
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        top, left = top.view(batch, 1, 1), left.view(batch, 1, 1)
        inside = (
            (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        )
        inside = inside & gate.view(batch, 1, 1)
        mixed = torch.where(inside.unsqueeze(1), image[partner], image)
        if mask is None:
            return mixed, None
        _check_mask(image, mask)
        return mixed, torch.where(inside, mask[partner], mask)

    def sample_displacement(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> Tensor:
        """Random diffeomorphic displacement (B, H, W, 2), normalised units, ungated.

        Velocity: Gaussian noise on a coarse grid of about H/deform_grid x W/deform_grid
        points, upsampled bicubically (a smooth field), then integrated by scaling and
        squaring. Its std is deform_strength control-point spacings (deform_strength *
        deform_grid pixels), not a fraction of the image: the local stretch, and so whether
        the discrete warp folds, then does not depend on the resolution. The default 0.25
        moves pixels about 2 px on average at any size, changes local area by up to a few
        fold, and keeps the Jacobian determinant positive (it folds from about 0.5 up).
        """
        cfg = self.config
        grid_h = max(2, math.ceil(height / cfg.deform_grid))
        grid_w = max(2, math.ceil(width / cfg.deform_grid))
        noise = torch.randn(
            batch, 2, grid_h, grid_w, generator=self.generator, device=self.generator.device
        ).to(device)
        # std in pixels = strength x control-point spacing, converted to normalised x and y
        pixels = cfg.deform_strength * cfg.deform_grid
        coarse = torch.stack(
            [noise[:, 0] * (pixels * 2.0 / width), noise[:, 1] * (pixels * 2.0 / height)], dim=1
        )
        velocity = F.interpolate(
            coarse, size=(height, width), mode="bicubic", align_corners=True
        )
        return integrate_velocity(velocity, cfg.deform_steps)

    def deform(
        self, image: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Random diffeomorphic warp of image and mask, applied to each sample with deform_p."""
        batch, _, height, width = image.shape
        grid = identity_grid(batch, height, width, image.device)
        return warp(image, mask, grid + self._gated_displacement(image))

    def _gated_displacement(self, image: Tensor) -> Tensor:
        """Displacement of each sample, zero where the deform_p gate is closed."""
        batch, _, height, width = image.shape
        gate = self._bernoulli(batch, self.config.deform_p, image.device)
        displacement = self.sample_displacement(batch, height, width, image.device)
        return displacement * gate.view(batch, 1, 1, 1)
