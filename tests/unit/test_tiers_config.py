"""The tier policy table: defaults, overrides from config.toml, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig, load_config, write_config
from node.tiers import DEFAULT_TIER_POLICIES, TIER_NAMES, TierPolicy, TierPolicyError


def test_defaults_cover_every_tier_once() -> None:
    assert sorted(p.name for p in DEFAULT_TIER_POLICIES) == sorted(TIER_NAMES)
    config = NodeConfig(data_dir=Path("/nonexistent"))
    assert (config.policy("warm").k, config.policy("warm").m) == (4, 2)


def test_written_config_reads_back_identically(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path, segment_size=4 << 20, default_tier="cold")
    write_config(config)
    assert load_config(tmp_path) == config


def test_a_tier_table_overrides_only_what_it_names(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[tier_policy.archive]\nk = 12\n")
    archive = load_config(tmp_path).policy("archive")
    default = next(p for p in DEFAULT_TIER_POLICIES if p.name == "archive")
    assert archive == TierPolicy(
        "archive", 12, default.m, default.holders_per_shard, default.price_percent
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[tier_policy.lukewarm]\nk = 4\n", "tier_policy.lukewarm: unknown tier"),
        ("[tier_policy.hot]\nk = 0\n", "need k >= 1"),
        ("[tier_policy.hot]\nm = -1\n", "need k >= 1, m >= 0"),
        ("[tier_policy.hot]\nk = 60\nm = 10\n", "k + m <= 64"),
        ("[tier_policy.hot]\nholders = 13\n", "holders must be 1..12"),
        ("[tier_policy.hot]\nprice_percent = 0\n", "price_percent must be positive"),
        ("[tier_policy.hot]\nk = 4.5\n", "tier_policy.hot.k must be an integer"),
        ("[tier_policy.hot]\ncolour = 1\n", "unknown setting colour"),
        ("tier_policy = 3\n", "tier_policy must be a table"),
        ('default_tier = "tepid"\n', "default_tier must be one of"),
        ('tiers = ["hot", "lava"]\n', "tiers: unknown tier lava"),
        ("segment_size = 1000\n", "segment_size must be"),
    ],
)
def test_bad_tier_settings_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("+", r"\+").replace(".", r"\.")):
        load_config(tmp_path)


def test_policy_refuses_an_unknown_tier_name() -> None:
    with pytest.raises(TierPolicyError):
        TierPolicy("tepid", k=4, m=2, holders_per_shard=1, price_percent=100)
    with pytest.raises(ConfigError, match="unknown tier"):
        NodeConfig(data_dir=Path("/x")).policy("tepid")
