"""The yardstick: PackNet with sleep cycles written the way people write it today, one model at a time.

An ``nn.Module`` (the paper's MLP or small VGG, one 2-way head per task), a ``DataLoader`` over a
``TensorDataset``, ``torch.optim.Adam`` with its defaults, and PackNet by gradient masking:

* each weight of the trunk has an owner (0 = free, t = task t); task t trains the free weights: after
  ``backward`` the gradient of every other weight is multiplied by 0, and a fresh Adam each task keeps
  frozen weights exactly where they were;
* biases are trained on the first task only, then frozen; each task trains its own head;
* the night: N rounds, each pruning the task's smallest-magnitude weights (per layer) to the count of
  the paper's Algorithm 2 (the same ``sleepcl.schedule`` arithmetic, so both sides prune exactly the same
  number of weights) and clearing their Adam moments, then retraining;
* after each task every task seen so far is evaluated on its test and validation data, through its own
  weights (owners ``1..t``) and head.

Same data, batch size, epochs, learning rate and step count as ``sleepcl`` (the DataLoader's last batch
of an epoch is partial; sleepcl fills it from the next permutation). Not bit-equal to sleepcl: the
initial weights and the data order come from other random streams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sleepcl.config import RunConfig
from sleepcl.schedule import free_after_task, night_targets, sleep_schedule
from sleepcl.data.split import SplitBenchmark


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], widths: tuple[int, ...], n_tasks: int, n_out: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = 1
        for s in input_shape:
            d *= s
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(d, n_out) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.trunk(x))


class VGG(nn.Module):
    """conv3-32, conv3-64, maxpool, conv3-128, conv3-128, maxpool, dropout, fc1024, dropout, heads."""

    def __init__(self, input_shape: tuple[int, ...], widths: tuple[int, ...], n_tasks: int, n_out: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        c, h, w = input_shape
        a, b, c2, d, f = widths
        self.trunk = nn.Sequential(
            nn.Conv2d(c, a, 3, padding=1), nn.ReLU(), nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(b, c2, 3, padding=1), nn.ReLU(), nn.Conv2d(c2, d, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(d * (h // 4) * (w // 4), f), nn.ReLU(), nn.Dropout(dropout),
        )
        self.heads = nn.ModuleList(nn.Linear(f, n_out) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.trunk(x))


class AnyModel(nn.Module):
    """A user's model (``package.module:function``) cut the way people do it by hand: its last nn.Linear becomes
    one head per task, the rest is the trunk."""

    def __init__(self, model: nn.Module, n_tasks: int, n_out: int = 2):
        super().__init__()
        path, classifier = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
        self.trunk = model
        self.heads = nn.ModuleList(nn.Linear(classifier.in_features, n_out) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.trunk(x))


def make_model(cfg: RunConfig, bench: SplitBenchmark) -> nn.Module:
    if cfg.network == "vgg":
        return VGG(bench.input_shape, cfg.widths or (32, 64, 128, 128, 1024), bench.n_tasks)
    if ":" in cfg.network:
        from sleepcl.models import load_factory

        return AnyModel(load_factory(cfg.network)(), bench.n_tasks)
    return MLP(bench.input_shape, cfg.widths or (256, 256), bench.n_tasks)


def norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trunk's norm layers' parameters and statistics: each task keeps its own (PackNet's way)."""
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return {f"{path}.{n}": t.detach().clone() for path, m in model.trunk.named_modules() if isinstance(m, norms)
            for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}


def load_norm_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        current = {**dict(model.trunk.named_parameters()), **dict(model.trunk.named_buffers())}
        for name, t in state.items():
            current[name].copy_(t)


def run_packnet(cfg: RunConfig, bench: SplitBenchmark, device: str | torch.device = "cpu") -> dict:
    """One PackNet run of ``cfg`` (strategy ``packnet``, layer-wise pruning); returns its accuracy matrices."""
    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, bench).to(device)
    prunable = [m.weight for m in model.trunk.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    biases = [m.bias for m in model.trunk.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
    norms: list[dict[str, torch.Tensor]] = []  # each task's own norm layers (none in the paper's networks)
    owner = [torch.zeros_like(w, dtype=torch.uint8) for w in prunable]
    schedule = sleep_schedule(cfg.schedule, cfg.retrain_epochs, cfg.rounds)
    order = torch.Generator().manual_seed(cfg.seed)
    test_rows, val_rows = [], []

    for t in range(bench.n_tasks):
        task = t + 1
        held = []
        for o in owner:  # the task takes every free weight
            held.append(int((o == 0).sum()))
            o[o == 0] = task
        if t == 1:
            for b in biases:
                b.requires_grad_(False)
        train = bench.train[t]
        loader = DataLoader(TensorDataset(bench.x[train], bench.y[train]), batch_size=cfg.batch_size,
                            shuffle=True, generator=order)
        params = [p for p in model.trunk.parameters() if p.requires_grad] + list(model.heads[t].parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        masks = [(o == task).float() for o in owner]

        def epoch() -> None:
            model.train()
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = F.cross_entropy(model(x, t), y)
                optimizer.zero_grad()
                loss.backward()
                for w, m in zip(prunable, masks):
                    w.grad.mul_(m)
                optimizer.step()

        for _ in range(cfg.epochs):
            epoch()

        # The night: N rounds of prune-then-retrain, ending with the layer's free fraction on schedule.
        keep = [night_targets(h, h - round(o.numel() * free_after_task(task, bench.n_tasks, cfg.final_free)),
                              schedule) for h, o in zip(held, owner)]
        for k, epochs in enumerate(schedule.round_epochs):
            with torch.no_grad():
                for w, o, m, targets in zip(prunable, owner, masks, keep):
                    mine = o == task
                    n_free = int(mine.sum()) - targets[k]
                    if n_free > 0:
                        magnitude = torch.where(mine, w.abs(), torch.inf).flatten()
                        freed = torch.topk(magnitude, n_free, largest=False).indices
                        w.view(-1)[freed] = 0
                        o.view(-1)[freed] = 0
                    m.copy_(o == task)
                    state = optimizer.state.get(w)
                    if state:  # a freed weight must not keep moving on its old moments
                        state["exp_avg"].mul_(m)
                        state["exp_avg_sq"].mul_(m)
            for _ in range(epochs):
                epoch()

        norms.append(norm_state(model))
        test_rows.append(evaluate(model, prunable, owner, norms, bench, bench.test, task, device))
        val_rows.append(evaluate(model, prunable, owner, norms, bench, bench.val, task, device))
    return {"config": cfg, "accuracy_matrix": test_rows, "val_accuracy_matrix": val_rows}


@torch.no_grad()
def evaluate(model: nn.Module, prunable: list[torch.Tensor], owner: list[torch.Tensor],
             norms: list[dict[str, torch.Tensor]], bench: SplitBenchmark, split: tuple[torch.Tensor, ...],
             learnt: int, device: str | torch.device, batch_size: int = 1024) -> list[float | None]:
    """Accuracy of each task learnt so far through its own weights (owners 1..task), norm layers and head."""
    model.eval()
    saved = [w.clone() for w in prunable]
    row: list[float | None] = [None] * bench.n_tasks
    for j in range(learnt):
        load_norm_state(model, norms[j])
        for w, s, o in zip(prunable, saved, owner):
            w.copy_(s * ((o != 0) & (o <= j + 1)))
        idx = split[j]
        correct = 0
        for x, y in DataLoader(TensorDataset(bench.x[idx], bench.y[idx]), batch_size=batch_size):
            correct += int((model(x.to(device), j).argmax(1) == y.to(device)).sum())
        row[j] = correct / max(1, len(idx))
    for w, s in zip(prunable, saved):
        w.copy_(s)
    load_norm_state(model, norms[learnt - 1])
    return row


if __name__ == "__main__":  # a single run, for a look at what the yardstick does
    import argparse
    import time

    from sleepcl.data.split import load_split_benchmark

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="mnist-5k")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--retrain-epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--final-free", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    bench = load_split_benchmark(args.benchmark)
    cfg = RunConfig(benchmark=args.benchmark, epochs=args.epochs, retrain_epochs=args.retrain_epochs,
                    rounds=args.rounds, final_free=args.final_free, seed=args.seed)
    t0 = time.perf_counter()
    out = run_packnet(cfg, bench)
    print(f"{time.perf_counter() - t0:.1f} s; test accuracy after the last task: {out['accuracy_matrix'][-1]}")
