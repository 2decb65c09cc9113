"""Finished runs: from a list of run configs to records (:mod:`.runner`), the JSON record of a run
(:mod:`.records`) and the results store that keeps them (:mod:`.store`)."""
