"""The training engine: the stacked state of a population and its days and nights (:mod:`.population`), who owns
each weight (:mod:`.ownership`), and groups of members side by side on CPU cores (:mod:`.workers`)."""
