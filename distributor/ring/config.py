"""`distributor.ring` settings: where the replicas heartbeat, and how often.

Tempo's distributor ring keeps its members in a key-value store (`kvstore`: memberlist, consul, etcd);
here the replicas heartbeat in PostgreSQL, the database they may already share for the usage ledger.
`heartbeat_period`, `heartbeat_timeout` and `instance_id` keep Tempo's names and meaning.
"""

from __future__ import annotations

from distributor.common.config_fields import read_settings, setting, setting_keys, settings
from distributor.common.config_reader import Foreign, Section, foreign_keys
from distributor.ledger.config import mask_dsn
from distributor.overrides.model import RATE_STRATEGY_GLOBAL as GLOBAL
from distributor.overrides.model import OverridesSnapshot

RING_BACKENDS = ("none", "postgresql")

_TEMPO_RING = "a setting of Tempo's distributor ring this service does not use"
RING_FOREIGN: Foreign = foreign_keys(
    {
        "kvstore": "Tempo's ring store; here distributor.ring.backend says where replicas heartbeat",
        "graceful_period": _TEMPO_RING,
        "instance_interface_names": _TEMPO_RING,
        "instance_port": _TEMPO_RING,
        "instance_addr": _TEMPO_RING,
    }
)


@settings
class RingConfig:
    # none: this replica counts as the only one (a `global` tenant gets its whole rate here).
    backend: str = setting(default="none", choices=RING_BACKENDS)
    # libpq's URL or key=value form; it may carry a password, so it is only ever shown masked.
    postgresql_dsn: str = setting(default="", key="dsn", within="postgresql", render=mask_dsn)
    # Connecting, and each heartbeat's statements: a heartbeat never waits longer on the database.
    postgresql_timeout: float = setting(default=5.0, positive=True, key="timeout", within="postgresql")
    heartbeat_period: float = setting(default=5.0, positive=True)
    # A replica whose last heartbeat is older is not counted (Tempo's default is 1m).
    heartbeat_timeout: float = setting(default=15.0, positive=True)
    # Blank: hostname, process id and a random suffix, so a restarted replica is a new member.
    instance_id: str = setting(default="")


def parse_ring(parent: Section) -> RingConfig:
    section = parent.section("ring", setting_keys(RingConfig), RING_FOREIGN)
    config = read_settings(section, RingConfig)
    if config.backend == "postgresql" and not config.postgresql_dsn:
        section.reopened("postgresql").fail(
            "dsn", "the PostgreSQL connection string is required for backend postgresql"
        )
    if config.heartbeat_timeout <= config.heartbeat_period:
        section.fail("heartbeat_timeout", "must be longer than heartbeat_period, or live replicas drop out")
    return config


def global_rate_tenants(snapshot: OverridesSnapshot) -> list[str]:
    """The tenants whose rate strategy is global, and "every other tenant" when the defaults (or the
    `*` entry) make it global for tenants without overrides of their own."""
    tenants = [tenant for tenant in snapshot.tenants() if snapshot.for_tenant(tenant).rate_strategy == GLOBAL]
    if snapshot.for_tenant("").rate_strategy == GLOBAL:
        tenants.append("every other tenant")
    return tenants


def without_ring_note(tenants: list[str]) -> str:
    """What an operator is told when tenants are `global` but there is no ring to divide their rate."""
    shown = ", ".join(tenants[:5]) + (f" and {len(tenants) - 5} more" if len(tenants) > 5 else "")
    return (
        f"none: ingestion.rate_strategy global ({shown}) works as local, each replica applying the whole "
        "rate, since without a ring a replica cannot see the others; set distributor.ring.backend"
    )
