"""Augmentations keep image and mask aligned, are seeded, and stay in range on any device."""

import math
from dataclasses import replace

import pytest
import torch
import torchvision.transforms.functional as TF

from mona.augment import (
    AugmentConfig,
    Augmenter,
    affine_theta,
    affine_warp,
    gaussian_blur,
    identity_grid,
    max_shift_for,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NO_GEOMETRY = AugmentConfig(rotate_deg=0.0, scale=(1.0, 1.0), flip_p=0.0)
NOTHING = replace(NO_GEOMETRY, jitter_p=0.0, blur_p=0.0, cutmix_p=0.0, deform_p=0.0)
ALWAYS = AugmentConfig(flip_p=0.5, jitter_p=1.0, blur_p=1.0, cutmix_p=1.0, deform_p=1.0)
NO_PHOTOMETRIC = replace(ALWAYS, jitter_p=0.0, blur_p=0.0)


def blobs(batch: int, height: int, width: int, seed: int = 0, device: str = "cpu"):
    """Smooth images in [0, 1]: a few wide Gaussian bumps, off-centre so flips change them."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(height).view(1, 1, height, 1).float()
    cols = torch.arange(width).view(1, 1, 1, width).float()
    centre_r = torch.rand(batch, 3, 1, 1, generator=gen) * height
    centre_c = torch.rand(batch, 3, 1, 1, generator=gen) * width
    radius = (0.12 + 0.08 * torch.rand(batch, 3, 1, 1, generator=gen)) * min(height, width)
    bumps = torch.exp(-((rows - centre_r) ** 2 + (cols - centre_c) ** 2) / (2 * radius**2))
    image = bumps.amax(dim=1, keepdim=True)
    return image.to(device)


def labels_of(image: torch.Tensor) -> torch.Tensor:
    """Three-class mask (0, 1, 2) read off the image by thresholds, so it follows the image."""
    return ((image[:, 0] > 0.35).long() + (image[:, 0] > 0.7).long())


def augmenter(config: AugmentConfig, seed: int = 0, device: str = "cpu") -> Augmenter:
    return Augmenter(config, torch.Generator(device=device).manual_seed(seed))


@pytest.mark.parametrize("device", DEVICES)
def test_identity_geometry_returns_input(device):
    image = blobs(4, 32, 40, device=device)
    mask = labels_of(image)
    out, out_mask = augmenter(NO_GEOMETRY, device=device).geometric(image, mask)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask)


@pytest.mark.parametrize("device", DEVICES)
def test_all_gates_closed_makes_strong_the_identity(device):
    image = blobs(4, 32, 32, device=device)
    mask = labels_of(image)
    out, out_mask = augmenter(NOTHING, device=device).strong(image, mask)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask)


def test_certain_flip_is_an_exact_horizontal_flip():
    image = blobs(3, 24, 32)
    mask = labels_of(image)
    out, out_mask = augmenter(replace(NO_GEOMETRY, flip_p=1.0)).geometric(image, mask)
    torch.testing.assert_close(out, image.flip(-1), atol=1e-6, rtol=0)
    assert torch.equal(out_mask, mask.flip(-1))


def test_quarter_turn_matches_rot90_exactly():
    image = blobs(2, 16, 16)
    mask = labels_of(image)
    angle = math.pi / 2
    theta = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]]
    ).expand(2, 2, 3)
    out, out_mask = affine_warp(image, mask, theta)
    torch.testing.assert_close(out, image.rot90(1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask.rot90(1, dims=(-2, -1)))


def test_rotation_keeps_right_angles_on_non_square_images():
    """A quarter turn of a centred square on a wide image gives the same square back."""
    image = torch.zeros(1, 1, 20, 40)
    image[..., 6:14, 16:24] = 1.0
    theta = affine_theta(
        angle=torch.tensor([math.pi / 2]), zoom=torch.ones(1), flip=torch.tensor([False]),
        shift=torch.zeros(1, 2), height=20, width=40,
    )
    out, _ = affine_warp(image, None, theta)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_zoom_in_crops_a_window_inside_the_image():
    """Zoom 2 with the largest shift shows exactly one quarter of the image, enlarged."""
    image = blobs(1, 32, 32)
    zoom = torch.tensor([2.0])
    theta = affine_theta(
        angle=torch.zeros(1), zoom=zoom, flip=torch.tensor([False]),
        shift=max_shift_for(zoom) * torch.tensor([[1.0, -1.0]]), height=32, width=32,
    )
    out, _ = affine_warp(image, None, theta)
    top_right = image[..., :16, 16:]
    expected = torch.nn.functional.interpolate(
        top_right, scale_factor=2, mode="bilinear", align_corners=False
    )
    # the outermost ring differs only in how each op pads its border
    torch.testing.assert_close(
        out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "op, config",
    [
        ("weak", AugmentConfig()),
        ("geometric", AugmentConfig(rotate_deg=45.0, scale=(0.7, 1.4), flip_p=0.5)),
        ("deform", ALWAYS),
        ("cutmix", ALWAYS),
        ("strong", NO_PHOTOMETRIC),
    ],
)
def test_mask_stays_aligned_with_image(device, op, config):
    image = blobs(16, 64, 64, device=device)
    mask = labels_of(image)
    out, out_mask = getattr(augmenter(config, seed=3, device=device), op)(image, mask)
    assert not torch.equal(out, image)  # the op did something
    agreement = (labels_of(out) == out_mask).float().mean().item()
    if op == "cutmix":  # copies whole pixels: no interpolation at all
        assert agreement == 1.0
    else:  # bilinear image vs nearest mask may differ only on a thin boundary
        assert agreement >= 0.98
    assert (out_mask > 0).any()


def test_strong_warps_once_what_geometric_then_deform_warp_twice():
    """strong composes the affine map and the warp in the right order into a single grid."""
    config = replace(NO_PHOTOMETRIC, cutmix_p=0.0, rotate_deg=45.0, scale=(0.7, 1.4))
    image = blobs(16, 64, 64)
    mask = labels_of(image)
    once, once_mask = augmenter(config, seed=4).strong(image, mask)
    two_step = augmenter(config, seed=4)
    twice, twice_mask = two_step.deform(*two_step.geometric(image, mask))
    # the double interpolation blurs a little more; a wrong composition order is ~6x farther
    assert (once - twice).abs().mean() < 0.01
    assert (once_mask == twice_mask).float().mean() > 0.97


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["weak", "strong", "geometric", "cutmix", "deform"])
def test_same_seed_same_views_and_other_seed_other_views(device, op):
    image = blobs(8, 32, 32, device=device)
    mask = labels_of(image)
    first = getattr(augmenter(ALWAYS, seed=7, device=device), op)(image, mask)
    again = getattr(augmenter(ALWAYS, seed=7, device=device), op)(image, mask)
    other = getattr(augmenter(ALWAYS, seed=8, device=device), op)(image, mask)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_consecutive_calls_draw_fresh_parameters():
    image = blobs(8, 32, 32)
    aug = augmenter(ALWAYS)
    assert not torch.equal(aug.strong(image)[0], aug.strong(image)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["weak", "strong"])
def test_labels_range_shape_and_dtype_are_kept(device, op):
    image = blobs(6, 48, 40, device=device)
    mask = labels_of(image) * 3 + (labels_of(image) == 2).long()  # labels {0, 3, 7}
    config = replace(ALWAYS, brightness=(1.5, 2.0), contrast=(1.5, 2.0))  # push past 1
    out, out_mask = getattr(augmenter(config, device=device), op)(image, mask)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
    assert out.device == image.device and out_mask.device == mask.device
    assert set(out_mask.unique().tolist()) <= {0, 3, 7}
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_image_only_calls_return_no_mask():
    image = blobs(2, 16, 16)
    aug = augmenter(ALWAYS)
    for op in (aug.weak, aug.strong, aug.geometric, aug.cutmix, aug.deform):
        out, out_mask = op(image)
        assert out.shape == image.shape and out_mask is None


def test_mask_with_a_channel_axis_is_refused():
    image = blobs(2, 16, 16)
    with pytest.raises(ValueError, match="mask must be"):
        augmenter(ALWAYS).weak(image, (image > 0.5).long())


@pytest.mark.parametrize("size", [32, 64, 128])
def test_integrated_deformation_does_not_fold(size):
    aug = augmenter(AugmentConfig(), seed=size)
    displacement = aug.sample_displacement(16, size, size, torch.device("cpu"))
    mapping = identity_grid(16, size, size, torch.device("cpu")) + displacement
    d_dx = torch.gradient(mapping, dim=2)[0]
    d_dy = torch.gradient(mapping, dim=1)[0]
    jacobian = d_dx[..., 0] * d_dy[..., 1] - d_dx[..., 1] * d_dy[..., 0]
    jacobian = jacobian * (size / 2) ** 2  # normalised -> pixel units (det of identity = 1)
    assert jacobian.min() > 0
    mean_shift_px = displacement.norm(dim=-1).mean() * size / 2
    assert 0.5 < mean_shift_px < 5  # a visible warp, not a scramble


def test_scaling_and_squaring_is_what_prevents_folds():
    """The default field applied in one Euler step (no squaring) folds; integrated, it does not."""
    config = AugmentConfig()
    cpu = torch.device("cpu")
    integrated = augmenter(config).sample_displacement(8, 64, 64, cpu)
    one_step = augmenter(replace(config, deform_steps=0)).sample_displacement(8, 64, 64, cpu)

    def min_det(displacement):
        mapping = identity_grid(8, 64, 64, cpu) + displacement
        d_dx, d_dy = torch.gradient(mapping, dim=2)[0], torch.gradient(mapping, dim=1)[0]
        return (d_dx[..., 0] * d_dy[..., 1] - d_dx[..., 1] * d_dy[..., 0]).min()

    assert min_det(one_step) < 0 < min_det(integrated)


def test_cutmix_pastes_half_the_area_from_one_partner():
    batch, height, width = 8, 40, 30
    image = torch.arange(batch).float().view(batch, 1, 1, 1).expand(batch, 1, height, width)
    image = image / batch
    mask = torch.arange(batch).view(batch, 1, 1).expand(batch, height, width).clone()
    out, out_mask = augmenter(ALWAYS, seed=1).cutmix(image.clone(), mask)
    box_area = round(height * math.sqrt(0.5)) * round(width * math.sqrt(0.5))
    assert 0.45 < box_area / (height * width) < 0.55
    mixed = 0
    for b in range(batch):
        foreign = out_mask[b] != b
        if foreign.any():
            mixed += 1
            assert foreign.sum().item() == box_area
            assert out_mask[b][foreign].unique().numel() == 1  # one partner
            rows, cols = foreign.nonzero(as_tuple=True)  # a solid rectangle
            assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == box_area
        torch.testing.assert_close(out[b, 0], out_mask[b].float() / batch)
    assert mixed >= batch // 2


def test_gates_select_some_samples_not_all():
    image = blobs(64, 24, 24)
    config = replace(NO_GEOMETRY, deform_p=0.5)
    out, _ = augmenter(config, seed=5).deform(image)
    changed = (out - image).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert 16 <= changed.sum().item() <= 48


def test_brightness_and_contrast_match_torchvision():
    image = blobs(3, 20, 20)
    bright = replace(NOTHING, jitter_p=1.0, brightness=(1.3, 1.3), contrast=(1.0, 1.0))
    torch.testing.assert_close(
        augmenter(bright).photometric(image), TF.adjust_brightness(image, 1.3)
    )
    contrast = replace(NOTHING, jitter_p=1.0, brightness=(1.0, 1.0), contrast=(0.6, 0.6))
    expected = torch.stack([TF.adjust_contrast(sample, 0.6) for sample in image])
    torch.testing.assert_close(augmenter(contrast).photometric(image), expected)


def test_blur_matches_torchvision_per_sample_sigma():
    image = blobs(3, 20, 24)
    sigma = torch.tensor([0.3, 0.8, 1.15])
    out = gaussian_blur(image, sigma, max_sigma=1.15)
    for index, s in enumerate(sigma.tolist()):
        expected = TF.gaussian_blur(image[index], kernel_size=9, sigma=s)
        torch.testing.assert_close(out[index], expected)


def test_photometric_leaves_the_image_alone_when_gated_off():
    image = blobs(4, 16, 16)
    assert torch.equal(augmenter(NOTHING).photometric(image), image)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="flip_p"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_given_the_same_parameters():
    """A CPU generator with CUDA data draws the same parameters as on the CPU."""
    image = blobs(8, 64, 64)
    mask = labels_of(image)
    cpu = augmenter(NO_PHOTOMETRIC, seed=2).strong(image, mask)
    gpu = augmenter(NO_PHOTOMETRIC, seed=2).strong(image.cuda(), mask.cuda())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_never_sync_with_the_host():
    image = blobs(8, 64, 64, device="cuda")
    mask = labels_of(image)
    aug = augmenter(ALWAYS, device="cuda")
    aug.strong(image, mask)  # warm up kernels outside the check
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug.weak(image, mask)
        aug.strong(image, mask)
    finally:
        torch.cuda.set_sync_debug_mode("default")
