import torch

from mona.optim import SGD


def test_sgd_matches_torch_sgd_over_several_steps_including_a_frozen_parameter():
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ours = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ours.load_state_dict(reference.state_dict())
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt_ours = SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for step in range(5):
        x = torch.randn(8, 3)
        for model, opt in ((reference, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            if step == 2:  # a step where one layer receives no gradient
                loss = model[1](x.new_ones(8, 4)).pow(2).mean()
            loss.backward()
            for group in opt.param_groups:
                group["lr"] = 0.1 * (1 - step / 5)
            opt.step()
        for a, b in zip(reference.parameters(), ours.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_sgd_state_round_trips():
    model = torch.nn.Linear(2, 1)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    clone = SGD(model.parameters(), lr=0.5, momentum=0.9)
    clone.load_state_dict(opt.state_dict())
    assert clone.param_groups[0]["lr"] == 0.1
    assert torch.equal(clone.momentum_buffers[0][0], opt.momentum_buffers[0][0])
