"""The pretraining loop: :class:`Pretrainer` runs the self-supervised objectives (contrastive views or
DGI, weighted by GradNorm or fixed) over the window graphs in time order.
"""
from __future__ import annotations

import contextvars

import torch

from detector.models import STGNN
from training.losses import EdgeDGI, GradNormWeighter, ProjectionHead, info_nce
from training.pretrain.config import PRETRAIN_PARTS, VIEWS, TrainConfig
from training.views import feature_view, structural_view, temporal_pairs

# Sharded/multi-process pretraining (training/distributed.py) sets this for the duration of a run: a callable
# ``(trainer, graphs, progress) -> epoch record`` that replaces :meth:`Pretrainer.run_epoch`'s loop.
EPOCH_RUNNER: contextvars.ContextVar = contextvars.ContextVar("graphsentry_epoch_runner", default=None)


class Pretrainer:
    """Runs the pretraining epochs over a fixed list of window graphs (in time order)."""

    def __init__(self, model: STGNN, cfg: TrainConfig) -> None:
        self.model, self.cfg = model, cfg
        H = cfg.hidden
        self.heads = torch.nn.ModuleDict({
            "temporal": ProjectionHead(H), "structural": ProjectionHead(H), "feature": ProjectionHead(3 * H),
        })
        self.dgi = EdgeDGI(3 * H)
        self.weighter = GradNormWeighter(list(VIEWS), mode=cfg.weighting)
        params = list(model.parameters()) + list(self.heads.parameters()) + list(self.dgi.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0
        self.steps = 0
        self.history: list[dict] = []
        self.epoch_runner = EPOCH_RUNNER.get()  # None: the single-process loop of run_epoch
        self.update = None  # optional callable(total): replaces backward + optimizer step (training/distributed.py)

    def _sample(self, n: int) -> torch.Tensor:
        if n <= self.cfg.max_anchors:
            return torch.arange(n)
        return torch.randperm(n, generator=self.gen)[: self.cfg.max_anchors]

    def _forward(self, d, edge_ids=None, edge_attr=None):
        """Model pass on the full window, or on the subset ``edge_ids`` of its edges (structural view).

        Returns ``(z, h, flow)`` with ``flow = [z_u || z_v || e_uv]`` whatever the detector input is.
        """
        ea = d.edge_attr if edge_attr is None else edge_attr
        ei, dtw, dtp = d.edge_index, d.edge_dt_window, d.edge_dt_prev
        if edge_ids is not None:
            ei, ea, dtw, dtp = ei[:, edge_ids], ea[edge_ids], dtw[edge_ids], dtp[edge_ids]
        z, h, e = self.model.encode(d.x, ei, ea, dtw, dtp, d.node_gid, update_state=False)
        return z, h, STGNN.compose(z, e, ei, ea, PRETRAIN_PARTS)

    def step(self, d, prev) -> tuple[dict[str, float], tuple]:
        cfg, m = self.cfg, self.model
        z, h, flow = self._forward(d)
        losses: dict[str, torch.Tensor] = {}
        if cfg.objective == "dgi":
            perm = torch.randperm(d.edge_attr.size(0), generator=self.gen)
            _, _, flow_c = self._forward(d, edge_attr=d.edge_attr[perm])
            losses["dgi"] = self.dgi(flow, flow_c)
            total = losses["dgi"]
        else:
            if prev is not None:
                ip, ic = temporal_pairs(prev[0], d.node_gid)
                if ic.numel() >= 2:
                    s = self._sample(ic.numel())
                    # anchor: this window's spatial state; positive: the same endpoint's state in the
                    # previous window (detached: gradients stay inside the current window)
                    losses["temporal"] = info_nce(self.heads["temporal"](h[ic[s]]),
                                                  self.heads["temporal"](prev[1][ip[s]]), cfg.temperature)
            if d.num_nodes >= 2 and d.edge_index.size(1) >= 1:
                _, k1 = structural_view(d.edge_index, cfg.drop_edge, self.gen)
                _, k2 = structural_view(d.edge_index, cfg.drop_edge, self.gen)
                z1, _, _ = self._forward(d, edge_ids=k1)
                z2, _, _ = self._forward(d, edge_ids=k2)
                s = self._sample(int(d.num_nodes))
                losses["structural"] = info_nce(self.heads["structural"](z1[s]), self.heads["structural"](z2[s]),
                                                cfg.temperature)
            if d.edge_index.size(1) >= 2:
                _, _, f1 = self._forward(d, edge_attr=feature_view(d.edge_attr, cfg.mask_feature, self.gen))
                _, _, f2 = self._forward(d, edge_attr=feature_view(d.edge_attr, cfg.mask_feature, self.gen))
                s = self._sample(d.edge_index.size(1))
                losses["feature"] = info_nce(self.heads["feature"](f1[s]), self.heads["feature"](f2[s]),
                                             cfg.temperature)
            if not losses:
                total = None
            else:
                self.steps += 1
                upd = self.steps % max(1, cfg.gradnorm_every) == 0
                shared = m.encoder.convs[-1].lin_upd.weight if upd else None
                total = self.weighter.combine(losses, shared)
        if self.update is not None:
            self.update(total)
        elif total is not None:
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            self.opt.step()
        if m.memory is not None:
            m.memory.write(d.node_gid, z.detach(), t=float(d.window_end))
        return {k: float(v.detach()) for k, v in losses.items()}, (d.node_gid, h.detach())

    def run_epoch(self, graphs: list, progress: bool = True) -> dict[str, float]:
        if self.epoch_runner is not None:
            return self.epoch_runner(self, graphs, progress)
        self.model.train()
        self.model.reset_state()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        prev = None
        it = graphs
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(graphs, desc=f"epoch {self.epoch + 1}", unit="win", leave=False, mininterval=2.0)
            it = bar
        for d in it:
            if d.edge_index.size(1) == 0:
                continue
            vals, prev = self.step(d, prev)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            if bar is not None and vals:
                bar.set_postfix({k: f"{sums[k] / counts[k]:.3f}" for k in sums}, refresh=False)
        if bar is not None:
            bar.close()
        self.epoch += 1
        rec = {k: sums[k] / counts[k] for k in sums}
        rec["epoch"] = self.epoch
        if self.cfg.objective == "contrastive":
            rec["weights"] = self.weighter.weights()
        self.history.append(rec)
        return rec

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "heads": self.heads.state_dict(), "dgi": self.dgi.state_dict(),
                "weighter": self.weighter.state_dict(), "weighter_initial": self.weighter.initial,
                "opt": self.opt.state_dict(), "epoch": self.epoch, "steps": self.steps, "history": self.history,
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.heads.load_state_dict(s["heads"])
        self.dgi.load_state_dict(s["dgi"])
        self.weighter.load_state_dict(s["weighter"])
        self.weighter.initial = dict(s["weighter_initial"])
        self.opt.load_state_dict(s["opt"])
        self.epoch, self.history = int(s["epoch"]), list(s["history"])
        self.steps = int(s.get("steps", 0))
        self.gen.set_state(s["gen"])
        torch.set_rng_state(s["torch_rng"])
