"""The leave-one-network-out splits: the shared flow inputs (IoT-23 and Stratosphere captures, LUFlow days,
CIC-IDS2017 families), one :class:`SplitSpec` per held-out network, and the time-ordered, capped train and
test tables of a split (:func:`build`).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "flows"


GAP_DAYS = 3.0
CIC_TRAIN_FRAC = 0.7


# -- reading ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def read_file(path: str) -> pa.Table:
    from ingest.readers import open_inputs

    return pa.Table.from_batches(list(open_inputs([path])))


def _concat(tables: list[pa.Table]) -> pa.Table:
    from training.pretrain import as_table

    t = as_table(tables)
    return t.set_column(t.schema.get_field_index("row"), "row", pa.array(np.arange(t.num_rows), pa.int64()))


def time_sorted(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, sort_keys=[("ts", "ascending"), ("row", "ascending")]))


def stride(t: pa.Table, cap: int) -> tuple[pa.Table, dict]:
    """Time-sort ``t`` and keep ``cap`` records evenly spaced over it (all when ``cap <= 0`` or fewer)."""
    t = time_sorted(t)
    n = t.num_rows
    info = {"rows_in": n, "rows_kept": n, "method": "all"}
    if cap > 0 and n > cap:
        idx = np.floor(np.arange(cap) * (n / cap)).astype(np.int64)
        t = t.take(pa.array(idx))
        info = {"rows_in": n, "rows_kept": cap, "method": f"even stride over time-sorted records (1 in {n / cap:.2f})"}
    return _concat([t]), info


def ts_seconds(t: pa.Table) -> np.ndarray:
    return t.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6


# -- splits ----------------------------------------------------------------------------------------------

@dataclass
class SplitSpec:
    name: str
    group: str                 # iot23 | stratosphere | luflow | cicids2017
    held_out: str              # the network (capture / days / family) that never trains
    train_files: list[str]
    test_files: list[str]
    notes: str = ""
    family: str | None = None  # cicids2017: the held-out attack family


@dataclass
class Split:
    spec: SplitSpec
    train: pa.Table
    test: pa.Table
    sampling: dict = field(default_factory=dict)


def zeek_captures(data: Path) -> dict[str, Path]:
    """``group/capture`` -> file, for every IoT-23 and Stratosphere capture present."""
    out: dict[str, Path] = {}
    for f in sorted((data / "iot23").glob("*-labeled.csv")):
        out[f"iot23/{f.name.replace('-labeled.csv', '')}"] = f
    for f in sorted((data / "stratosphere").glob("*")):
        if f.is_file() and ("conn.log" in f.name):
            out[f"stratosphere/{f.name.split('.')[0]}"] = f
    return out


def luflow_days(data: Path) -> list[tuple[dt.date, Path]]:
    out = []
    for f in sorted((data / "luflow").glob("*.zip")):
        m = re.fullmatch(r"(\d{4})\.(\d{2})\.(\d{2})\.zip", f.name)
        if m:
            out.append((dt.date(*map(int, m.groups())), f))
    return sorted(out)


def luflow_cut(days: list[dt.date], gap_days: float = GAP_DAYS) -> int | None:
    """Index of the first test day: after the *first* run of >= ``gap_days`` days without data (None when
    there is none). The first, not the latest: in the shared copy only the days up to 2020-12-16 hold
    labelled attacks (2020-12-17 onwards are all benign), so a later cut would leave a test set without
    attacks; the benign-only later days still count for the benign FPR."""
    for i in range(1, len(days)):
        if (days[i] - days[i - 1]).days - 1 >= gap_days:
            return i
    return None


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_")


def cic_families(data: Path) -> dict[str, Path]:
    """Attack family name (as in the ``attack`` column) -> file."""
    out = {}
    for f in sorted((data / "cicids2017").glob("*.csv")):
        if f.name.startswith("BENIGN"):
            continue
        fam = re.sub(r"_\d+$", "", f.stem).replace("_", " ")
        out[fam] = f
    return out


def split_specs(data: Path = DATA) -> list[SplitSpec]:
    """Every split the data present allows, in priority order (IoT-23, Stratosphere, LUFlow, CIC-IDS2017)."""
    specs: list[SplitSpec] = []
    caps = zeek_captures(data)
    for name, f in caps.items():
        group = name.split("/")[0]
        others = [str(p) for n, p in caps.items() if n != name]
        note = ("Honeypot capture: benign-only, so only the benign FPR is measured. " if "Honeypot" in name else "")
        if name == "stratosphere/001-zeek-scenario-malicious":
            note += "Only 9 benign flows (739 background, excluded from metrics): FPR and AUROC are very coarse. "
        specs.append(SplitSpec(name, group, f"{group} capture {f.name}", others, [str(f)],
                               note + "Training: every other IoT-23 and Stratosphere capture (one generic Zeek "
                                      "model); cross-capture, not time-ordered."))
    days = luflow_days(data)
    cut = luflow_cut([d for d, _ in days])
    if cut is not None:
        tr, te = days[:cut], days[cut:]
        specs.append(SplitSpec("luflow/later-days", "luflow", f"LUFlow days {te[0][0]} .. {te[-1][0]}",
                               [str(p) for _, p in tr], [str(p) for _, p in te],
                               f"Training days {', '.join(str(d) for d, _ in tr)}; test days "
                               f"{', '.join(str(d) for d, _ in te)}; >= {GAP_DAYS:g} days without data between "
                               "them (enforced on the records' timestamps). 'outlier' records are excluded "
                               "from the metrics. Addresses are anonymised to AS numbers, so an episode is an "
                               "AS -> AS pair within one hour."))
    benign = sorted((data / "cicids2017").glob("BENIGN*.csv"))
    fams = cic_families(data)
    if benign:
        for fam, f in fams.items():
            specs.append(SplitSpec(
                f"cicids2017/{_slug(fam)}", "cicids2017", f"CIC-IDS2017 family {fam}",
                [str(benign[0])] + [str(p) for g, p in fams.items() if g != fam], [str(benign[0]), str(f)],
                f"Benign flows split in time (earliest {CIC_TRAIN_FRAC:.0%} train, latest test); training also "
                f"holds the other families' flows up to the cut (dropped by benign-only training: they only "
                f"serve the validation-based choices); test: the later benign flows + every '{fam}' flow "
                "(a family's flows may predate the cut: it is never trained on, but the family split is not "
                "a forecast in time). Per-class random sample: sparse windows, weak graph context.",
                family=fam))
    return specs


def select(specs: list[SplitSpec], patterns: str | None) -> list[SplitSpec]:
    """Specs whose name matches any comma-separated fnmatch pattern (a bare group name matches the group)."""
    if not patterns:
        return specs
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    pats = [p if any(c in p for c in "*?[/") else f"{p}/*" for p in pats]
    return [s for s in specs if any(fnmatch.fnmatchcase(s.name, p) for p in pats)]


def build(spec: SplitSpec, max_train: int, max_test: int) -> Split:
    """Load the tables of ``spec`` (capped by an even stride over time)."""
    if spec.group in ("iot23", "stratosphere"):
        train = _concat([read_file(f) for f in spec.train_files])
        test = _concat([read_file(f) for f in spec.test_files])
        host = local_host(test)
        extra = {"held_out_host": host, "held_out_host_in_training": host in ips(train)}
    elif spec.group == "luflow":
        train = _concat([read_file(f) for f in spec.train_files])
        test = _concat([read_file(f) for f in spec.test_files])
        last = float(ts_seconds(train).max())
        keep = ts_seconds(test) >= last + GAP_DAYS * 86400
        extra = {"test_dropped_inside_gap": int((~keep).sum()), "gap_days": GAP_DAYS}
        test = _concat([test.filter(pa.array(keep))])
    elif spec.group == "cicids2017":
        ben = read_file(spec.train_files[0])
        ts = ts_seconds(ben)
        cut = float(np.quantile(ts, CIC_TRAIN_FRAC))
        others = [read_file(f) for f in spec.train_files[1:]]
        others = [o.filter(pa.array(ts_seconds(o) <= cut)) for o in others]
        train = _concat([ben.filter(pa.array(ts <= cut))] + others)
        test = _concat([ben.filter(pa.array(ts > cut)), read_file(spec.test_files[1])])
        extra = {"benign_cut": dt.datetime.fromtimestamp(cut, dt.timezone.utc).isoformat()}
    else:
        raise ValueError(f"unknown group {spec.group!r}")
    train, tr_info = stride(train, max_train)
    test, te_info = stride(test, max_test)
    return Split(spec, train, test, {"train": tr_info, "test": te_info, **extra})


def local_host(t: pa.Table) -> str | None:
    """The monitored host of a capture: the most frequent source address of its non-malicious flows."""
    lab = t.column("label").to_numpy(zero_copy_only=False) if "label" in t.column_names else np.zeros(t.num_rows)
    keep = pa.array(np.asarray(lab) != 1)
    vc = pc.value_counts(t.filter(keep).column("src_ip")) if t.num_rows else []
    best = max(vc.to_pylist(), key=lambda d: d["counts"], default=None) if len(vc) else None
    return best["values"] if best else None


def ips(t: pa.Table) -> set:
    return set(pc.unique(t.column("src_ip")).to_pylist()) | set(pc.unique(t.column("dst_ip")).to_pylist())
