"""Config loading: frozen dataclasses, unknown keys raise, hashes are stable."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from omnirec.config import ConfigError, config_hash, from_dict, load_toml
from omnirec.models.itemknn import ItemKNNConfig


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)


def test_nested_and_coerced():
    cfg = from_dict(Outer, {"inner": {"rate": 1}, "sizes": [3, 4]})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float) and cfg.sizes == (3, 4)


def test_unknown_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"unknown key 'rte' in Outer.inner"):
        from_dict(Outer, {"inner": {"rte": 1}})


def test_wrong_type_and_invalid_value():
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(ItemKNNConfig, {"k": "ten"})
    with pytest.raises(ConfigError, match="k >= 1"):
        from_dict(ItemKNNConfig, {"k": 0})


def test_hash_is_stable_and_sensitive():
    assert config_hash(ItemKNNConfig()) == config_hash(ItemKNNConfig())
    assert config_hash(ItemKNNConfig(k=5)) != config_hash(ItemKNNConfig())


def test_toml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_toml(bad)


def test_nested_table_keeps_the_models_own_defaults_for_keys_it_does_not_set():
    from omnirec.models.neumf import NeuMFConfig

    default = NeuMFConfig().train
    assert default.eval_every == 2  # NeuMF validates every other epoch, unlike the loop's default of 1
    config = from_dict(NeuMFConfig, {"train": {"lr": 0.01}})
    assert config.train.lr == 0.01 and config.train.eval_every == 2 and config.train.batch_size == default.batch_size
