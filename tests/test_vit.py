"""Vision Transformer: shapes and pooling, recomputed attention weights, learning on digits, attention artifact."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.datamodules.images import DigitsDataModule
from zoo.errors import ZooUserError
from zoo.models.vit import ViTClassifier, last_layer_attention

TINY = dict(num_classes=10, in_channels=1, image_size=8, patch_size=2, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_shapes_pooling_and_attention_maps(pooling: str) -> None:
    torch.manual_seed(0)
    model = ViTClassifier(pooling=pooling, **TINY).eval()
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    assert (model.net.cls_token is not None) == (pooling == "cls")
    assert model.net.num_prefix_tokens == int(pooling == "cls")
    maps = model.patch_attention(x)
    assert maps.shape == (3, 4, 4) and (maps >= 0).all() and (maps.flatten(1).sum(1) <= 1 + 1e-5).all()
    if pooling == "mean":  # without a class token every query attends only to patches: rows sum to one
        assert torch.allclose(maps.flatten(1).sum(1), torch.ones(3), atol=1e-5)


def test_recomputed_attention_weights_reproduce_the_fused_attention_output() -> None:
    torch.manual_seed(0)
    model = ViTClassifier(**TINY).eval()
    x = torch.randn(2, 1, 8, 8)
    block = model.net.blocks[-1]
    seen = {}
    h1 = block.norm1.register_forward_hook(lambda _m, _i, out: seen.update(inp=out))
    h2 = block.attn.register_forward_hook(lambda _m, _i, out: seen.update(out=out))
    with torch.no_grad():
        model(x)
    h1.remove(), h2.remove()
    weights = last_layer_attention(model.net, x)
    assert weights.shape == (2, 2, 17, 17) and torch.allclose(weights.sum(-1), torch.ones(2, 2, 17))
    attn, h = block.attn, seen["inp"]
    v = attn.qkv(h).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)[2]
    out = attn.proj((weights @ v).transpose(1, 2).reshape(2, 17, 32))
    assert torch.allclose(out, seen["out"], atol=1e-5)


def test_tiny_vit_learns_digits_and_writes_attention_maps(tmp_path: Path, make_trainer) -> None:
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = ViTClassifier(lr=3e-3, weight_decay=0.0, label_smoothing=0.0, drop_path=0.0, attention_images=4, **TINY)
    trainer = make_trainer(max_epochs=10)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/acc"] > 0.5  # chance is 0.1
    assert list((tmp_path / "artifacts").glob("attention_maps_step*.png"))


def test_bad_settings_raise_user_errors() -> None:
    with pytest.raises(ZooUserError, match="does not divide"):
        ViTClassifier(image_size=28, patch_size=5)
    with pytest.raises(ZooUserError, match="divisible"):
        ViTClassifier(embed_dim=30, num_heads=4)
    with pytest.raises(ZooUserError, match="pooling"):
        ViTClassifier(pooling="max")
    with pytest.raises(ZooUserError, match="power of two"):
        ViTClassifier(image_size=24, patch_size=3, stem="conv")
    with pytest.raises(ZooUserError, match="stem"):
        ViTClassifier(stem="resnet")


@pytest.mark.parametrize("stride", [2, 4])
def test_conv_stem_gives_the_patch_grid_and_gets_gradients(stride: int) -> None:
    """The convolutional stem (timm's HybridEmbed over our conv stack) makes the same token grid as patches of
    side ``stride``; its batch-norm layers get gradients and no weight decay."""
    torch.manual_seed(0)
    model = ViTClassifier(**{**TINY, "patch_size": stride}, stem="conv")
    x = torch.randn(3, 1, 8, 8)
    assert model.net.patch_embed.num_patches == (8 // stride) ** 2
    assert model.patch_attention(x).shape == (3, 8 // stride, 8 // stride)
    model(x).sum().backward()
    convs = [m for m in model.net.patch_embed.backbone if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == stride.bit_length() - 1 and all(c.weight.grad.abs().sum() > 0 for c in convs)
    no_decay = {id(p) for p in model.param_groups()[1]["params"]}
    assert all(id(m.weight) in no_decay for m in model.net.patch_embed.backbone if isinstance(m, torch.nn.BatchNorm2d))
