"""A continual-learning method of your own, in one file: ``sleepcl run --strategy examples/strategy.py:Anchored``.

L2 towards the weights each task began with (a crude, importance-free cousin of EWC and SI). Add ``--night rounds``
to give it PackNet's sleep cycles: N prune-then-retrain rounds after each task, to the capacity schedule of
``--final-free``, in the same budget. ``--strategy-option strength=0.5`` sets its option.
"""

from sleepcl.strategies import Strategy
from sleepcl.strategies.base import cross_entropy


class Anchored(Strategy):
    name = "anchored"
    summary = "L2 towards the weights each task began with"
    prunes = False                      # no night unless --night rounds
    options = {"strength": 0.1}

    def begin_day(self, day, params):
        self.start = {n: p.detach().clone() for n, p in params.items() if not n.startswith("head.")}

    def loss(self, logits, step):       # the sum over members of each member's loss
        penalty = sum(((step.params[n] - a) ** 2).sum() for n, a in self.start.items())
        return cross_entropy(logits, step.y) + self.settings["strength"] * penalty
