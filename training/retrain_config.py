"""``retrain.yaml``: the settings of a retraining run (docs/retraining.md, section "Configuration").

Every key is optional; unknown keys are refused in one line naming the known ones. The ``gate:`` section is
:class:`training.gate.GateConfig`; ``train:`` overrides the champion's ``TrainConfig`` keys.
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from training.gate import GateConfig


class RetrainConfig(BaseModel):
    """``retrain.yaml``: every key optional; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: str = Field("7d", description="archive records from: a duration back from now, an ISO time or epoch s")
    until: str | None = Field(None, description="archive records before (same forms); None: to the end")
    holdout_frac: float = Field(0.2, gt=0, lt=0.9, description="latest fraction of the records held out")
    max_train_records: int = Field(500_000, ge=100, description="records of the training part read at most: "
                                   "more in range, whole blocks spread over the part are kept up to this")
    max_holdout_records: int = Field(200_000, ge=100, description="records of the held-out part read at most "
                                     "(same rule)")
    sample_block: str = Field("1h", description="event-time block the sample keeps or leaves whole (a duration)")
    min_train_records: int = Field(100, ge=10, description="fewer training records after exclusion: refuse to train")
    speed_records: int = Field(20_000, ge=10, description="records of the held-out slice timed for scoring speed")
    speed_repeats: int = Field(5, ge=1, le=20, description="timed repeats per model (the fastest counts)")
    promote: bool = Field(True, description="promote a challenger that passes the gate")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides over the champion's")
    gate: GateConfig = Field(default_factory=GateConfig)

    @field_validator("sample_block")
    @classmethod
    def _block(cls, v: str) -> str:
        from ingest.windows import parse_duration

        if parse_duration(v) <= 0:
            raise ValueError(f"sample_block {v!r}: give a positive duration (e.g. 1h)")
        return v

    @field_validator("since", "until", mode="before")
    @classmethod
    def _time_text(cls, v: Any) -> Any:
        """An unquoted YAML date/time (``since: 2026-12-01``) arrives as a date: keep it as ISO text (UTC)."""
        import datetime as dt

        if isinstance(v, dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)).isoformat()
        if isinstance(v, dt.date):
            return f"{v.isoformat()}T00:00:00Z"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        return v


def train_fields() -> set[str]:
    from training.pretrain import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def load_config(path: str | os.PathLike | None) -> RetrainConfig:
    """``RetrainConfig`` from a YAML file (safe loader, duplicate keys refused); ValueError in one line naming
    the key and the rule."""
    if path is None:
        return RetrainConfig()
    import yaml

    from detector.daemon.config import _UniqueKeyLoader

    p = Path(path)
    text = p.read_text()
    try:
        data = _UniqueKeyLoader.parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{p}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level must be a mapping of keys ({', '.join(RetrainConfig.model_fields)}), "
                         f"got a {type(data).__name__}")
    try:
        cfg = RetrainConfig(**data)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = e["loc"][0] if len(e["loc"]) > 1 else None
            known = GateConfig.model_fields if parent == "gate" else RetrainConfig.model_fields
            raise ValueError(f"{p}: unknown key {key!r} (known{f' in {parent}' if parent else ''}: "
                             f"{', '.join(known)})") from None
        raise ValueError(f"{p}: {key}: {e['msg']} (got {e.get('input')!r})") from None
    bad = sorted(set(cfg.train) - train_fields())
    if bad:
        raise ValueError(f"{p}: unknown key 'train.{bad[0]}' (known in train: {', '.join(sorted(train_fields()))})")
    return cfg


__all__ = ["RetrainConfig", "load_config", "train_fields"]
