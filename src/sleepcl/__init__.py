"""sleepcl: efficient continual learning with sleep-cycle pruning."""
