"""CCT, URPC, DAN and CPS: each trains through the engine, and each extra head or network does
what its definition says, checked on inputs whose answer is known by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from baselines.cct import attention_dropout, cross_consistency, feature_noise
from baselines.cps import cross_pseudo_losses
from baselines.dan import ConstantLrAdam
from baselines.urpc import rectified_pyramid_consistency, scale_divergences
from mona.augment import AugmentConfig, Augmenter
from mona.data.splits import labeled_subset, make_split
from mona.engine import RunSpec, TrainConfig, Trainer
from mona.io import read_json
from mona.method import Batch, MethodContext
from mona.optim import SGD
from mona.registry import get_method

SMALL = {"widths": [4, 8, 16, 32, 64], "image_size": 32, "log_every": 1, "checkpoint_every": 100}
METHODS = ["cct", "urpc", "dan", "cps"]


def train(processed, run_dir, method: str, iterations: int = 2) -> Trainer:
    manifest = read_json(processed / "manifest.json")
    split = make_split(manifest, "paper", [0.6, 0.2, 0.2], seed=0)
    spec = RunSpec(
        dataset="acdc", method=method, ratio="10", seed=0, stage="train",
        processed_dir=processed, run_dir=run_dir, split=split,
        labeled=labeled_subset(split, manifest, "10", 0),
    )  # fmt: skip
    config = TrainConfig(iterations=iterations, batch_labeled=2, batch_unlabeled=2, **SMALL)
    trainer = Trainer(spec, config)
    trainer.run()
    return trainer


def build(name: str, **hparams):
    """A method outside the engine, at the tiny test widths."""
    torch.manual_seed(0)
    ctx = MethodContext(
        num_classes=4, in_channels=1, backbone="unet", widths=SMALL["widths"],
        upsample="bilinear", max_iterations=10,
        augmenter=Augmenter(AugmentConfig(), torch.Generator()), hparams=hparams,
    )  # fmt: skip
    return get_method(name)(ctx).train()


def random_batch(labeled: int = 2, unlabeled: int = 2, size: int = 32) -> Batch:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(labeled, 1, size, size, generator=generator)
    mask = torch.randint(0, 4, (labeled, size, size), generator=generator)
    u_image = torch.rand(unlabeled, 1, size, size, generator=generator)
    return Batch(
        labeled_image=image, labeled_mask=mask, unlabeled_image=u_image,
        labeled_raw_image=image, labeled_raw_mask=mask, unlabeled_raw_image=u_image,
        labeled_position=torch.full((labeled,), 0.5),
        unlabeled_position=torch.full((unlabeled,), 0.5),
        labeled_volume=torch.zeros(labeled, dtype=torch.long),
        unlabeled_volume=torch.ones(unlabeled, dtype=torch.long),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(processed_acdc, tmp_path_factory) -> dict[str, Trainer]:
    """Each method after two engine steps (one run per method, shared by the tests below)."""
    return {m: train(processed_acdc, tmp_path_factory.mktemp(m), m) for m in METHODS}


# every method: trains through the engine, every trainable weight learns ----------------------


@pytest.mark.parametrize("name", METHODS)
def test_trains_with_finite_losses_and_a_gradient_for_every_trainable_weight(trained, name):
    trainer = trained[name]
    lines = (trainer.spec.run_dir / "log.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in lines]
    assert [entry["step"] for entry in log] == [1, 2]
    assert all(math.isfinite(value) for entry in log for value in entry.values())

    method = trainer.method
    method.zero_grad(set_to_none=True)
    batch = trainer.make_batch(2)
    for phase, _ in trainer.phases:  # DAN: segmenter, then discriminator
        getattr(method, phase)(batch, 2)["loss"].backward()
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"
    # every trainable weight is in exactly one optimizer, and nothing else is
    optimized = [id(p) for o in trainer.optimizers for g in o.param_groups for p in g["params"]]
    assert sorted(optimized) == sorted(id(p) for _, p in trainable)
    assert type(method).display_name == {"cct": "CCT", "urpc": "URPC", "dan": "DAN",
                                         "cps": "CPS"}[name]  # fmt: skip


# CCT --------------------------------------------------------------------------------------------


def test_cct_aux_decoders_decode_perturbed_copies_of_the_main_features():
    method = build("cct")
    assert len(method.aux_nets) == 3
    for aux in method.aux_nets:  # same weights as the main decoder: only the input differs
        aux.load_state_dict(method.net.state_dict(), strict=False)
    images = random_batch().labeled_image
    features = method.net.encode(images)
    main = method.net.head(method.net.decode(features)[-1])
    for aux_logits in method.aux_logits(features):
        assert not torch.allclose(aux_logits, main, atol=1e-4)
    method.perturbations = [lambda x: x] * 3
    for aux_logits in method.aux_logits(features):
        assert torch.allclose(aux_logits, main, atol=1e-5)


def test_cct_aux_decoders_carry_no_encoder():
    method = build("cct", perturbations=["feature_noise", "dropout"])
    assert len(method.aux_nets) == 2
    for aux in method.aux_nets:
        names = {n for n, _ in aux.named_parameters()}
        assert names and not any(n.startswith("down.") for n in names)
        assert all(p.requires_grad for p in aux.parameters())
    with pytest.raises(ValueError, match="perturbation 'blur'"):
        build("cct", perturbations=["blur"])


def test_cct_consistency_is_the_mean_mse_between_main_and_each_aux_softmax():
    main = torch.tensor([[[[0.2]], [[0.8]]]])  # (1, 2, 1, 1)
    aux_a = torch.tensor([[[[0.6]], [[0.4]]]])
    aux_b = torch.tensor([[[[0.2]], [[0.8]]]])
    # aux_a: ((0.4)^2 + (0.4)^2) / 2 = 0.16; aux_b: 0; mean over decoders = 0.08
    assert cross_consistency(main, [aux_a, aux_b]).item() == pytest.approx(0.08)

    method = build("cct")
    batch = random_batch()
    torch.manual_seed(3)
    losses = method.train_step(batch, 0)
    torch.manual_seed(3)  # the same draws again, so the same perturbations
    images = torch.cat([batch.labeled_image, batch.unlabeled_image])
    features = method.net.encode(images)
    main = method.net.head(method.net.decode(features)[-1])[2:].softmax(1)
    aux = [x[2:].softmax(1) for x in method.aux_logits(features)]
    expected = sum(((main - p) ** 2).mean() for p in aux) / 3
    assert losses["consistency"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_noise_scales_each_position_by_a_factor_in_range_shared_by_the_batch():
    x = torch.rand(3, 2, 4, 4) + 0.5
    factor = feature_noise(x, 0.3) / x - 1
    assert factor.abs().max() <= 0.3 + 1e-6 and factor.std() > 0
    assert torch.allclose(factor, factor[:1].expand_as(factor), atol=1e-6)


def test_attention_dropout_zeroes_the_positions_near_the_peak_attention():
    # channel means 1, 2, 6.9, 9.5, 10: the threshold t * 10, t in [0.7, 0.9), drops 9.5 and 10
    means = torch.tensor([1.0, 2.0, 6.9, 9.5, 10.0])
    x = torch.stack([means - 1, means + 1]).view(1, 2, 1, 5)
    kept = attention_dropout(x, 0.7, 0.9)
    assert torch.equal(kept[0, :, 0, :3], x[0, :, 0, :3])
    assert torch.equal(kept[0, :, 0, 3:], torch.zeros(2, 2))


# URPC -------------------------------------------------------------------------------------------


def _kl(m: list[float], p: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(m, p, strict=True))


def test_urpc_weights_each_scale_by_its_own_divergence_from_the_mean():
    # two scales, two classes, two pixels; pixel 0 agrees, pixel 1 does not
    scale_a = [[0.7, 0.3], [0.8, 0.2]]
    scale_b = [[0.7, 0.3], [0.4, 0.6]]
    mean = [[(a + b) / 2 for a, b in zip(pa, pb, strict=True)]
            for pa, pb in zip(scale_a, scale_b, strict=True)]  # fmt: skip

    def logits(probs):  # (1, classes, 1, pixels) whose softmax is `probs`
        return torch.tensor(probs).log().T.reshape(1, 2, 1, 2)

    d_a, d_b = scale_divergences([logits(scale_a), logits(scale_b)])
    hand = {"a": [_kl(mean[i], scale_a[i]) for i in range(2)],
            "b": [_kl(mean[i], scale_b[i]) for i in range(2)]}  # fmt: skip
    assert d_a.shape == (1, 1, 1, 2)
    assert d_a.flatten().tolist() == pytest.approx(hand["a"], abs=1e-6)
    assert d_b.flatten().tolist() == pytest.approx(hand["b"], abs=1e-6)
    assert hand["a"][1] != pytest.approx(hand["b"][1])  # the two scales get different weights

    expected = 0.0
    for probs, d in ((scale_a, hand["a"]), (scale_b, hand["b"])):
        w = [math.exp(-v) for v in d]
        weighted = sum(
            w[i] * sum((mean[i][c] - probs[i][c]) ** 2 for c in range(2)) for i in range(2)
        ) / 4  # mean over 2 classes x 2 pixels
        expected += weighted / (sum(w) / 2 + 1e-8) + sum(d) / 2
    expected /= 2
    value = rectified_pyramid_consistency([logits(scale_a), logits(scale_b)])
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_urpc_predicts_at_the_last_four_decoder_scales_and_keeps_the_backbone_head_last():
    method = build("urpc")
    assert [h.in_channels for h in method.scale_heads] == method.net.decoder_channels[-4:-1]
    assert all(h.kernel_size == (1, 1) for h in method.scale_heads)
    images = random_batch().labeled_image
    torch.manual_seed(0)  # the encoder's dropout draws come first in both passes
    outputs = method.pyramid_logits(images)
    assert [tuple(o.shape) for o in outputs] == [(2, 4, 32, 32)] * 4
    torch.manual_seed(0)
    assert torch.allclose(outputs[-1], method.net(images).logits, atol=1e-6)


# DAN --------------------------------------------------------------------------------------------


def test_dan_segmenter_and_discriminator_have_their_own_optimizers():
    method = build("dan")
    segmenter, discriminator = method.configure_optimizers(0.01, 0.9, 1e-4)
    assert isinstance(segmenter, SGD)  # the config's optimizer (train.optimizer: sgd)
    assert isinstance(discriminator, ConstantLrAdam)
    assert {id(p) for p in segmenter.param_groups[0]["params"]} == {
        id(p) for p in method.net.parameters()
    }
    assert {id(p) for p in discriminator.param_groups[0]["params"]} == {
        id(p) for p in method.discriminator.parameters()
    }
    group = discriminator.param_groups[0]
    assert group["lr"] == 1e-4 and group["betas"] == (0.9, 0.99)


def test_dan_adversarial_term_reaches_only_the_segmenter_and_d_loss_only_d():
    method = build("dan")
    losses = method.train_step(random_batch(), 5)
    d_loss = method.discriminator_step(random_batch(), 5)["loss"]
    segmenter = list(method.net.parameters())
    disc = list(method.discriminator.parameters())

    def grads(loss, params):
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    assert all(g is None for g in grads(losses["adversarial"], disc))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(losses["adversarial"], segmenter))
    assert all(g is None for g in grads(d_loss, segmenter))
    assert all(g is not None for g in grads(d_loss, disc))


def test_dan_steps_alternate_segmenter_then_discriminator_on_the_updated_segmenter(
    processed_acdc, tmp_path, monkeypatch
):
    from baselines.dan import DeepAdversarialNetwork

    seen = {}
    original = DeepAdversarialNetwork.discriminator_step

    def recording_step(self, batch, step):
        seen["net"] = [p.detach().clone() for p in self.net.parameters()]
        seen["d"] = [p.detach().clone() for p in self.discriminator.parameters()]
        seen["net_training"] = self.net.training
        return original(self, batch, step)

    monkeypatch.setattr(DeepAdversarialNetwork, "discriminator_step", recording_step)
    torch.manual_seed(0)
    trainer = train(processed_acdc, tmp_path / "start", "dan", iterations=0)
    start_net = [p.detach().clone() for p in trainer.method.net.parameters()]
    start_d = [p.detach().clone() for p in trainer.method.discriminator.parameters()]
    assert [name for name, _ in trainer.phases] == ["train_step", "discriminator_step"]
    assert [len(o) for _, o in trainer.phases] == [1, 1]

    trainer = train(processed_acdc, tmp_path / "one", "dan", iterations=1)
    method = trainer.method
    # the discriminator's phase sees the segmenter after its step, and D before its own
    assert any(not torch.equal(a, b) for a, b in zip(seen["net"], start_net, strict=True))
    assert all(
        torch.equal(a, b) for a, b in zip(seen["net"], method.net.parameters(), strict=True)
    )
    assert all(torch.equal(a, b) for a, b in zip(seen["d"], start_d, strict=True))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(start_d, method.discriminator.parameters(), strict=True)
    )
    assert seen["net_training"]  # the eval-mode pass restores train mode
    log = json.loads((tmp_path / "one" / "log.jsonl").read_text().splitlines()[-1])
    assert {"loss", "sup", "adversarial", "discriminator_step"} <= set(log)


def test_dan_discriminator_keeps_its_constant_lr_under_the_engine_schedule():
    method = build("dan")
    _, optimizer = method.configure_optimizers(0.01, 0.9, 1e-4)
    for group in optimizer.param_groups:  # what the engine does at a late step
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * 0.25
    before = [p.detach().clone() for p in method.discriminator.parameters()]
    method.discriminator_step(random_batch(), 5)["loss"].backward()
    optimizer.step()
    after = method.discriminator.parameters()
    moved = [(p.detach() - b).abs().flatten() for p, b in zip(after, before, strict=True)]
    steps = torch.cat(moved)
    # Adam's first step moves every weight with a clear gradient by lr (1e-4), not 0.25 lr
    assert steps.max().item() == pytest.approx(1e-4, rel=1e-3)


def test_dan_discriminator_works_at_any_input_size():
    method = build("dan")
    for size in (16, 48):
        logits = method.discriminator(torch.rand(3, 4, size, size), torch.rand(3, 1, size, size))
        assert logits.shape == (3,)


# CPS --------------------------------------------------------------------------------------------


def test_cps_networks_start_from_different_initialisations():
    method = build("cps")
    assert method.inference_net() is method.net
    assert not any(
        torch.equal(a, b)
        for a, b in zip(method.net.parameters(), method.net_2.parameters(), strict=True)
        if a.dim() > 1
    )
    assert len(method.configure_optimizers(0.01, 0.9, 1e-4)) == 2
    # init: kaiming_xavier (an earlier SSL4MIS revision): Kaiming vs Xavier normal deviations
    method = build("cps", init="kaiming_xavier")
    conv_1 = [m for m in method.net.modules() if isinstance(m, nn.Conv2d)]
    conv_2 = [m for m in method.net_2.modules() if isinstance(m, nn.Conv2d)]
    widest = max(range(len(conv_1)), key=lambda i: conv_1[i].weight.numel())
    fan_out, fan_in = conv_1[widest].weight.shape[0] * 9, conv_1[widest].weight.shape[1] * 9
    assert conv_1[widest].weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert conv_2[widest].weight.std().item() == pytest.approx(
        math.sqrt(2 / (fan_in + fan_out)), rel=0.05
    )
    for bn in (m for m in method.net_2.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
    assert len(method.configure_optimizers(0.01, 0.9, 1e-4)) == 2


def test_cps_each_network_is_supervised_by_the_others_argmax():
    # one pixel, 3 classes: net 1 favours class 0, net 2 class 2
    logits_1 = torch.tensor([2.0, 1.0, 0.0]).view(1, 3, 1, 1).requires_grad_()
    logits_2 = torch.tensor([0.0, 0.5, 1.5]).view(1, 3, 1, 1).requires_grad_()
    loss_1, loss_2 = cross_pseudo_losses(logits_1, logits_2)

    def ce(logits: list[float], target: int) -> float:
        return -logits[target] + math.log(sum(math.exp(v) for v in logits))

    assert loss_1.item() == pytest.approx(ce([2.0, 1.0, 0.0], 2))  # net 2's argmax is class 2
    assert loss_2.item() == pytest.approx(ce([0.0, 0.5, 1.5], 0))  # net 1's argmax is class 0
    # the pseudo-label is a constant: each loss trains its own network only
    assert torch.autograd.grad(loss_1, logits_2, allow_unused=True, retain_graph=True)[0] is None
    assert torch.autograd.grad(loss_2, logits_1, allow_unused=True)[0] is None
