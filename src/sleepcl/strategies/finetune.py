"""Fine-tuning: every task trains every weight, nothing protects old tasks (shows forgetting); no night by default,
so each task trains ``E + B`` task-epochs (``--night rounds`` prunes it to the capacity schedule as Memory is)."""

from __future__ import annotations

from .base import Strategy


class Finetune(Strategy):
    name = "finetune"
    summary = "no protection at all: shows forgetting"
    prunes = False
