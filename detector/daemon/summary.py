"""The summary of one daemon run."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

log = logging.getLogger("detector.daemon.pipeline")


@dataclass
class DaemonSummary:
    """What one run of the daemon did (returned by :func:`run_daemon`)."""

    records_in: int = 0
    records_scored: int = 0
    malformed: dict = field(default_factory=dict)
    late: int = 0
    invalid: int = 0
    windows_scored: int = 0
    alerts: int = 0
    flagged_records: int = 0
    alerts_by_severity: dict = field(default_factory=dict)
    alerts_by_technique: dict = field(default_factory=dict)
    model_version: str = ""
    model_reloads: int = 0
    committed: dict = field(default_factory=dict)
    sinks: list = field(default_factory=list)
    metrics_url: str | None = None
    duration_s: float = 0.0
    stopped_by: str = ""
    event_to_alert_p50_s: float | None = None
    event_to_alert_p99_s: float | None = None
    archived: int = 0              # records written durably to the archive (archive section)
    archive_duplicates: int = 0    # records the archive already held (re-read after a restart), not written again

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """A short human summary (``make run`` prints it)."""
        lines = [
            f"records read {self.records_in}, scored {self.records_scored}, late {self.late}, "
            f"malformed {sum(self.malformed.values())} {dict(self.malformed) or ''}".rstrip(),
            f"windows scored {self.windows_scored}; {self.flagged_records} flagged records -> "
            f"{self.alerts} alerts (after aggregation per source and technique)",
        ]
        if self.alerts_by_severity:
            lines.append("by severity: " + ", ".join(f"{k} {v}" for k, v in sorted(self.alerts_by_severity.items())))
        if self.alerts_by_technique:
            top = sorted(self.alerts_by_technique.items(), key=lambda kv: -kv[1])[:8]
            lines.append("by technique: " + ", ".join(f"{k} {v}" for k, v in top))
        lines.append(f"model {self.model_version} ({self.model_reloads} reloads); {self.duration_s:.1f} s; "
                     f"stopped by {self.stopped_by}")
        for s in self.sinks:
            lines.append(f"alerts in: {s}")
        if self.archived or self.archive_duplicates:
            lines.append(f"archived {self.archived} scored records ({self.archive_duplicates} already in the archive)")
        return "\n".join(lines)
