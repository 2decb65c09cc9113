"""Fine-tuning: every task trains every weight, nothing protects old tasks (shows forgetting); no night, so
each task trains ``E + B`` task-epochs."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from .base import Day, Strategy


class Finetune(Strategy):
    name = "finetune"
    summary = "no protection at all: shows forgetting"
    prunes = False

    def trainable(self, owner: Mapping[str, Tensor], day: Day) -> None:
        return None
