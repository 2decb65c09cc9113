"""Nightly consolidation: a deployed model that learns one new task per night within a time budget.

The paper's motivating user trades by day and folds the day's data into the model overnight, within a
fixed memory (the network's weights) and a fixed time window. This package serves that user:

* :func:`learn` -- ``sleepcl learn MODEL --task NAME --data FILE --budget 45m``: add a task from the user's
  own data (:mod:`sleepcl.data.user`) in one night (:mod:`.learn`, :mod:`.night`: on the same engine as every
  run) planned in seconds (:mod:`.planner`) under a capacity policy (:mod:`.policy`), creating the model on the
  first night; the model file (:mod:`.model`) is replaced atomically, the previous night's kept as
  ``MODEL.prev``. Any network: the paper's ``mlp`` and ``vgg``, or the user's own model factory.
* :func:`predict` -- ``sleepcl predict MODEL --task NAME --data FILE [--output preds.csv]``.
* :func:`inspect` -- ``sleepcl inspect MODEL``: tasks, free capacity per layer and overall, file size, and
  the history of nights.
"""

from ..data.user import DataFormatError, Dataset, load_data
from .model import ModelError, NightlyModel, inspect, predict, prev_path
from .learn import learn
from .night import DEFAULT_CANDIDATES, Candidate
from .planner import parse_duration

__all__ = ["Candidate", "DEFAULT_CANDIDATES", "DataFormatError", "Dataset", "ModelError", "NightlyModel", "inspect",
           "learn", "load_data", "parse_duration", "predict", "prev_path"]
