"""Time constants and sizes of behaviour state, in one place (they go into the checkpoint JSON)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["BehaviourParams"]


@dataclass(frozen=True)
class BehaviourParams:
    capacity: int = 200_000      # keys per entity kind (sources, pairs, services), least recently seen evicted
    horizon_s: float = 86_400.0  # an entity silent this long starts over (its state is forgotten)
    min_gap_s: float = 0.5       # flows of a pair closer than this are one arrival (a beacon's burst)
    ew_alpha: float = 1.0 / 16   # weight of the newest gap / size in the running mean and variance
    tau_rate_s: float = 60.0     # decay of attempt counts: the decayed count is ~ attempts per minute
    tau_bytes_s: float = 3_600.0  # decay of uploaded / downloaded bytes: ~ bytes per hour
    tau_new_dst_s: float = 3_600.0  # decay of a source's new-destination count: ~ new destinations per hour
    tau_port_s: float = 86_400.0  # decay of a host's per-port counts
    tau_svc_s: float = 600.0     # decay of a service's flow and failure counts
    top_ports: int = 8           # ports remembered per host (bounded top-k of decayed counts)
    age_cap_s: float = 86_400.0  # ages (time since a failure streak) are capped here; "never" = the cap
    hash_seed: int = 0x5EED      # seed of the entity-key hashes (e.g. from a seeded generator); kept in checkpoints

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> BehaviourParams:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
