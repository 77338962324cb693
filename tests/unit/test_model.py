import pytest
import torch

from hle_stream.core.backbones import MLP, build_backbone
from hle_stream.core.device import pick_device
from hle_stream.core.model import HierarchicalNet, grow_head


def _net_and_adam(fused: bool = False):
    net = HierarchicalNet(MLP(4, (8,)))
    opt = torch.optim.Adam(net.backbone.parameters(), lr=1e-2, fused=fused)
    grow_head(net, opt, 1, 2)
    return net, opt


def _train_once(net, opt):
    x = torch.randn(6, 4)
    loss = sum(torch.nn.functional.cross_entropy(l, torch.zeros(6, dtype=torch.long)) for l in net(x))
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("fused", [False, True])
def test_growing_a_head_keeps_weights_bias_and_adam_moments(fused):
    net, opt = _net_and_adam(fused)
    _train_once(net, opt)
    head = net.heads[0]
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
    moments = {k: v.clone() for k, v in opt.state[head.weight].items()}

    grow_head(net, opt, 1, 5)

    grown = net.heads[0]
    assert grown.out_features == 5
    assert torch.equal(grown.weight[:2], weight) and torch.equal(grown.bias[:2], bias)
    state = opt.state[grown.weight]
    for key in ("exp_avg", "exp_avg_sq"):
        assert state[key].shape == (5, net.feature_dim)
        assert torch.equal(state[key][:2], moments[key])
        assert torch.count_nonzero(state[key][2:]) == 0
    assert torch.equal(state["step"], moments["step"])
    assert head.weight not in opt.state
    assert any(grown.weight is p for g in opt.param_groups for p in g["params"])


def test_grown_head_keeps_training_through_the_optimizer():
    net, opt = _net_and_adam()
    _train_once(net, opt)
    grow_head(net, opt, 1, 3)
    before = net.heads[0].weight.detach().clone()
    _train_once(net, opt)
    assert not torch.equal(before, net.heads[0].weight)


def test_a_new_level_gets_its_own_head_in_the_optimizers_one_group():
    net, opt = _net_and_adam()
    grow_head(net, opt, 3, 4)
    assert net.head_sizes() == [2, 1, 4]
    assert len(opt.param_groups) == 1
    in_group = opt.param_groups[0]["params"]
    assert all(any(p is q for q in in_group) for head in net.heads for p in head.parameters())


def test_backbones_map_inputs_to_their_feature_size():
    for name, shape in (("small-cnn", (1, 28, 28)), ("resnet18", (3, 32, 32)), ("mlp", (10,))):
        backbone = build_backbone(name, shape).eval()
        assert backbone(torch.zeros(2, *shape)).shape == (2, backbone.out_dim)


def test_device_is_cpu_without_a_gpu_and_can_be_forced():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("cpu").type == "cpu"
