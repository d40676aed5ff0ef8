import pytest
import torch

from pretrain.layers import DINOHead, DINOHeadConfig, build_heads


def test_head_keys_follow_official_layout():
    head = DINOHead(in_dim=16, out_dim=40, nlayers=3, hidden_dim=24, bottleneck_dim=8)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "mlp.0.weight": (24, 16),
        "mlp.0.bias": (24,),
        "mlp.2.weight": (24, 24),
        "mlp.2.bias": (24,),
        "mlp.4.weight": (8, 24),
        "mlp.4.bias": (8,),
        "last_layer.weight_g": (40, 1),
        "last_layer.weight_v": (40, 8),
    }
    assert isinstance(head.mlp[1], torch.nn.GELU)
    assert "mlp.weight" in DINOHead(16, 40, nlayers=1, bottleneck_dim=8).state_dict()


def test_logits_are_cosines_to_prototypes_and_norm_is_frozen():
    torch.manual_seed(0)
    head = DINOHead(in_dim=16, out_dim=40, hidden_dim=24, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(7.0)  # scale of v must not matter
    x = torch.randn(5, 16)
    logits = head(x)
    assert logits.shape == (5, 40)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    prototypes = torch.nn.functional.normalize(head.last_layer.weight_v, dim=-1)
    torch.testing.assert_close(logits, bottleneck @ prototypes.T)
    assert logits.abs().max() <= 1.0 + 1e-5

    assert not head.last_layer.weight_g.requires_grad
    assert torch.equal(head.last_layer.weight_g, torch.ones(40, 1))
    logits.sum().backward()
    assert head.last_layer.weight_v.grad is not None
    assert head.last_layer.weight_g.grad is None


def test_heads_shared_or_separate_by_config():
    config = DINOHeadConfig(out_dim=12, hidden_dim=16, bottleneck_dim=4)
    dino, ibot = build_heads(8, config)
    assert dino is ibot
    dino, ibot = build_heads(8, config, DINOHeadConfig(out_dim=20), separate_ibot_head=True)
    assert dino is not ibot and ibot.out_dim == 20
    with pytest.raises(ValueError, match="separate_ibot_head"):
        build_heads(8, config, DINOHeadConfig(out_dim=20))
