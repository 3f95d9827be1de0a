"""The scorer's long-horizon behaviour state across restarts: checkpoints written with the source
positions they cover, and the daemon's side of it (resume, checkpoint at clean instants, carry over a
model swap, metrics). docs/daemon-operations.md, "Behaviour state across restarts"."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from detector.daemon.helpers import _opt
from detector.daemon.ledger import DoneFrontier, GatedOffsets
from ingest.archive import fsync_dir

log = logging.getLogger("detector.daemon.pipeline")


def _behaviour_params_json(scorer: Any) -> dict | None:
    """The behaviour parameters ``scorer`` runs (or would run) its state with, as JSON; None when off."""
    if not getattr(scorer, "behaviour_enabled", False) or not hasattr(scorer, "restore_behaviour"):
        return None
    st = getattr(scorer, "behaviour", None)
    if st is not None:
        return st.params.to_json()
    from ingest.behaviour import BehaviourParams

    p = getattr(scorer, "behaviour_params", None)
    if isinstance(p, dict):
        p = BehaviourParams.from_json(p)
    return (p if isinstance(p, BehaviourParams) else BehaviourParams()).to_json()


class BehaviourCheckpoints:
    """Behaviour-state checkpoints in one directory: ``behaviour-<seq>/`` holds the state
    (``BehaviourState.save``: ``behaviour.json`` + ``behaviour.npz``) and ``checkpoint.json`` (the source
    positions the state covers, the source, the state's ``flows_seen``). A checkpoint is written into a
    hidden temporary directory, fsynced, and renamed into place: a crash leaves whole checkpoints only.
    The newest ``keep`` are kept (a crash between a save and the offset commit that follows it resumes
    from the one before, whose positions were committed)."""

    PREFIX = "behaviour-"
    VERSION = 1

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, int(keep))
        self._seq: int | None = None

    def _all(self) -> list[tuple[int, Path]]:
        out = []
        try:
            entries = list(self.dir.iterdir())
        except OSError:
            return []
        for p in entries:
            if p.name.startswith(self.PREFIX) and p.is_dir():
                try:
                    out.append((int(p.name[len(self.PREFIX):]), p))
                except ValueError:
                    continue
        return sorted(out, reverse=True)

    def candidates(self) -> list[tuple[Path, dict | Exception]]:
        """Newest first: ``(path, checkpoint.json's dict)``, or the exception reading it raised."""
        out: list = []
        for _seq, p in self._all():
            try:
                meta = json.loads((p / "checkpoint.json").read_text())
                if not isinstance(meta, dict) or meta.get("version") != self.VERSION \
                        or not isinstance(meta.get("positions"), dict):
                    raise ValueError("not a behaviour checkpoint of this version")
                out.append((p, meta))
            except (OSError, ValueError) as exc:
                out.append((p, exc))
        return out

    @staticmethod
    def load(path: Path, meta: dict):
        from ingest.behaviour import BehaviourState

        state = BehaviourState.load(path)
        if int(state.flows_seen) != int(meta.get("flows_seen", -1)):
            raise ValueError(f"state holds {state.flows_seen} flows, checkpoint.json says {meta.get('flows_seen')}")
        return state

    def save(self, state: Any, positions: dict[str, int], source: dict, model_version: str) -> Path:
        import shutil

        self.dir.mkdir(parents=True, exist_ok=True)
        if self._seq is None:
            have = self._all()
            self._seq = have[0][0] if have else 0
            for p in self.dir.glob("." + self.PREFIX + "*.tmp"):  # left by a crash mid-save
                shutil.rmtree(p, ignore_errors=True)
        self._seq += 1
        name = f"{self.PREFIX}{self._seq:012d}"
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        state.save(tmp)
        meta = {"version": self.VERSION, "positions": dict(positions), "source": source,
                "flows_seen": int(state.flows_seen), "keys": state.sizes(), "model_version": model_version,
                "saved_at": time.time()}
        with open(tmp / "checkpoint.json", "w") as f:
            f.write(json.dumps(meta, indent=1))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        os.replace(tmp, self.dir / name)
        fsync_dir(self.dir)
        for _seq, p in self._all()[self.keep:]:
            shutil.rmtree(p, ignore_errors=True)
        return self.dir / name


class BehaviourStage:
    """:class:`~detector.daemon.pipeline.Daemon`'s behaviour (a part of the one class, kept in its own module)."""

    # -- long-horizon behaviour state (checkpointed with the positions it covers) -----------------------
    def _behaviour_cfg(self) -> dict:
        """``pipeline.behaviour_*`` as ``{state_dir, checkpoint_interval, keep}``."""
        p = self.cfg.get("pipeline") or {}
        return {"state_dir": p.get("behaviour_state_dir"),
                "checkpoint_interval": _opt(p, "behaviour_checkpoint_interval", 30.0),
                "keep": _opt(p, "behaviour_checkpoints_kept", 3)}

    def _source_id(self) -> dict:
        """What the checkpoint's positions are positions in (a checkpoint of another source never loads)."""
        if self.cfg["source"]["type"] == "kafka":
            k = self.cfg["kafka"]
            return {"type": "kafka", "topic": k["topic"], "group_id": k.get("group_id")}
        return {"type": "file", "paths": [str(p) for p in self.cfg["source"].get("paths") or []]}

    def _setup_behaviour_store(self, model: Any) -> None:
        """Checkpoints on when ``pipeline.behaviour_state_dir`` is set and the model's scorer keeps a
        behaviour state."""
        d = self._behaviour_cfg().get("state_dir")
        if not d:
            return
        if _behaviour_params_json(model.scorer) is None:
            log.info("pipeline.behaviour_state_dir is set but model %s scores without a behaviour state: nothing to "
                     "checkpoint", model.version)
            return
        self._beh_store = BehaviourCheckpoints(d, keep=int(_opt(self._behaviour_cfg(), "keep", 3)))
        self._frontier = DoneFrontier()

    def _resume_behaviour(self, model: Any) -> None:
        """Before the first window: continue from the newest checkpoint whose positions are where the source
        resumed (the first position read of every stream read so far), its source and its parameters
        this scorer's; else a fresh state (a warning says why)."""
        self._beh_resumed = True
        store = self._beh_store
        if store is None:
            return
        params = _behaviour_params_json(model.scorer)
        if params is None:
            return
        seen = self._frontier.firsts()
        source = self._source_id()
        why: list[str] = []
        cands = store.candidates()
        for path, meta in cands:
            if isinstance(meta, Exception):
                why.append(f"{path.name}: unreadable ({meta})")
                continue
            pos = {str(k): int(v) for k, v in meta["positions"].items()}
            if meta.get("source") != source:
                why.append(f"{path.name}: written for source {meta.get('source')}, not {source}")
                continue
            off = {k: (pos[k], seen[k]) for k in pos.keys() & seen.keys() if pos[k] != seen[k]}
            if off:
                k, (have, got) = sorted(off.items())[0]
                hint = " (a file source reads its files from the start)" if k == "file" else ""
                why.append(f"{path.name}: covers {k} up to {have}, but the source resumed at {got}{hint}")
                continue
            try:
                state = store.load(path, meta)
            except Exception as exc:  # noqa: BLE001 - a damaged checkpoint must not stop the daemon
                why.append(f"{path.name}: unreadable ({type(exc).__name__}: {exc})")
                continue
            if state.params.to_json() != params:
                why.append(f"{path.name}: saved with other behaviour parameters than model {model.version}'s")
                continue
            model.scorer.restore_behaviour(state)
            self._follow_evictions(state)
            self._beh_unverified = {k: v for k, v in pos.items() if k not in seen}
            self._beh_last = (pos, int(state.flows_seen))
            log.info("behaviour state resumed from %s: %d flows seen, keys %s, positions %s", path,
                     state.flows_seen, state.sizes(), pos,
                     extra={"event": "behaviour_resumed", "path": str(path), "positions": pos})
            if why:
                log.warning("behaviour checkpoints skipped for an older one: %s", "; ".join(why),
                            extra={"event": "behaviour_checkpoint_skipped"})
            return
        if why:
            log.warning("behaviour state starts fresh: no checkpoint in %s matches: %s", store.dir, "; ".join(why),
                        extra={"event": "behaviour_fresh", "reasons": why})
        else:
            log.info("no behaviour checkpoint in %s: behaviour state starts fresh", store.dir)

    def _verify_late_streams(self) -> None:
        """A stream the restored checkpoint covers but that was first read after the first window: where it
        resumed must be where the checkpoint ends (else its flows count twice or are missing; warn)."""
        first = self._frontier.firsts()
        for k in [k for k in self._beh_unverified if k in first]:
            have, got = self._beh_unverified.pop(k), first[k]
            if have != got:
                log.warning("behaviour state: %s resumed at %d but the restored checkpoint covers it up to %d; "
                            "the behaviour features of its flows may be off until its entities age out", k, got,
                            have, extra={"event": "behaviour_position_mismatch", "stream": k})

    def _checkpoint_behaviour(self, model: Any, force: bool = False) -> None:
        """Save the behaviour state with the positions it covers, at most every
        ``pipeline.behaviour_checkpoint_interval`` seconds (``force``: now, at shutdown), and then let the
        offset commits advance to those positions. Only at a clean instant (:meth:`DoneFrontier.snapshot`);
        a scored window left unwritten stops checkpoints for good (its records are fed and will be read
        again)."""
        store = self._beh_store
        if store is None:
            return
        state = getattr(model.scorer, "behaviour", None)
        tracker = self.tracker if isinstance(self.tracker, GatedOffsets) else None
        if state is None:
            if tracker is not None and tracker.gate is not None and _behaviour_params_json(model.scorer) is None:
                tracker.gate = None  # the scorer keeps no behaviour state (any more): commit what is done
            return
        if self._beh_fed_undone:
            return  # the gate stays at the newest checkpoint, which the state beyond it does not match
        now = time.monotonic()
        every = float(_opt(self._behaviour_cfg(), "checkpoint_interval", 30.0))
        if not force and now - self._beh_saved_at < every:
            return
        positions, clean = self._frontier.snapshot()
        if not clean:
            since = self._beh_unclean_since = self._beh_unclean_since or now
            if not force and tracker is not None and tracker.gate is not None and now - since > max(4 * every, 60.0):
                tracker.gate = None  # never hold commits back for good: commit what is done, warn
                log.warning("behaviour state: no consistent checkpoint for %.0f s (records of a partition out of "
                            "event-time order?); offsets are committed without one, so a restart now starts the "
                            "behaviour state fresh", now - since, extra={"event": "behaviour_checkpoint_stalled"})
            return
        self._beh_unclean_since = None
        self._beh_saved_at = now
        if self._beh_last == (positions, int(state.flows_seen)):
            return  # nothing new since the last checkpoint
        try:
            path = store.save(state, positions, self._source_id(), model.version)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions: detection goes on
            self.metrics.behaviour_checkpoints.labels("failed").inc()
            if tracker is not None:
                tracker.gate = None
            log.error("behaviour checkpoint in %s failed (%s); offsets are committed without it, so a restart "
                      "now starts the behaviour state fresh", store.dir, exc,
                      extra={"event": "behaviour_checkpoint_failed"})
            return
        self._beh_last = (positions, int(state.flows_seen))
        self.metrics.behaviour_checkpoints.labels("ok").inc()
        if tracker is not None:
            tracker.gate = dict(positions)  # saved first, committed after: never ahead of the state
        log.debug("behaviour checkpoint %s: %d flows, positions %s", path, state.flows_seen, positions)

    def _carry_behaviour(self, old: Any, new: Any) -> None:
        """A hot reload keeps the behaviour state (it is about the traffic, not the model) unless the new
        model's behaviour parameters differ (then it starts fresh)."""
        state = getattr(old.scorer, "behaviour", None)
        if state is None:
            return
        params = _behaviour_params_json(new.scorer)
        if params is None:
            log.info("model %s scores without a behaviour state", new.version)
            return
        if params != state.params.to_json():
            log.info("model %s has other behaviour parameters: the behaviour state starts fresh", new.version,
                     extra={"event": "behaviour_fresh"})
            return
        new.scorer.restore_behaviour(state)
        self._follow_evictions(state)

    def _follow_evictions(self, state: Any) -> None:
        self._beh_state = state
        self._beh_evicted = {k: int(s.evicted) for k, s in state.stores.items()}

    def _behaviour_metrics(self, model: Any) -> None:
        """``graphsentry_behaviour_keys{kind}`` and ``graphsentry_behaviour_evictions_total{kind}``."""
        state = getattr(model.scorer, "behaviour", None)
        if state is None:
            return
        m = self.metrics
        if state is not self._beh_state:  # a state this process made: count its evictions from zero
            self._beh_state, self._beh_evicted = state, {k: 0 for k in state.stores}
        for kind in state.stores:
            m.behaviour_evictions.labels(kind)  # the series exist (at 0) from the first window on
        for kind, store in state.stores.items():
            m.behaviour_keys.labels(kind).set(len(store))
            n = int(store.evicted)
            if n > self._beh_evicted.get(kind, 0):
                m.behaviour_evictions.labels(kind).inc(n - self._beh_evicted.get(kind, 0))
            self._beh_evicted[kind] = n
