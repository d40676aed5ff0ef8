"""``--preset``: a named recipe under config files and overrides, picked by hardware when unsaid."""

import pytest

from curation.config import ConfigError, load_config
from curation.train_descriptor.config import DescriptorTrainConfig
from curation.train_descriptor.presets import PRESETS, resolve_preset


def test_auto_picks_the_cpu_recipe_without_cuda_and_the_gpu_recipe_with_it():
    assert resolve_preset("auto", cuda_available=False)[0] == "cpu-15min"
    assert resolve_preset("auto", cuda_available=True)[0] == "gpu"
    assert resolve_preset("none", cuda_available=True) == ("none", {})
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        resolve_preset("fast", cuda_available=False)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config_that_overrides_still_beat(name):
    _, base = resolve_preset(name, cuda_available=False)
    cfg = load_config(DescriptorTrainConfig, overrides=["batch_size=32"], base=base)
    assert cfg.batch_size == 32  # the override wins over the preset
    assert cfg.time_budget_s == base["time_budget_s"] and cfg.arch == base["arch"]
    assert cfg.augment.size == base["augment"]["size"]
    assert cfg.augment.p_underlay > 0  # the real-copy edits are on in every preset
    plain = DescriptorTrainConfig()
    assert cfg.augment.p_flip == plain.augment.p_flip  # keys a preset leaves alone keep defaults
