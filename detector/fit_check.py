"""Does the model fit the traffic? The flagged share against the rate the threshold was calibrated for.

A model calibrated on one network's benign traffic flags about ``target_fpr`` of benign records
there. On a network it does not fit it flags far more (the demo model flags 84-99.5% of benign
records of other captures against a 1% target). The rule, over at least ``min_records`` scored
records: warn when the flagged share is above ``factor`` x the target *and* above ``floor``.
An attack can raise the share too, but a share many times the target over thousands of records
is far more often a model that does not fit.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_RECORDS = 2000
FACTOR = 5.0
FLOOR = 0.05
DEFAULT_TARGET = 0.01  # what `graphsentry calibrate` targets when a model does not say


@dataclass
class FitVerdict:
    flagged: int
    records: int
    target_fpr: float
    fits: bool
    enough: bool

    @property
    def share(self) -> float:
        return self.flagged / self.records if self.records else 0.0

    def message(self, model: str = "MODEL") -> str:
        """The one-line warning (empty when the model fits or there is too little data)."""
        if self.fits or not self.enough:
            return ""
        return (f"{self.share:.1%} of {self.records} scored records flagged, against a calibrated target of "
                f"{self.target_fpr:.1%}: unless this is a large attack, this model does not fit this network: "
                f"recalibrate on its benign traffic "
                f"with `graphsentry calibrate BENIGN_DATA --model {model} --out {model}-recalibrated`, "
                "or retrain")


def check_fit(flagged: int, records: int, target_fpr: float | None, min_records: int = MIN_RECORDS,
              factor: float = FACTOR, floor: float = FLOOR) -> FitVerdict:
    """Apply the rule to ``flagged`` of ``records`` scored records."""
    target = float(target_fpr) if target_fpr is not None and target_fpr > 0 else DEFAULT_TARGET
    enough = records >= min_records
    share = flagged / records if records else 0.0
    bad = enough and share > factor * target and share > floor
    return FitVerdict(int(flagged), int(records), target, not bad, enough)


class FitWindow:
    """The rule over the last ``size`` scored records (the daemon's running check).

    :meth:`add` takes per-window counts; :meth:`verdict` judges the most recent ``size`` records
    (whole windows, oldest dropped first).
    """

    def __init__(self, size: int = 10_000, min_records: int = MIN_RECORDS, factor: float = FACTOR,
                 floor: float = FLOOR) -> None:
        self.size, self.min_records, self.factor, self.floor = int(size), int(min_records), factor, floor
        self._parts: deque[tuple[int, int]] = deque()
        self.records = 0
        self.flagged = 0

    def add(self, flagged: int, records: int) -> None:
        self._parts.append((int(flagged), int(records)))
        self.flagged += int(flagged)
        self.records += int(records)
        while self._parts and self.records - self._parts[0][1] >= self.size:
            f, n = self._parts.popleft()
            self.flagged -= f
            self.records -= n

    @property
    def share(self) -> float:
        return self.flagged / self.records if self.records else 0.0

    def verdict(self, target_fpr: float | None) -> FitVerdict:
        return check_fit(self.flagged, self.records, target_fpr, self.min_records, self.factor, self.floor)

    def reset(self) -> None:
        self._parts.clear()
        self.records = self.flagged = 0
