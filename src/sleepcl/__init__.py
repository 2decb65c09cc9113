"""sleepcl: efficient continual learning with sleep-cycle pruning.

The names most users need, in one place::

    from sleepcl import RunConfig, load_split_benchmark, train_population, run_configs
"""

from .config import RunConfig
from .matching import compression_ratio
from .population import Population, train_population
from .runner import run_configs
from .schedule import prune_fraction, sleep_schedule
from .split import SplitBenchmark, load_split_benchmark
from .store import RunStore

__all__ = ["Population", "RunConfig", "RunStore", "SplitBenchmark", "compression_ratio", "load_split_benchmark",
           "prune_fraction", "run_configs", "sleep_schedule", "train_population"]
__version__ = "0.1.0"
