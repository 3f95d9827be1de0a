"""Feature pass over a transaction stream and the training loop (label latency respected)."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import average_precision_score

from detector.fraud.model import FraudModel, FraudModelConfig, contrastive_loss, edge_batch_subgraph, focal_loss
from ingest.fraud.data import tumbling
from ingest.fraud.graph import DAY, HeteroGraphBuilder, TxFeatures, assemble

log = logging.getLogger(__name__)


@dataclass
class WindowFeat:
    """One window's features plus what evaluation needs (labels, ids), never fed to the model."""

    start: float
    end: float
    feats: TxFeatures
    rows: np.ndarray
    label: np.ndarray      # int64, -1 unknown
    day: np.ndarray        # int64 day index of each transaction

    def graph(self, labels: np.ndarray | None = None):
        return assemble(self.feats, self.start, self.end, rows=self.rows,
                        labels=self.label if labels is None else labels)


def feature_pass(table: pa.Table, window_s: float, label_delay_s: float) -> tuple[list[WindowFeat], HeteroGraphBuilder]:
    """Stream the whole table through one builder (history + delayed label feedback)."""
    b = HeteroGraphBuilder(label_delay_s=label_delay_s, use_labels=True)
    out = []
    for w in tumbling(table, window_s):
        f = b.transform(w.table)
        lab = w.table.column("label").to_numpy(zero_copy_only=False)
        lab = np.nan_to_num(np.asarray(lab, dtype=np.float64), nan=-1).astype(np.int64)
        rows = w.table.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
        out.append(WindowFeat(w.start, w.end, f, rows, lab, np.floor(f.ts / DAY).astype(np.int64)))
    return out, b


def known_labels(wf: WindowFeat, now: float, label_delay_s: float) -> np.ndarray:
    """Labels as known at time ``now``: a label at ts is known iff ts + delay <= now; else -1."""
    lab = wf.label.copy()
    lab[wf.feats.ts + label_delay_s > now] = -1
    return lab


def fit_model(train: list[WindowFeat], unlabeled: list[WindowFeat], val: list[WindowFeat], *,
              now: float, label_delay_s: float, cfg: FraudModelConfig, epochs: int = 8, seed: int = 0,
              lam: float = 0.2, lr: float = 2e-3, patience: int = 3, batch_size: int = 256,
              unlabeled_batches: int = 8,
              progress: bool = False) -> tuple[FraudModel, dict]:
    """Train on windows; supervised loss only on labels known at ``now`` (training time).

    ``unlabeled`` windows (e.g. the delay period) contribute only the contrastive
    loss. Early stopping and model selection on validation AP (labels known at ``now``).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FraudModel(cfg)
    allw = train + unlabeled
    model.fit_normalizer(np.concatenate([w.feats.edge for w in allw]),
                         np.concatenate([w.feats.cust_x for w in allw]),
                         np.concatenate([w.feats.term_x for w in allw]))
    # Labels the trainer may see: only those known at `now` (the leak guard for training).
    items = [(w.graph(known_labels(w, now, label_delay_s)), True) for w in train]
    items += [(w.graph(np.full(len(w.rows), -1, np.int64)), False) for w in unlabeled]
    vgraphs = [w.graph(known_labels(w, now, label_delay_s)) for w in val]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    best, best_ap, bad, hist = None, -1.0, 0, []
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        tot_sup = tot_con = 0.0
        steps = []
        for i, (g, labeled) in enumerate(items):
            E = g["customer", "pays", "terminal"].num_edges
            perm = torch.from_numpy(rng.permutation(E))
            chunks = list(torch.split(perm, batch_size))
            if not labeled:  # unlabelled windows: a few contrastive-only batches per epoch
                chunks = chunks[:unlabeled_batches]
            steps += [(i, c) for c in chunks]
        for j in rng.permutation(len(steps)):
            i, batch = steps[j]
            g, labeled = items[i]
            sub, pos = edge_batch_subgraph(g, batch)
            logits, z, hc, ht = model(sub)
            loss = lam * contrastive_loss(model, sub, hc, ht, z, gen, idx=pos) if lam > 0 else logits.sum() * 0.0
            tot_con += float(loss.detach())
            lab = sub["customer", "pays", "terminal"].edge_label[pos]
            known = lab >= 0
            if labeled and known.any():
                sup = focal_loss(logits[pos][known], lab[known].float())
                loss = loss + sup
                tot_sup += float(sup.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
        ap = evaluate_ap(model, vgraphs) if vgraphs else float("nan")
        hist.append({"epoch": ep, "sup": tot_sup, "con": tot_con, "val_ap": ap})
        if progress:
            print(f"  epoch {ep:2d} sup={tot_sup:.4f} con={tot_con:.3f} val_ap={ap:.4f}", flush=True)
        if not vgraphs or ap > best_ap:
            best_ap, best, bad = ap, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best)
    model.eval()
    return model, {"history": hist, "best_val_ap": best_ap, "train_seconds": time.perf_counter() - t0}


def fit_select_refit(fit: list[WindowFeat], val: list[WindowFeat], unlabeled: list[WindowFeat], *, refit: bool = True,
                     **kw) -> tuple[FraudModel, dict]:
    """Pick the epoch count by validation AP, then (``refit``) retrain on fit + validation windows
    for that many epochs, so the final model sees the whole labelled period like the baselines do."""
    model, info = fit_model(fit, unlabeled, val, **kw)
    if not refit or not val:
        return model, info
    aps = [h["val_ap"] for h in info["history"]]
    best_epochs = int(np.nanargmax(aps)) + 1 if np.isfinite(aps).any() else len(aps)
    kw = dict(kw, epochs=best_epochs)
    model2, info2 = fit_model(fit + val, unlabeled, [], **kw)
    info = dict(info, refit_epochs=best_epochs, refit_history=info2["history"],
                train_seconds=info["train_seconds"] + info2["train_seconds"])
    return model2, info


@torch.no_grad()
def predict(model: FraudModel, graphs) -> np.ndarray:
    model.eval()
    return np.concatenate([torch.sigmoid(model(g)[0]).double().numpy() for g in graphs]) if graphs else np.zeros(0)


def evaluate_ap(model: FraudModel, graphs) -> float:
    s = predict(model, graphs)
    y = np.concatenate([g["customer", "pays", "terminal"].edge_label.numpy() for g in graphs])
    k = y >= 0
    if k.sum() == 0 or y[k].max() == y[k].min():
        return float("nan")
    return float(average_precision_score(y[k], s[k]))


def calibrate_threshold(val_scores: np.ndarray, alert_rate: float = 0.01) -> float:
    """Label-free rule: the score quantile that alerts on ``alert_rate`` of validation transactions."""
    if not 0 < alert_rate < 1:
        raise ValueError(f"alert_rate={alert_rate!r}: must be in (0, 1)")
    if len(val_scores) == 0:
        return 0.5
    return float(np.quantile(val_scores, 1.0 - alert_rate))
