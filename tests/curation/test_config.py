from dataclasses import dataclass, field
from pathlib import Path

import pytest

from curation.config import ConfigError, dump_yaml, load_config
from curation.jobs.config import CurationConfig


@dataclass(frozen=True)
class Inner:
    size: int = 3
    ratio: float = 0.5
    names: tuple[str, ...] = ("a",)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    out: Path = Path("runs")
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_then_yaml_then_overrides(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("name: y\ninner:\n  size: 5\n")
    cfg = load_config(Outer, [overlay], ["inner.ratio=0.25", "maybe=4", "inner.names=[b, c]"])
    assert cfg == Outer(name="y", maybe=4, inner=Inner(size=5, ratio=0.25, names=("b", "c")))


def test_unknown_keys_are_rejected_with_their_path(tmp_path):
    with pytest.raises(ConfigError, match=r"inner\.sise"):
        load_config(Outer, [], ["inner.sise=4"])
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("nmae: y\n")
    with pytest.raises(ConfigError, match="nmae"):
        load_config(Outer, [overlay])


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match=r"inner\.size: expected an integer"):
        load_config(Outer, [], ["inner.size=big"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Outer, [], ["inner.size"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, [tmp_path / "nope.yaml"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(CurationConfig, [], ["engine.name=spark", "synth.n_pool=500"])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(cfg))
    assert load_config(CurationConfig, [saved]) == cfg


def test_dataclass_checks_become_config_errors():
    with pytest.raises(ConfigError, match="synth: n_near_duplicates"):
        load_config(CurationConfig, [], ["synth.n_pool=50"])


@pytest.mark.parametrize(
    ("override", "accepted"),
    [
        ("engine.name=dask", "'local', 'ray', 'spark'"),
        ("embed.resize=stretch", "'square', 'short_side', 'center_crop', None"),
        ("embed.dtype=fp8", "'auto', 'float32', 'bf16', 'fp16'"),
        ("embed.decode_backend=gpu", "'auto', 'process', 'thread'"),
        ("embed.input=tars", "'image_record', 'encoded_image'"),
    ],
)
def test_enumerated_settings_name_the_accepted_values(override, accepted):
    with pytest.raises(ConfigError) as error:
        load_config(CurationConfig, [], [override])
    assert accepted in str(error.value)
    assert repr(override.split("=")[1]) in str(error.value)


def test_enumerated_settings_are_checked_when_built_in_code():
    from curation.engines import EngineConfig
    from curation.stages.embed import EmbedConfig

    with pytest.raises(ValueError, match="name must be one of 'local', 'ray', 'spark'; got 'dask'"):
        EngineConfig(name="dask")
    with pytest.raises(ValueError, match="resize must be one of"):
        EmbedConfig(resize="stretch")
    assert EmbedConfig(resize=None).resize is None
