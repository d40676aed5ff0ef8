import pytest
import torch

from pretrain.data import MultiCropAugmentation, MultiCropConfig
from pretrain.data.augmentations import (
    BLUR_PROBABILITIES,
    adjust_hue,
    gaussian_blur,
    normalize,
    random_resized_crop_box,
    rgb_to_grayscale,
    solarize,
)


def _image(seed=0, height=120, width=160):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)


def test_default_views_sizes_and_types():
    aug = MultiCropAugmentation(generator=torch.Generator().manual_seed(0))
    out = aug(_image())
    assert [tuple(c.shape) for c in out["global_crops"]] == [(3, 224, 224)] * 2
    assert [tuple(c.shape) for c in out["local_crops"]] == [(3, 98, 98)] * 8
    assert out["global_crops_teacher"] is out["global_crops"]
    assert all(c.dtype == torch.float32 for c in out["global_crops"] + out["local_crops"])
    geometric = MultiCropAugmentation(geometric_only=True)(_image())
    assert all(c.dtype == torch.uint8 for c in geometric["global_crops"] + geometric["local_crops"])


def test_default_config_is_the_recipe():
    config = MultiCropConfig()
    assert (config.global_crops_scale, config.local_crops_scale) == ((0.32, 1.0), (0.05, 0.32))
    assert (config.brightness, config.contrast, config.saturation, config.hue) == (
        0.4,
        0.4,
        0.2,
        0.1,
    )
    assert config.blur_probabilities == "paper"
    assert BLUR_PROBABILITIES == {"paper": (1.0, 0.1, 0.5), "official": (0.0, 0.9, 0.5)}
    with pytest.raises(ValueError, match="blur_probabilities"):
        MultiCropConfig(blur_probabilities="inverted")


def _blur_only(convention):
    # sigma >= 1 so that every blurred crop visibly differs (sigma 0.1 is near identity).
    config = MultiCropConfig(
        color_jitter_probability=0.0,
        grayscale_probability=0.0,
        blur_probabilities=convention,
        blur_sigma=(1.0, 2.0),
    )
    return MultiCropAugmentation(config, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_blur_probability_conventions(convention):
    crops = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    aug = _blur_only(convention)
    untouched = normalize(crops.float() / 255)
    blurred_fraction = {}
    for kind in ("global1", "local"):
        out = aug.photometric(crops, kind)
        same = torch.isclose(out, untouched, atol=1e-5).flatten(1).all(1)
        blurred_fraction[kind] = 1 - same.float().mean().item()
    expected_global1 = {"paper": 1.0, "official": 0.0}[convention]
    assert blurred_fraction["global1"] == expected_global1
    assert 0.25 < blurred_fraction["local"] < 0.75


def test_solarisation_only_on_second_global_crop():
    config = MultiCropConfig(
        color_jitter_probability=0.0, grayscale_probability=0.0, solarize_probability=1.0
    )
    aug = MultiCropAugmentation(config)
    aug.blur_probability = {"global1": 0.0, "global2": 0.0, "local": 0.0}
    crops = torch.full((2, 3, 12, 12), 200, dtype=torch.uint8)
    assert torch.allclose(
        aug.photometric(crops, "global2"), normalize(torch.full_like(crops, 55).float() / 255)
    )
    assert torch.allclose(aug.photometric(crops, "global1"), normalize(crops.float() / 255))


def test_collated_gpu_path_matches_per_image_when_deterministic():
    config = MultiCropConfig(
        color_jitter_probability=0.0, grayscale_probability=1.0, blur_sigma=(1.0, 1.0)
    )
    aug = MultiCropAugmentation(config)
    aug.blur_probability = {"global1": 1.0, "global2": 0.0, "local": 1.0}
    aug.solarize_probability = {"global1": 0.0, "global2": 0.0, "local": 0.0}
    globals_ = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    locals_ = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    batched_g, batched_l = aug.photometric_collated(globals_, locals_)
    single = [
        aug.photometric(globals_[i : i + 1], "global1" if i < 2 else "global2") for i in range(4)
    ]
    torch.testing.assert_close(batched_g, torch.cat(single))
    torch.testing.assert_close(batched_l[3], aug.photometric(locals_[3:4], "local")[0])


def test_random_resized_crop_box_respects_scale_and_ratio():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(100, 150, (0.05, 0.32), (3 / 4, 4 / 3), gen)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 150
        assert 0.04 <= h * w / 15000 <= 0.34
        assert 0.7 <= w / h <= 1.4


def test_colour_primitives():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    green = adjust_hue(red, torch.tensor([1 / 3]))
    torch.testing.assert_close(green, red.roll(1, dims=1), atol=1e-6, rtol=0)
    x = torch.rand(3, 3, 5, 5)
    torch.testing.assert_close(adjust_hue(x, torch.zeros(3)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        rgb_to_grayscale(torch.ones(1, 3, 2, 2)),
        torch.full((1, 1, 2, 2), 0.9999),
        atol=1e-6,
        rtol=0,
    )
    constant = torch.full((2, 3, 12, 12), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([0.5, 2.0])), constant)
    levels = torch.tensor([127, 128, 200]).float() / 255
    torch.testing.assert_close(
        solarize(levels, 128 / 255), torch.tensor([127, 127, 55]).float() / 255
    )
