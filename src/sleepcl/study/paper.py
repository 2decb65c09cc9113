"""The paper's own numbers: the one place they live.

Ball, Li, Lamb & Zhang, *A Study on Efficiency in Continual Learning Inspired by Human Learning*
(``shared/reference/paper.md``). Everything here is copied from the paper; nothing in the report is
computed from these constants except the side-by-side "paper" columns, which are labelled as such.
The paper reports two benchmarks: Split MNIST with the MLP and Split CIFAR-10 with the small VGG.
"""

from __future__ import annotations

__all__ = [
    "CLAIMS",
    "FIGURE2_TEXT",
    "FIGURE3_AVERAGE_PERFORMANCE",
    "PAPER_BENCHMARKS",
    "TABLE1_COMPRESSION",
    "paper_reference",
]

#: Table 1: compression ratio (1 - p) / (1 - p') at which Memory / Multinet match PackNet at p.
TABLE1_COMPRESSION: dict[str, dict[float, dict[str, float]]] = {
    "mnist": {
        0.95: {"memory": 1.17, "multinet": 1.63},
        0.99: {"memory": 1.45, "multinet": 2.77},
        0.995: {"memory": 1.54, "multinet": 3.32},
    },
    "cifar10": {
        0.8: {"memory": 1.60, "multinet": 2.82},
        0.9: {"memory": 2.25, "multinet": 2.26},
        0.95: {"memory": 2.08, "multinet": 2.27},
    },
}

#: Figure 3 captions: PackNet's average performance (mean final accuracy over tasks and 5 seeds) at p.
FIGURE3_AVERAGE_PERFORMANCE: dict[str, dict[float, float]] = {
    "mnist": {0.95: 0.996, 0.99: 0.989, 0.995: 0.970},
    "cifar10": {0.8: 0.891, 0.9: 0.843, 0.95: 0.797},
}

#: Section 3.1, what the text says about Figure 2 (fixed budget B; no table of numbers is given).
FIGURE2_TEXT: dict[str, str] = {
    "mnist": ("at 99.5% pruning the best N roughly halves the error of the worst (1.5% vs 3%); more "
              "rounds tend to be better for the MLP, with a dip at intermediate N"),
    "cifar10": "at 95% pruning the best and worst N differ by 3.5% accuracy; few rounds (often N = 1) are best",
}

#: The paper's claims the report checks against our data, in the paper's words (abridged).
CLAIMS: dict[str, str] = {
    "a": "PackNet is the least weight-efficient: Memory and Multinet reach its accuracy with fewer weights "
         "(compression > 1)",
    "b": "the gap grows with p: the more the network is pruned, the larger the compression ratio",
    "c": "under a fixed budget the best N depends on the network (MLP: many rounds, VGG: few), and a bad "
         "N costs a lot",
    "d": "without a budget (R fixed per round, cost grows with N), more rounds help",
}

#: Which of the paper's benchmarks shares the network of each of ours (the MNIST family uses the MLP).
PAPER_BENCHMARKS: dict[str, str] = {"mnist": "mnist", "mnist-5k": "mnist", "fashion-mnist": "mnist",
                                    "cifar10": "cifar10"}

_PAPER_NAMES = {"mnist": "Split MNIST (MLP)", "cifar10": "Split CIFAR-10 (VGG)"}


def paper_reference(benchmark: str) -> tuple[str, str]:
    """``(paper benchmark key, a caption)`` for the paper numbers shown beside ``benchmark``'s results.

    Our ``mnist`` and ``cifar10`` are the paper's own benchmarks; ``mnist-5k`` is a 5,000-digit subset
    of MNIST; ``fashion-mnist`` is not in the paper, so its reference is the paper's Split MNIST with the
    same MLP -- shown for scale only, and the caption says so.
    """
    key = PAPER_BENCHMARKS[benchmark]
    name = _PAPER_NAMES[key]
    if benchmark == key:
        return key, f"paper, {name}: the same benchmark"
    if benchmark == "mnist-5k":
        return key, f"paper, {name}: full MNIST (60,000 digits); ours uses a 5,000-digit subset"
    return key, f"paper, {name}: a different dataset with the same network, for scale only"
