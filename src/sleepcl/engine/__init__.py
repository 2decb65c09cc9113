"""The training engine, the one every run, study and night trains through.

========================= =========================================================================
module                    one idea
========================= =========================================================================
:mod:`.day`               one day of a strategy on a population: the guarantees that keep frozen
                          weights bit-identical (masks, a fresh optimizer, moments cleared at prunes)
:mod:`.population`        the engine: days, nights and evaluation of S runs at once (``run``, the study,
                          Ray), or a deployed model's members trained night by night (``learn``)
:mod:`.loop`              the one training loop: steps until a budget says stop, prunes where they fall
:mod:`.members`           the stacked state of S members: parameters, buffers, owner maps, generators
:mod:`.norms`             norm-layer statistics recomputed for the pruned network (BN recalibration)
:mod:`.ownership`         who owns each weight, and pruning by magnitude to exact counts
:mod:`.density`           how the weights tasks keep are shared out among the layers (uniform, ERK)
:mod:`.adam`              Adam that updates each member exactly as alone (the fast path's)
:mod:`.streams`           each member's seeds and shuffled data order; one task's endless batches
:mod:`.workers`           groups of members side by side on CPU cores
========================= =========================================================================
"""
