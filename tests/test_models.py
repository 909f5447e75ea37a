import torch

from mona.models import build_backbone


def test_reference_unet_has_the_official_parameter_count_and_feature_shapes():
    net = build_backbone("unet", 1, 4)
    assert sum(p.numel() for p in net.parameters()) == 1_813_764
    out = net(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 4, 64, 64)
    assert out.bottleneck.shape == (2, 256, 4, 4)
    assert [tuple(d.shape[1:]) for d in out.decoder] == [
        (128, 8, 8),
        (64, 16, 16),
        (32, 32, 32),
        (16, 64, 64),
    ]
    assert net.decoder_channels == [128, 64, 32, 16]


def test_unet_widths_and_transposed_upsampling_are_configurable():
    small = build_backbone("unet", 1, 3, [4, 8, 16, 32, 64])
    transposed = build_backbone("unet", 1, 3, [4, 8, 16, 32, 64], upsample="transposed")
    assert sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in transposed.parameters()
    )
    assert small(torch.randn(1, 1, 32, 32)).logits.shape == (1, 3, 32, 32)


def test_smp_backbone_exposes_the_same_interface():
    net = build_backbone("smp:resnet18", 1, 4)
    out = net(torch.randn(2, 1, 64, 64))
    assert out.logits.shape == (2, 4, 64, 64)
    assert out.bottleneck.shape[1] == net.bottleneck_channels
    assert [d.shape[1] for d in out.decoder] == net.decoder_channels
    assert out.decoder[-1].shape[-1] == 64


def test_drop_encoder_leaves_a_decoder_and_head_that_decode_foreign_features():
    main = build_backbone("unet", 1, 3, [4, 8, 16, 32, 64])
    branch = build_backbone("unet", 1, 3, [4, 8, 16, 32, 64]).drop_encoder()
    assert sum(p.numel() for p in branch.parameters()) < sum(p.numel() for p in main.parameters())
    maps = branch.decode(main.encode(torch.randn(1, 1, 32, 32)))
    assert branch.head(maps[-1]).shape == (1, 3, 32, 32)
