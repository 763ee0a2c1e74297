"""One-shot, latency-constrained search (SPEC 3.3): train a supernet once, then score subnets with it.

`SupernetEvaluator` plays the candidate evaluator's part in the search loop (steps/search.py): before
the first candidate it trains the supernet (resuming from `search/supernet.pt` if a previous run was
killed), and then `train_and_eval(encoding)` scores one subnet with the supernet's weights (BN
re-estimated on training images) on the validation list. `DerivationStrategy` asks for the subnets:
first the most probable architecture under the latency budget, then `front_samples` drawn from the
learned distribution under the budget. Their records land in result.csv / pareto_front.csv like any
other algorithm's, and resume the same way.

Schedule (seed 001's decoupling): `warmup_epochs` of weight steps on uniformly sampled paths, then
`search_epochs` in which every `arch_every` weight steps (paths sampled from softmax(alpha)) are followed
by one architecture step on a batch of the held-out part of the TRAINING list (`arch_fraction`; the
validation list is never seen before derivation).

Gradient estimator for alpha: ProxylessNAS' two-path binary gates. Per layer two distinct ops are drawn
from softmax(alpha), one of them is active (drawn from their renormalised probabilities p2), and the
layer outputs sum_j g_j * op_j(x) with g = onehot(active) + p2 - stop_gradient(p2): the forward value is
the active op's output alone, and the backward pass gives dL/dalpha_i = sum_j <dL/dy, op_j(x)> *
p2_j * (delta_ij - p2_i), which is ProxylessNAS' Eq. 4 restricted to the two paths. Why two-path and not
full: full mode runs every op of every layer in each architecture step (8x the memory and, on a CPU,
roughly 8x the time of a weight step), while two paths cost about two weight steps and are what the
ProxylessNAS authors ran for their GPU and mobile searches. The latency term needs no sampling: E[lat]
= fixed + sum_layers sum_ops softmax(alpha) * lat is differentiable in every alpha.

Hard constraint (seed 001): every sampled path whose predicted latency exceeds the budget
(`search.max_latency_ms`) is resampled, at most `proxyless.resample_tries` times; then the search stops
with a one-line error naming the smallest latency it saw. A budget under the fastest subnet the table
allows is refused before any training.

Determinism and resume: every random draw (data order, paths, pairs) comes from a generator seeded from
(seed, epoch or step), so the position (epoch, step, architecture steps) is the whole RNG state; the
checkpoint holds it with the weights, alpha, both optimisers and the schedule, written atomically every
`checkpoint_steps` steps and after each epoch. A killed search restarts from its last checkpoint and
repeats the same steps, so it ends with the same alpha and architecture as an uninterrupted one (same
seed and threads).
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from nascli.config import Recipe
from nascli.data.listfile import SegmentationDataset
from nascli.engine.checkpoint import safe_load, save_checkpoint
from nascli.engine.evaluator import evaluate_model, metric_fields, size_str
from nascli.engine.losses import SegLoss, resolve_class_weights
from nascli.engine.loops import make_optimizer, make_scheduler, recalibrate_bn
from nascli.errors import ConfigError, RunDirError
from nascli.faults import fault_point
from nascli.profile.cost import count_macs, count_params
from nascli.profile.lut import OVERHEAD, LatencyTable, calibrate, expected_latency, fingerprint, layout_id, timing_model
from nascli.rundir import atomic_write
from nascli.seeding import derive_seed
from nascli.spaces.proxyless import ProxylessSpace
from nascli.strategies.base import Proposal
from nascli.zoo.proxyless import (
    ProxylessNet,
    build_proxyless,
    build_supernet,
    lut_layout,
    model_kwargs,
    subnet_state_dict,
    supernet_kwargs,
)

log = logging.getLogger(__name__)

STATE_FILE, LUT_FILE = "supernet.pt", "lut.json"


# --- the latency model of a space --------------------------------------------------------------------
class LatencyModel:
    """Per-layer latency of every choice (ms, skip 0) plus the fixed parts, from a lookup table."""

    def __init__(self, per_layer: list[list[float]], fixed: float, calibrated: bool = False):
        self.per_layer, self.fixed, self.calibrated = per_layer, fixed, calibrated
        self.tensors = [torch.tensor(row, dtype=torch.float32) for row in per_layer]

    @classmethod
    def from_table(cls, table: LatencyTable, layout, *, raw: bool = False) -> "LatencyModel":
        """Layers from their entries; the fixed parts as calibrated in context for this layout if the table
        holds that (nascli.profile.lut), else the sum of their own entries (`raw` forces the latter)."""
        layers, fixed = layout
        per_layer = [[0.0 if e is None else table.net(e.key) for e in row] for row in layers]
        calibration = None if raw else table.calibrations.get(layout_id(layout))
        if calibration is not None:
            return cls(per_layer, float(calibration["fixed_ms"]), calibrated=True)
        return cls(per_layer, table.predict([e.key for e in fixed]))  # the fixed parts carry the one call overhead

    def layer_sum(self, path: Sequence[int]) -> float:
        return sum(row[i] for row, i in zip(self.per_layer, path))

    def predict(self, path: Sequence[int]) -> float:
        return self.fixed + self.layer_sum(path)

    def fastest(self) -> float:
        return self.fixed + sum(min(row) for row in self.per_layer)

    def slowest(self) -> float:
        return self.fixed + sum(max(row) for row in self.per_layer)

    def expected(self, alphas: Sequence[torch.Tensor]) -> torch.Tensor:
        """E[lat] under softmax(alpha), with the graph kept (a real gradient into alpha)."""
        return expected_latency([torch.softmax(a, 0) for a in alphas], self.tensors, self.fixed)


CALIBRATION_SEED = 0x1CA1  # the calibration subnets are a property of the layout, not of a search's seed


def distinct_codes(space: ProxylessSpace, rng: random.Random, n: int, exclude=()) -> list[str]:
    """`n` random subnets, distinct and not in `exclude` (fewer where the space has not enough)."""
    codes: list[str] = []
    for _ in range(100 * max(1, n)):
        if len(codes) >= n:
            break
        code = space.sample(rng)
        if code not in codes and code not in exclude:
            codes.append(code)
    return codes


def calibration_codes(space: ProxylessSpace, n: int) -> list[str]:
    """The random subnets a layout is calibrated on."""
    return distinct_codes(space, random.Random(CALIBRATION_SEED), n)


def calibrate_layout(table: LatencyTable, space: ProxylessSpace, px, layout, size: tuple[int, int],
                     num_classes: int) -> dict:
    """`px.lut_calibrate` random subnets of `space` timed whole: the fixed parts' in-context cost (profile.lut)."""
    codes = calibration_codes(space, px.lut_calibrate)
    raw = LatencyModel.from_table(table, layout, raw=True)
    models = [timing_model(build_proxyless(**model_kwargs(px, code, num_classes)), size) for code in codes]
    return calibrate(table, layout, [raw.layer_sum(space.indices(c)) for c in codes], models, size,
                     runs=px.lut_runs)


def sample_path(probs: Sequence[Sequence[float]], rng: random.Random) -> list[int]:
    return [rng.choices(range(len(p)), weights=p)[0] for p in probs]


def constrained_sample(draw: Callable[[], list[int]], latency: LatencyModel, budget: float | None, tries: int,
                       what: str = "path") -> list[int]:
    """The hard constraint: draw until a path is under `budget`, at most `tries` times."""
    smallest = math.inf
    for _ in range(tries):
        path = draw()
        if budget is None:
            return path
        lat = latency.predict(path)
        if lat <= budget:
            return path
        smallest = min(smallest, lat)
    raise ConfigError(f"no {what} under the latency budget {budget:.4g} ms in {tries} samples "
                      f"(smallest latency seen {smallest:.4g} ms)",
                      hint="raise --max-latency-ms or proxyless.resample_tries, or narrow the space (widths, ops)")


def most_probable_under_budget(probs: Sequence[Sequence[float]], latency: LatencyModel, budget: float | None,
                               bins: int = 4000) -> list[int]:
    """argmax of sum log p over paths with predicted latency <= budget (a multiple-choice knapsack, solved by
    dynamic programming over latency rounded UP to `bins` steps, so the answer is never over budget)."""
    logp = [np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-30, None)) for p in probs]
    if budget is None:
        return [int(np.argmax(lp)) for lp in logp]
    room = budget - latency.fixed
    if room < 0 or latency.fastest() > budget:
        raise ConfigError(f"latency budget {budget:.4g} ms is below the fastest subnet ({latency.fastest():.4g} ms)",
                          hint="raise --max-latency-ms")
    step = room / bins if room > 0 else 1.0
    cost = [np.ceil(np.asarray(row) / step - 1e-9).astype(int) for row in latency.per_layer]
    best = np.full(bins + 1, -np.inf)
    best[0] = 0.0
    choice = []
    for lp, c in zip(logp, cost):
        new = np.full(bins + 1, -np.inf)
        arg = np.full(bins + 1, -1)
        for j, (lj, cj) in enumerate(zip(lp, c)):
            if cj > bins:
                continue
            shifted = np.full(bins + 1, -np.inf)
            shifted[cj:] = best[:bins + 1 - cj] + lj
            better = shifted > new
            new[better], arg[better] = shifted[better], j
        best = new
        choice.append(arg)
    if not np.isfinite(best).any():  # the rounding up can lose a path exactly at the budget
        raise ConfigError(f"latency budget {budget:.4g} ms leaves no path after rounding "
                          f"(fastest subnet {latency.fastest():.4g} ms)", hint="raise --max-latency-ms slightly")
    c = int(np.argmax(best))
    path = []
    for layer in range(len(logp) - 1, -1, -1):
        j = int(choice[layer][c])
        path.append(j)
        c -= int(cost[layer][j])
    return path[::-1]


def budget_slack(budget: float | None, latency: LatencyModel) -> str | None:
    """A warning when the budget does not bind: every subnet of the space is under it, so the search only
    trades latency the user said they can spend (issue 18: CamVid's space tops out at a third of LR-ASPP's)."""
    if budget is None or latency.slowest() > budget:
        return None
    return (f"the latency budget {budget:.4g} ms does not bind: the slowest subnet of this space takes "
            f"{latency.slowest():.4g} ms (the fastest {latency.fastest():.4g} ms); widen the space "
            f"(proxyless.widths, depths, expansion) to spend it")


def latency_penalty(expected: torch.Tensor, norm: float, kind: str) -> torch.Tensor:
    """The architecture loss's latency term, before its weight. `linear`: E[latency] / norm, a pull towards
    fast ops at every step (ProxylessNAS). `hinge`: max(0, E[latency] / budget - 1), zero under the budget
    (MnasNet's hard-constraint reward), so there accuracy alone moves alpha. With Adam on alpha even a small
    linear term wins against a noisy CE gradient and the derived net sits far under a generous budget."""
    ratio = expected / norm
    return torch.relu(ratio - 1) if kind == "hinge" else ratio


# --- the supernet evaluator --------------------------------------------------------------------------
class SupernetEvaluator:
    def __init__(self, *, recipe: Recipe, space: ProxylessSpace, train: SegmentationDataset,
                 val: SegmentationDataset, progress: Callable[[dict], None] | None = None,
                 cache_dir: Path | None = None, **_unused):
        self.recipe, self.space, self.px = recipe, space, recipe.proxyless
        # The supernet's weight training: the candidate optimiser for warm-up + search epochs (a record's epochs).
        self.cfg = recipe.candidate.model_copy(update={"epochs": max(1, self.px.warmup_epochs + self.px.search_epochs)})
        self.train, self.val = train, val
        self.num_classes = int(recipe.data.num_classes)
        self.device = torch.device(recipe.device)
        self.progress = progress or (lambda event: None)
        self.sdir = Path(cache_dir) if cache_dir is not None else None
        d = recipe.data  # the candidate section's loss and class weights train the supernet
        weights = resolve_class_weights(recipe.candidate, train, self.num_classes, d.ignore_index, "candidate",
                                        d.class_names)
        self.loss = SegLoss(recipe.candidate.loss, d.ignore_index, weights)
        self.budget = recipe.search.max_latency_ms
        self.latency_size = tuple(recipe.search.latency_size or recipe.data.input_size)
        self.table = self._latency_table()
        self.latency = LatencyModel.from_table(self.table, self._layout())
        if self.budget is not None and self.latency.fastest() > self.budget:
            raise ConfigError(f"latency budget {self.budget:.4g} ms is infeasible: the fastest subnet of this space "
                              f"takes {self.latency.fastest():.4g} ms ({recipe.search.latency_runtime}, "
                              f"{size_str(self.latency_size)}, {recipe.search.latency_threads} threads)",
                              hint="raise --max-latency-ms, or narrow the space (proxyless.widths, depths, ops)")
        if (slack := budget_slack(self.budget, self.latency)) is not None:
            log.warning(slack)
        if self.px.latency_loss == "hinge" and self.budget is None:
            raise ConfigError("proxyless.latency_loss hinge penalises latency over the budget, and there is none",
                              hint="pass --max-latency-ms (search.max_latency_ms), or use latency_loss: linear")
        self.supernet: ProxylessNet | None = None
        self.alphas: list[torch.Tensor] = []
        self.history: list[dict] = []

    # --- the latency table ----------------------------------------------------------------------
    def _layout(self):
        return lut_layout(self.space, self.latency_size, self.num_classes, **supernet_kwargs(self.px))

    def _latency_table(self) -> LatencyTable:
        """The run's own table if it has one (a resumed search keeps its numbers), else the machine's cached
        table, completed by measurement and copied into the run."""
        s = self.recipe.search
        fp = fingerprint(s.latency_runtime, s.latency_threads)  # the table times on the CPU, whatever trains
        own = self.sdir / LUT_FILE if self.sdir is not None else None
        if own is not None and own.is_file():
            return LatencyTable.load(own)
        table = LatencyTable.open(fp, Path(self.px.lut_file) if self.px.lut_file else None)
        layers, fixed = self._layout()
        entries = [e for row in layers for e in row if e is not None] + list(fixed) + [OVERHEAD]
        todo = len(table.missing(entries))
        if todo:
            log.info("latency table: measuring %d entries at %s (%s, %d threads) into %s", todo,
                     size_str(self.latency_size), s.latency_runtime, s.latency_threads, table.path)
        table.measure(entries, runs=self.px.lut_runs,
                      progress=lambda done, total: self.progress({"event": "cache", "done": done, "total": total}))
        if self.px.lut_calibrate and layout_id(layout := (layers, fixed)) not in table.calibrations:
            calibrate_layout(table, self.space, self.px, layout, self.latency_size, self.num_classes)
        if own is not None:
            own.parent.mkdir(parents=True, exist_ok=True)
            table.save(own)
        return table

    # --- the evaluator interface ------------------------------------------------------------------
    def observe(self, record: dict) -> None:
        """Records carry nothing the supernet needs."""

    def close(self) -> None:
        self.supernet = None

    def shared_cache(self) -> None:
        """No feature cache (the serial executor asks; proxyless refuses the others, nascli.algorithms)."""

    def observed_state(self) -> dict:
        return {}

    def model_kwargs(self, encoding: str) -> dict:
        return model_kwargs(self.px, self.space.canonical(encoding), self.num_classes)

    def build(self, encoding: str) -> ProxylessNet:
        return build_proxyless(**self.model_kwargs(encoding))

    def predicted_latency(self, encoding: str) -> float:
        return round(self.latency.predict(self.space.indices(encoding)), 4)

    def cost(self, encoding: str) -> dict:
        model = self.build(encoding)
        size = tuple(self.recipe.data.input_size)
        pred = self.predicted_latency(encoding)
        return {"flops": count_macs(model, size), "parameters": count_params(model), "input_size": size_str(size),
                "latency_ms": pred, "latency_pred_ms": pred, "latency_runtime": self.recipe.search.latency_runtime,
                "latency_size": size_str(self.latency_size)}

    def probabilities(self) -> list[list[float]]:
        self.ensure_trained()
        return [torch.softmax(a.detach(), 0).tolist() for a in self.alphas]

    def train_and_eval(self, encoding: str, seed: int, weights_path: Path | None) -> dict:
        """Score one subnet with the supernet's weights: BN re-estimated on training images, then val."""
        self.ensure_trained()
        started = time.perf_counter()
        encoding = self.space.canonical(encoding)
        net = self.build(encoding)
        net.load_state_dict(subnet_state_dict(self.supernet, encoding), strict=True)
        net.to(self.device)
        gen = torch.Generator().manual_seed(derive_seed(seed, 0xB4))
        order = torch.randperm(len(self.train), generator=gen).tolist()
        bs = self.recipe.candidate.batch_size
        batches = [order[i:i + bs] for i in range(0, len(order), bs)][:self.px.bn_batches]
        self.train.set_epoch(0)  # the same augmented views whether the supernet was trained or loaded here
        recalibrate_bn(net, (self._batch(b)[0] for b in batches))
        metrics = evaluate_model(net, self.val, self.num_classes, self.recipe.data.ignore_index, bs, self.device)
        d = self.recipe.data
        out = {"status": "ok", **metric_fields(metrics, d.class_names, d.degenerate_share), "train_seconds": round(time.perf_counter() - started, 2)}
        if self.recipe.search.measure_latency:
            out["latency_measured_ms"] = self._measure(net)
        if weights_path is not None:
            self._save(net, encoding, weights_path)
        return out

    def _measure(self, net: ProxylessNet) -> float:
        from nascli.profile.onnx_latency import latency_function

        s = self.recipe.search
        measure = latency_function(s.latency_runtime)
        return round(measure(net, self.latency_size, device="cpu", threads=s.latency_threads,
                             warmup=3, runs=10)["median_ms"], 3)

    def _save(self, net: ProxylessNet, encoding: str, path: Path) -> None:
        d = self.recipe.data
        meta = {"num_classes": self.num_classes, "class_names": d.class_names, "mean": list(d.mean), "std": list(d.std),
                "input_size": list(d.input_size), "ignore_index": d.ignore_index, "encoding": encoding,
                "space": self.space.name}
        save_checkpoint(path, {"model": {"name": "proxyless", "kwargs": self.model_kwargs(encoding)},
                               "state_dict": net.state_dict(), "meta": meta})

    # --- supernet training --------------------------------------------------------------------------
    def _split(self) -> tuple[list[int], list[int]]:
        """(weight-step images, architecture-step images): a fixed, seeded split of the training list."""
        n = len(self.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.recipe.seed, 0x5B17))).tolist()
        n_arch = min(n - 1, max(1, round(n * self.px.arch_fraction)))
        return sorted(order[n_arch:]), sorted(order[:n_arch])

    def _batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.train[i] for i in indices))
        return torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)

    def _batches(self, indices: list[int], salt: int, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(derive_seed(self.recipe.seed, salt, epoch))
        perm = torch.randperm(len(indices), generator=gen).tolist()
        bs = self.recipe.candidate.batch_size
        out = [[indices[p] for p in perm[i:i + bs]] for i in range(0, len(perm), bs)]
        return [b for b in out if len(b) > 1] or out  # BN needs two images; a lone last one is dropped

    def ensure_trained(self) -> None:
        if self.supernet is None:
            self._train_supernet()

    def _train_supernet(self) -> None:
        cfg, seed, recipe = self.px, self.recipe.seed, self.recipe
        torch.manual_seed(derive_seed(seed, 0x50E7))
        net = build_supernet(self.space, self.num_classes, **supernet_kwargs(cfg)).to(self.device)
        alphas = [torch.zeros(len(layer.choices), requires_grad=True) for layer in self.space.layers]
        w_idx, a_idx = self._split()
        epochs = cfg.warmup_epochs + cfg.search_epochs
        steps_per_epoch = len(self._batches(w_idx, 0x3E, 0))
        train_cfg = recipe.candidate.model_copy(update={"epochs": max(1, epochs)})
        w_opt = make_optimizer(net.parameters(), train_cfg)
        sched = make_scheduler(w_opt, train_cfg, steps_per_epoch)
        a_opt = torch.optim.Adam(alphas, lr=cfg.arch_lr, betas=(0.0, 0.999))  # ProxylessNAS' beta1 = 0
        pos = {"epoch": 0, "step": 0, "arch_steps": 0, "done": False}
        state_path = self.sdir / STATE_FILE if self.sdir is not None else None
        if state_path is not None and state_path.is_file():
            saved = _load_state(state_path)
            net.load_state_dict(saved["supernet"])
            with torch.no_grad():
                for a, v in zip(alphas, saved["alphas"]):
                    a.copy_(v)
            w_opt.load_state_dict(saved["w_opt"])
            a_opt.load_state_dict(saved["a_opt"])
            sched.load_state_dict(saved["sched"])
            pos = dict(saved["position"])
            self.history = list(saved.get("history", []))
            if not pos["done"]:
                log.info("supernet: resuming at epoch %d step %d", pos["epoch"], pos["step"])

        def save(done: bool = False) -> None:
            if state_path is None:
                return
            pos["done"] = done
            buf = io.BytesIO()
            torch.save({"supernet": net.state_dict(), "alphas": [a.detach().clone() for a in alphas],
                        "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(), "sched": sched.state_dict(),
                        "position": dict(pos), "history": self.history}, buf)
            atomic_write(state_path, lambda f: f.write(buf.getbuffer()))

        norm = self.budget or float(self.latency.expected([torch.zeros_like(a) for a in alphas]))
        a_batches = self._batches(a_idx, 0xA4C, 0)
        last_loss = float("nan")  # an epoch resumed after its last step runs no step
        while not pos["done"] and pos["epoch"] < epochs:
            epoch = pos["epoch"]
            self.train.set_epoch(epoch)
            warm = epoch < cfg.warmup_epochs
            batches = self._batches(w_idx, 0x3E, epoch)
            net.train()
            for step in range(pos["step"], len(batches)):
                t = epoch * steps_per_epoch + step
                rng = random.Random(derive_seed(seed, 0x9A7, t))
                probs = [[1.0] * len(a) for a in alphas] if warm else [torch.softmax(a.detach(), 0).tolist() for a in alphas]
                path = constrained_sample(lambda: sample_path(probs, rng), self.latency, self.budget, cfg.resample_tries)
                net.set_path(path)
                x, y = self._batch(batches[step])
                loss = self.loss(net(x), y)
                if not torch.isfinite(loss):
                    raise ConfigError(f"supernet training diverged: the loss became {loss.item()} at epoch {epoch + 1} "
                                      f"step {step + 1}", hint="lower candidate.lr (the supernet's learning rate)")
                w_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                sched.step()
                last_loss = loss.item()
                fault_point("supernet_step")
                if not warm and (step + 1) % cfg.arch_every == 0:
                    k = pos["arch_steps"]
                    n_a = len(a_batches)
                    ab = self._batches(a_idx, 0xA4C, k // n_a)[k % n_a]
                    arch = self._arch_step(net, alphas, a_opt, ab, k, norm)
                    pos["arch_steps"] = k + 1
                    fault_point("supernet_arch_step")
                    if (k + 1) % max(1, steps_per_epoch // 4) == 0:
                        self.history.append({"epoch": epoch, "arch_step": k, **arch})
                pos["step"] = step + 1
                self.progress({"event": "supernet", "epoch": epoch, "epochs": epochs, "step": step + 1,
                               "steps": len(batches), "warmup": warm, "loss": last_loss})
                if (t + 1) % cfg.checkpoint_steps == 0:
                    save()
            pos["epoch"], pos["step"] = epoch + 1, 0
            save()
            with torch.no_grad():
                exp = float(self.latency.expected(alphas))
            log.info("supernet epoch %d/%d (%s): last loss %.4f, E[latency] %.3f ms", epoch + 1, epochs,
                     "warm-up" if warm else "search", last_loss, exp)
        if not pos["done"]:
            save(done=True)
        net.eval()
        self.supernet, self.alphas = net, [a.detach() for a in alphas]

    def _arch_step(self, net: ProxylessNet, alphas: list[torch.Tensor], a_opt: torch.optim.Optimizer,
                   batch: list[int], k: int, norm: float) -> dict:
        """One architecture step through two-path binary gates (see the module docstring)."""
        rng = random.Random(derive_seed(self.recipe.seed, 0xA2C5, k))
        probs = [torch.softmax(a.detach(), 0).tolist() for a in alphas]

        def draw() -> list[int]:
            pairs.clear()
            path = []
            for p in probs:
                if len(p) == 1:
                    pairs.append(([0], 0))
                    path.append(0)
                    continue
                first = rng.choices(range(len(p)), weights=p)[0]
                rest = [i for i in range(len(p)) if i != first]
                second = rng.choices(rest, weights=[p[i] for i in rest])[0]
                pair = sorted((first, second))
                active = rng.choices(pair, weights=[p[i] for i in pair])[0]
                pairs.append((pair, pair.index(active)))
                path.append(active)
            return path

        pairs: list[tuple[list[int], int]] = []
        constrained_sample(draw, self.latency, self.budget, self.px.resample_tries, what="architecture path")
        for layer, a, (pair, active) in zip(net.backbone, alphas, pairs):
            p2 = torch.softmax(a[pair], 0)
            hard = torch.zeros(len(pair))
            hard[active] = 1.0
            layer.gate = (pair, hard + p2 - p2.detach())
        x, y = self._batch(batch)
        try:
            ce = self.loss(net(x), y)
        finally:
            for layer in net.backbone:
                layer.gate = None
        exp = self.latency.expected(alphas)
        loss = ce + self.px.latency_weight * latency_penalty(exp, norm, self.px.latency_loss)
        a_opt.zero_grad(set_to_none=True)
        net.zero_grad(set_to_none=True)
        loss.backward()
        a_opt.step()
        net.zero_grad(set_to_none=True)  # the weights learn only in weight steps
        return {"ce": round(ce.item(), 5), "expected_latency_ms": round(exp.item(), 4)}


def _load_state(path: Path) -> dict:
    state = safe_load(path, "supernet state", corrupt_hint="delete it to train the supernet again")
    if not isinstance(state, dict) or not {"supernet", "alphas", "position"} <= set(state):
        raise RunDirError(f"supernet state {path} is not one nascli wrote", hint="delete it to train the supernet again")
    return state


# --- the strategy ------------------------------------------------------------------------------------
class DerivationStrategy:
    """Proposal 0: the most probable architecture under the budget; then `front_samples` new subnets drawn
    from the learned distribution under the budget (each at most `resample_tries` draws)."""

    name = "proxyless"

    def __init__(self, space: ProxylessSpace, evaluator: SupernetEvaluator, recipe: Recipe):
        self.space, self.evaluator, self.recipe = space, evaluator, recipe
        self.total = 1 + recipe.proxyless.front_samples
        self.seen: set[str] = set()

    def ask(self, index: int, rng: random.Random) -> Proposal | None:
        if index >= self.total:
            return None
        ev = self.evaluator
        probs = ev.probabilities()
        if index == 0:
            path = most_probable_under_budget(probs, ev.latency, ev.budget)
            return self._proposal(path, probs, "derived")
        for _ in range(self.recipe.proxyless.resample_tries):
            path = constrained_sample(lambda: sample_path(probs, rng), ev.latency, ev.budget,
                                      self.recipe.proxyless.resample_tries)
            if self.space.from_indices(path) not in self.seen:
                return self._proposal(path, probs, "sampled")
        log.info("the learned distribution gives no new subnet under the budget: the front stops at %d", index)
        return None

    def _proposal(self, path: list[int], probs: list[list[float]], phase: str) -> Proposal:
        logp = sum(math.log(max(p[i], 1e-30)) for p, i in zip(probs, path))
        return Proposal(self.space.from_indices(path), phase, info={"logp": round(logp, 5)})

    def tell(self, record: dict) -> None:
        self.seen.add(record["encoding"])

    def state_dict(self) -> dict:
        return {"seen": sorted(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.seen = set(state.get("seen", []))
