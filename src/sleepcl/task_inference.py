"""Answering without being told the task: infer each input's task from every task's answer to it.

A network of PackNet's kind keeps one subnetwork and one head per task. Shown an input of unknown task, every
task's network answers it; a *rule* scores each answer, the input is given to the task with the highest score,
and that task's network names the class. Rules (all from the output distribution alone, no training):

* ``confidence``: the largest softmax probability (maximum softmax probability, Hendrycks & Gimpel 2017): the
  baseline;
* ``entropy``: minus the entropy of the softmax, divided by ``log k`` for a task of ``k`` classes, so tasks of
  different sizes compare on one scale (the normalised form of the entropy SupSup's one-shot inference
  minimises, Wortsman et al. 2020);
* ``energy``: the log-sum-exp of the logits (minus the free energy, Liu et al. 2020), which keeps the logits'
  scale that softmax discards.

Each rule also comes *calibrated* (``confidence-z``, ``entropy-z``, ``energy-z``): a task's score is measured
against that task's own scores on its own validation data, ``(score - mean) / std``, so that a task whose
network is confident about everything (a later task, with more weights; a task of two classes) does not take
every input. The statistics are kept with the task (:func:`score_stats`: in the nightly model's file, per
task; in a run, from the validation split); without them a calibrated rule reads the raw scores.

SupSup's one-shot gradient rule itself needs the tasks to share one output layer (it superposes the tasks'
masks and follows the entropy's gradient in the mixture weights); here each task has its own head, so its
entropy reading is what is implemented. Which rule is the default is decided by measurement:
``examples/task_inference.py`` prints the comparison on Split and Permuted benchmarks (examples/NIGHTLY.md).

Scores: the *task-inference accuracy* (the share of inputs given to their own task) and the *class-incremental
accuracy* (the share whose task and class are both right: the accuracy over all classes seen, the score of a
model that is never told the task), beside the task-aware accuracy that is told it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported where it is used, so that the command line can name the rules without loading it.

__all__ = ["BASE_RULES", "DEFAULT_RULE", "RULES", "check_rule", "infer", "inference_accuracy", "score_stats",
           "task_scores"]

BASE_RULES = ("confidence", "entropy", "energy")
RULES = (*BASE_RULES, *(f"{r}-z" for r in BASE_RULES))
DEFAULT_RULE = "energy-z"  # examples/task_inference.py; see examples/NIGHTLY.md for the table it printed


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown task-inference rule {rule!r}; choose one of {', '.join(RULES)}")
    return rule


def task_scores(logits: Tensor, rule: str = DEFAULT_RULE, stats: Tensor | None = None) -> Tensor:
    """Scores ``(..., T)`` (higher: more likely the input's task) from the logits ``(..., T, O)`` of every task's
    network; outputs a task does not have are ``-inf``. A calibrated rule (``...-z``) standardises each task's
    score by ``stats`` ``(..., T, 2)`` (mean and std of the base rule's score on the task's own validation
    data, :func:`score_stats`), broadcast over the samples; without ``stats`` it is its base rule."""

    check_rule(rule)
    base = rule.removesuffix("-z")
    raw = _base_scores(logits, base)
    if rule == base or stats is None:
        return raw
    stats = stats.double()
    return (raw - stats[..., 0]) / stats[..., 1].clamp(min=1e-6)


def score_stats(own_logits: Tensor, rule: str) -> Tensor:
    """``(..., 2)``: mean and std over the samples axis ``n`` of a task's score for its own samples, from its
    logits ``(..., n, O)`` on them (its validation data); what a calibrated rule standardises by."""
    import torch

    s = _base_scores(own_logits[..., None, :], check_rule(rule).removesuffix("-z"))[..., 0]
    if s.shape[-1] < 2:
        return torch.stack([s.mean(-1), torch.ones_like(s.mean(-1))], -1)
    return torch.stack([s.mean(-1), s.std(-1)], -1)


def _base_scores(logits: Tensor, rule: str) -> Tensor:
    import torch

    z = logits.double()
    if rule == "energy":
        return torch.logsumexp(z, -1)
    logp = torch.log_softmax(z, -1)
    if rule == "confidence":
        return logp.max(-1).values.exp()
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    k = torch.isfinite(z).sum(-1).clamp(min=2).double()
    return -entropy / torch.log(k)


def infer(logits: Tensor, rule: str = DEFAULT_RULE, stats: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(inferred task ``(...)``, that task's class ``(...)``) from the logits ``(..., T, O)`` (``stats``: see
    :func:`task_scores`); ties go to the earlier task."""
    task = task_scores(logits, rule, stats).argmax(-1)
    classes = logits.argmax(-1)  # (..., T)
    return task, classes.gather(-1, task[..., None]).squeeze(-1)


def inference_accuracy(logits: Tensor, task: Tensor, label: Tensor, rules: tuple[str, ...] = RULES,
                       stats: dict[str, Tensor] | None = None) -> dict[str, dict[str, Tensor]]:
    """Per rule, the task-inference and class-incremental accuracy over the last-but-two axis ``n`` of
    ``logits`` ``(..., n, T, O)``, for true tasks ``task`` and labels ``label`` (``(..., n)``, broadcast);
    ``stats``: per base rule, the ``(..., T, 2)`` of :func:`score_stats` (``...`` without the ``n``)."""
    out: dict[str, dict[str, Tensor]] = {}
    for rule in rules:
        st = stats.get(rule.removesuffix("-z")) if stats is not None else None
        t, c = infer(logits, rule, st[..., None, :, :] if st is not None else None)
        right_task = t == task
        out[rule] = {"task": right_task.double().mean(-1), "class_incremental": (right_task & (c == label)).double().mean(-1)}
    return out


def summary(values: Mapping[str, Mapping[str, float]]) -> str:
    """One line: each rule's task-inference and class-incremental accuracy."""
    return "; ".join(f"{r}: task {v['task']:.4f}, all classes {v['class_incremental']:.4f}" for r, v in values.items()
                     if not math.isnan(v["task"]))
