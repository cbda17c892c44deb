"""One frozen NodeConfig, folded from defaults, the config file and CLI flags.

Nothing else reads the environment: ``cli.py`` passes ``os.environ`` to
:func:`resolve_data_dir`, and every module receives the resulting config.
The config file is ``<data dir>/config.toml``; unknown keys are an error so a
typo does not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.content.segment import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE
from node.market.pricing import PricingError, PricingPolicy
from node.storage.atomic import write_file_atomically
from node.tiers import (
    DEFAULT_TIER_POLICIES,
    TIER_NAMES,
    TierPolicy,
    TierPolicyError,
    policies_from_toml,
    policies_to_toml,
)

CONFIG_FILE = "config.toml"
DEFAULT_DATA_DIR = Path.home() / ".zhtp"
DATA_DIR_ENV = "ZHTP_PATH"

MIN_REPLICATION = 3
MAX_REPLICATION = 12


DEFAULT_PRICING = PricingPolicy()


class ConfigError(Exception):
    """A config file or flag that cannot be used; the message names it."""


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    # Where the libp2p host listens; /tcp/0 picks a free port.
    listen_addrs: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4001",)
    # Extra bootstrap peers (full multiaddrs with /p2p/<id>).
    bootstrap: tuple[str, ...] = ()
    # Also dial the project's default list in bootstrap/peers.txt.
    use_default_bootstrap: bool = True
    # Kademlia
    k: int = 20
    alpha: int = 3
    replication: int = 5
    request_timeout: float = 5.0
    bucket_refresh_interval: float = 600.0
    # Records
    max_record_size: int = 1 << 20
    republish_interval: float = 3600.0
    expiry_check_interval: float = 60.0
    provider_ttl: float = 24 * 3600.0
    # The local control API (127.0.0.1 only); port 0 picks a free one.
    api_host: str = "127.0.0.1"
    api_port: int = 0
    # Storage this node offers (advertised in Pong; enforced by the store).
    max_storage_bytes: int = 10 << 30
    tiers: tuple[str, ...] = ("hot", "warm", "cold", "archive")
    # Files: segment size for new puts, the tier used when none is named,
    # and how each tier stores a file (see node/tiers.py).
    segment_size: int = 1 << 20
    default_tier: str = "warm"
    tier_policy: tuple[TierPolicy, ...] = DEFAULT_TIER_POLICIES
    # How often a node checks the files whose manifests it is closest to,
    # and rebuilds shards that lost every holder (see node/files/repair.py).
    repair_interval: float = 3600.0
    # Market: how long a quote this node gives stays valid; tokens a testnet
    # faucet grants this node once (0: none, as on a real network); and the
    # price list ([pricing], see node/market/pricing.py).
    quote_validity: float = 600.0
    faucet_tokens: int = 0
    # Storage deals this node makes as a client: how long they run, how often
    # a period is judged (audited, then paid or penalised), how many audits
    # a period gets. Holders refuse shards no contract covers unless
    # require_contracts is false (a private network that needs no market).
    deal_duration: float = 30 * 86_400.0
    deal_period: float = 86_400.0
    audits_per_period: int = 4
    require_contracts: bool = True
    pricing: PricingPolicy = DEFAULT_PRICING
    # Connections
    dial_timeout: float = 5.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not MIN_REPLICATION <= self.replication <= MAX_REPLICATION:
            raise ConfigError(
                f"replication must be {MIN_REPLICATION}..{MAX_REPLICATION}, got {self.replication}"
            )
        if self.k < 1 or self.alpha < 1:
            raise ConfigError("k and alpha must be at least 1")
        for name in (
            "request_timeout",
            "republish_interval",
            "expiry_check_interval",
            "bucket_refresh_interval",
            "provider_ttl",
            "dial_timeout",
            "repair_interval",
            "quote_validity",
            "deal_duration",
            "deal_period",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.api_host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("api_host must be a loopback address: the API has no authentication")
        if not self.listen_addrs:
            raise ConfigError("listen_addrs must not be empty")
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise ConfigError(f"segment_size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes")
        unknown_tiers = sorted(set(self.tiers) - set(TIER_NAMES))
        if unknown_tiers:
            raise ConfigError(f"tiers: unknown tier {', '.join(unknown_tiers)}")
        names = [p.name for p in self.tier_policy]
        if sorted(names) != sorted(TIER_NAMES):
            raise ConfigError(f"tier_policy must define each of {', '.join(TIER_NAMES)} once")
        if int(self.deal_duration * 1000) % int(self.deal_period * 1000):
            raise ConfigError("deal_duration must be a whole number of deal_period")
        if not 1 <= self.audits_per_period <= 1000:
            raise ConfigError("audits_per_period must be 1..1000")
        if not 0 <= self.faucet_tokens <= 10**12:
            raise ConfigError("faucet_tokens must be 0..10^12")
        if self.default_tier not in TIER_NAMES:
            raise ConfigError(f"default_tier must be one of {', '.join(TIER_NAMES)}")

    def policy(self, tier: str) -> TierPolicy:
        for p in self.tier_policy:
            if p.name == tier:
                return p
        raise ConfigError(f"unknown tier {tier!r} (known: {', '.join(TIER_NAMES)})")

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    def replace(self, **changes: Any) -> NodeConfig:
        return dataclasses.replace(self, **changes)


_TABLE_KEYS = {"tier_policy", "pricing"}
_FILE_KEYS = {f.name for f in dataclasses.fields(NodeConfig)} - {"data_dir"} - _TABLE_KEYS


def resolve_data_dir(flag: str | None, environ: Mapping[str, str]) -> Path:
    """``--data-dir`` wins over ``ZHTP_PATH``, which wins over ``~/.zhtp``."""
    if flag:
        return Path(flag).expanduser().resolve()
    if environ.get(DATA_DIR_ENV):
        return Path(environ[DATA_DIR_ENV]).expanduser().resolve()
    return DEFAULT_DATA_DIR


def _coerce(name: str, value: Any) -> Any:
    default = NodeConfig.__dataclass_fields__[name].default
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string")
    return value


def load_config(data_dir: Path, **overrides: Any) -> NodeConfig:
    """Defaults, then ``config.toml`` if present, then non-None ``overrides``."""
    values: dict[str, Any] = {}
    path = data_dir / CONFIG_FILE
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: {error}") from error
        unknown = sorted(set(raw) - _FILE_KEYS - _TABLE_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown setting {', '.join(unknown)}")
        values = {
            name: _coerce(name, value) for name, value in raw.items() if name not in _TABLE_KEYS
        }
        if "tier_policy" in raw:
            try:
                values["tier_policy"] = policies_from_toml(
                    raw["tier_policy"], DEFAULT_TIER_POLICIES
                )
            except TierPolicyError as error:
                raise ConfigError(f"{path}: {error}") from error
        if "pricing" in raw:
            try:
                values["pricing"] = PricingPolicy.from_mapping(raw["pricing"])
            except PricingError as error:
                raise ConfigError(f"{path}: pricing: {error}") from error
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return NodeConfig(data_dir=data_dir, **values)
    except (TypeError, TierPolicyError) as error:
        raise ConfigError(str(error)) from error


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_config(config: NodeConfig) -> Path:
    """Write every setting to ``config.toml`` (atomically) so the file documents them."""
    lines = ["# ZHTP node configuration; every setting is listed with its current value.\n"]
    for f in dataclasses.fields(NodeConfig):
        if f.name in _FILE_KEYS:
            lines.append(f"{f.name} = {_toml_value(getattr(config, f.name))}\n")
    lines.append(policies_to_toml(config.tier_policy))
    lines.append("\n[pricing]\n")
    for f in dataclasses.fields(PricingPolicy):
        lines.append(f"{f.name} = {_toml_value(getattr(config.pricing, f.name))}\n")
    path = config.config_path
    write_file_atomically(path, "".join(lines).encode(), mode=0o644)
    return path
