"""Any ``nn.Module`` as a population: the engine's generic path.

Give a model that maps a batch ``(B, *input_shape)`` to class scores, as ``torchvision.models.resnet18`` does.
sleepcl takes it apart once, then computes every member with ``torch.func.functional_call`` on that one
template, with the member's own slice of the stacked parameters and buffers:

* **the classifier** (the module named by ``head``, else the last ``nn.Linear``) is replaced by one head per task
  (:class:`~sleepcl.models.layers.TaskHeads`): what reached the classifier are the features;
* **prunable** (owned by a task, pruned and freed): every weight matrix of the trunk, that is every parameter of
  two or more dimensions outside the norm layers: the weights of ``Linear`` and convolution layers, and as well
  ``nn.MultiheadAttention``'s ``in_proj_weight``, ``nn.Embedding`` tables and a model's own ``nn.Parameter``
  matrices (a positional embedding, say). A model marks parameters to keep shared instead with an attribute
  ``sleepcl_shared`` on the module its factory returns: parameter names or glob patterns (``["pos",
  "embed.*"]``). ``sleepcl run --model X --explain`` lists every parameter and what it is, before any training;
* **norm layers** (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm): under a strategy that freezes
  (PackNet), each task has its own copy of their affine parameters and running statistics, as the original
  PackNet code kept per-dataset BatchNorm: the new task's copy starts from the previous task's, trains with the
  task, and is never touched again, so an old task's outputs stay bit-identical. Under the other strategies
  they are shared like any parameter;
* **random numbers**: ``nn.Dropout`` becomes :class:`~sleepcl.models.layers.GeneratorDropout`, drawing from the
  member's own generator; any other random op in training (``nn.Dropout2d``, the dropout inside
  ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``, an ``F.dropout`` call, ``torch.randn`` noise)
  draws from torch's default generator, so each member's training forward runs with the default generator set to
  the member's own stream (and the stream taken back after): a member draws the same numbers alone, in a
  population or in a group side by side. Randomness that cannot be given to a member is refused before training:
  Python's or numpy's global generators, random numbers drawn in evaluation mode, a forward that differs from
  itself from the same generator state;
* everything else is shared: biases, and any other parameter, trained on the first task only by PackNet.

Each member's initial weights are the model's own initialisation (its factory called with torch's generator
seeded from the member's seed), so a member is the same network alone, in a population or in a group.

What cannot work is refused before any training, naming the layer and why: a factory that fails or returns
something else than a module, no classifier, no prunable layer besides it, uninitialised (lazy) parameters,
a trunk whose output is not ``(batch, features)``, and, under a strategy that freezes, a layer other than a norm
layer whose buffers change in training (its state would drift under old tasks).
"""

from __future__ import annotations

import contextlib
import fnmatch
import random as python_random
import threading
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .base import _INIT_LOCK, Buffers, MemberRandom, Network, Params, seeded
from .layers import GeneratorDropout, TaskHeads

__all__ = ["NORM_LAYERS", "PRUNABLE_LAYERS", "ModuleNetwork"]

PRUNABLE_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
# Where a model lists the parameters (names or glob patterns) it wants shared rather than owned and pruned.
SHARED_ATTRIBUTE = "sleepcl_shared"
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                                            *([nn.RMSNorm] if hasattr(nn, "RMSNorm") else []))
TRIAL_BATCH = 2
# Held while a member's forward draws from torch's default generator set to the member's stream (and while a
# member's initial weights are drawn, :func:`~.base.seeded`): groups of members side by side in threads take turns,
# so no member draws from another's stream.
_DEFAULT_GENERATOR_LOCK = _INIT_LOCK


class ModuleNetwork(Network):
    """A user's ``nn.Module`` (built by ``build``) for the engine: see the module docstring."""

    def __init__(self, build: Callable[[], nn.Module], input_shape: Sequence[int], n_tasks: int, head_size: int,
                 *, name: str = "module", per_task_norm: bool = False, head: str | None = None, vmap: bool = False):
        """``vmap``: compute the members with one ``torch.func.vmap`` of the functional call instead of one call
        per member, where the model has no random layer (on a GPU: one kernel launch for all members instead of
        one each; on CPU no faster, and members then agree with their solo runs to float rounding only)."""
        super().__init__(input_shape, n_tasks, head_size)
        self.name, self._build, self._head_path = name, build, head
        _check_size_before_building(build, name)
        template = seeded(0, lambda: _call_factory(build, name))
        self.trunk, self._head_path, features = _split_classifier(template, head, name, n_tasks, head_size)
        self._head_shape = (self.n_tasks, self.head_size, features)
        _use_member_dropout(self.trunk)
        self._dropouts = [m for m in self.trunk.modules() if isinstance(m, GeneratorDropout)]
        _check_parameters(self.trunk, name)
        names = dict(self.trunk.named_parameters())
        if any(n.startswith("head.") for n in names):
            raise ValueError(f"{name}: a parameter of the trunk is called head.*, the name sleepcl gives the per-task "
                             "heads; rename that layer, or name it as the classifier with head=...")
        self.norm_layers = {path for path, m in self.trunk.named_modules() if isinstance(m, NORM_LAYERS)}
        self.marked_shared = _marked_shared(template, names, name)
        self.prunable = tuple(n for n, p in names.items() if p.dim() >= 2 and n not in self.marked_shared
                              and n.rpartition(".")[0] not in self.norm_layers)
        if not self.prunable:
            raise ValueError(f"{name}: no Linear or convolution besides the classifier ({self._head_path}): sleepcl "
                             "owns, prunes and frees the weight matrices of the trunk (Linear, convolution, attention, "
                             "embedding weights), so the model needs at least one"
                             + (f" that it does not mark shared ({SHARED_ATTRIBUTE})" if self.marked_shared else ""))
        self.statistics_layers = tuple(path for path, m in self.trunk.named_modules()
                                       if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
                                       and m.running_mean is not None)
        self._gathering = False
        self.param_names = tuple(names)
        self.buffer_names = tuple(n for n, _ in self.trunk.named_buffers())
        self.per_task = frozenset(n for n in (*self.param_names, *self.buffer_names)
                                  if per_task_norm and n.rpartition(".")[0] in self.norm_layers)
        self._activation_floats = _check_trunk(self.trunk, self.input_shape, features, name, self._head_path,
                                               chosen=head is not None)
        # Whether training draws from torch's default generator (random layers other than nn.Dropout).
        self.uses_global_random = _draws_from_default_generator(self.trunk, self.input_shape, self._dropouts, name)
        self.vmap = vmap and not self._dropouts and not self.uses_global_random
        if per_task_norm:
            _check_buffers_stay(self.trunk, self.input_shape, self.norm_layers, name)

    # -- Network --------------------------------------------------------------------------------------

    @property
    def head_shape(self) -> tuple[int, int, int]:
        return self._head_shape

    @property
    def activation_floats(self) -> int:
        return self._activation_floats

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-member shape of every parameter, heads included (per-task ones with their task axis)."""
        out = {n: ((self.n_tasks,) if n in self.per_task else ()) + tuple(p.shape)
               for n, p in self.trunk.named_parameters()}
        return {**out, "head.weight": self.head_shape, "head.bias": self.head_shape[:2]}

    def member_state(self, seed: int) -> tuple[Params, Buffers]:
        def build() -> tuple[nn.Module, TaskHeads]:
            model = _call_factory(self._build, self.name)
            heads = _find(model, self._head_path)
            if not isinstance(heads, TaskHeads):  # drawn right after the model, from the same seeded stream
                heads = TaskHeads(self.n_tasks, self.head_size, self.feature_dim)
            return model, heads

        model, heads = seeded(seed, build)
        prefix = self._head_path + "."
        params = {n: p.detach() for n, p in model.named_parameters() if not n.startswith(prefix)}
        buffers = {n: b.detach() for n, b in model.named_buffers() if not n.startswith(prefix)}
        if set(params) != set(self.param_names) or set(buffers) != set(self.buffer_names):
            raise ValueError(f"{self.name}: the factory built a different model for seed {seed} than for seed 0 "
                             "(other parameter or buffer names); it must build the same architecture every time")
        for group in (params, buffers):
            for n in group:
                if n in self.per_task:
                    group[n] = group[n].unsqueeze(0).repeat(self.n_tasks, *([1] * group[n].dim()))
        params["head.weight"], params["head.bias"] = heads.weight.detach(), heads.bias.detach()
        return params, buffers

    def features(self, params: Params, x: Tensor, *, buffers: Buffers | None = None, task: int | None = None,
                 random: MemberRandom | None = None, train: bool = False) -> Tensor:
        if self.per_task and task is None:
            raise ValueError(f"{self.name}: per-task norm layers need one task per batch")
        self.trunk.train(train and not self._gathering)
        if self._gathering:
            for path in self.statistics_layers:
                self.trunk.get_submodule(path).train(True)
        buffers = buffers or {}
        if self.vmap:
            def own(group: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
                return {n: group[n][:, task] if n in self.per_task else group[n] for n in names}

            call = lambda p, b, xs: functional_call(self.trunk, (p, b), (xs,), strict=True)  # noqa: E731
            views = own(buffers, self.buffer_names)
            # vmap's in-place updates (BatchNorm's running statistics) do not reach through a strided view such
            # as one task's copy: they go to a contiguous tensor, copied back
            work = {n: b.contiguous() for n, b in views.items()}
            out = vmap(call)(own(params, self.param_names), work, x)
            for n, b in views.items():
                if work[n] is not b:
                    b.copy_(work[n])
            return out

        def members(name: str, t: Tensor) -> tuple[Tensor, ...]:
            # unbind: in backward one stack of the members' gradients, not one zero-filled copy per member
            return (t[:, task] if name in self.per_task else t).unbind(0)

        params_by_member = {n: members(n, params[n]) for n in self.param_names}
        buffers_by_member = {n: members(n, buffers[n]) for n in self.buffer_names}
        out = []
        drawing = train and not self._gathering and self.uses_global_random
        if drawing and random is None:
            raise ValueError(f"{self.name}: training draws random numbers; give each member its generator (random=)")
        for s, xs in enumerate(x.unbind(0)):
            state = {n: v[s] for n, v in params_by_member.items()}
            state.update({n: v[s] for n, v in buffers_by_member.items()})
            for d in self._dropouts:
                d.generator = random.generators[s] if random is not None else None
            with _drawing_from(random.generators[s]) if drawing else contextlib.nullcontext():  # type: ignore[union-attr]
                out.append(functional_call(self.trunk, state, (xs,), strict=True))
        return torch.stack(out)

    def thread_sensitive(self, device: torch.device) -> bool:
        # Norm layers sum over the batch (batch statistics; in backward, their affine parameters' gradients), and
        # torch's CPU kernels split such sums over the threads: other threads, other rounding.
        return device.type == "cpu" and bool(self.norm_layers)

    @contextlib.contextmanager
    def gathering_statistics(self) -> Iterator[Callable[[int], None]]:
        """Inside, ``features(..., train=True)`` runs the layers of :attr:`statistics_layers` on batch statistics,
        adding each batch to their running statistics as a cumulative average, and every other layer in evaluation
        mode (no dropout): the statistics are those the network meets when it answers. Yields a function to call
        with the batch's index (0-based) before each batch."""
        layers = [self.trunk.get_submodule(p) for p in self.statistics_layers]
        momenta = [m.momentum for m in layers]

        def batch(k: int) -> None:
            for m in layers:  # 1/(k+1): the running value becomes the mean over the batches so far
                m.momentum = 1.0 / (k + 1)

        self._gathering = True
        try:
            yield batch
        finally:
            self._gathering = False
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum

    def describe(self) -> str:
        n = sum(p.numel() for p in self.trunk.parameters())
        norm = f", {len(self.norm_layers)} norm layers" + (" (per task)" if self.per_task else "") \
            if self.norm_layers else ""
        return f"{self.name}: {n:,} trunk parameters, {len(self.prunable)} prunable layers{norm}"


# -- taking the model apart --------------------------------------------------------------------------------

def _check_size_before_building(build: Callable[[], nn.Module], name: str) -> None:
    """Refuse a model too large for even one member on this machine before any of its weights exist: the factory
    is called once on the meta device (shapes only, no memory, no random draws) and sized by the estimate that
    sizes populations (:func:`sleepcl.runs.memory.member_bytes`, activations left out) plus the template copy.
    A factory that cannot build on the meta device (it loads weights from a file, say) is sized once built."""
    from ..runs.memory import available_bytes, format_bytes, member_bytes

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), contextlib.redirect_stdout(None):
            model = build()
        shapes = {n: tuple(t.shape) for n, t in (*model.named_parameters(), *model.named_buffers())}
    except (Exception, SystemExit):
        return
    owned = [n for n, t in model.named_parameters() if t.dim() >= 2]
    need = member_bytes(shapes, owned, batch_size=1, activation_floats=0) + 4 * sum(
        t.numel() for t in (*model.parameters(), *model.buffers()))
    available, where = available_bytes("cpu")
    if need > available:
        params = sum(t.numel() for t in model.parameters())
        raise ValueError(f"the model factory {name} builds {params:,} parameters: one member needs about "
                         f"{format_bytes(need)} to train (weights, gradients, Adam's moments, masks), more than the "
                         f"{format_bytes(available)} there is ({where}); nothing was built. Make the model smaller")


def _call_factory(build: Callable[[], nn.Module], name: str) -> nn.Module:
    try:
        model = build()
    except (Exception, SystemExit) as e:  # a factory that calls sys.exit() is a failed factory, not an exit
        raise ValueError(f"the model factory {name} failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ValueError(f"the model factory {name} returned a {type(model).__name__}, not a torch.nn.Module; "
                         "return the model itself")
    other = sorted({str(t.dtype).removeprefix("torch.") for t in (*model.parameters(), *model.buffers())
                    if t.is_floating_point() and t.dtype != torch.float32})
    if other:
        raise ValueError(f"the model factory {name} returned a model with {', '.join(other)} weights; sleepcl "
                         "trains float32 weights (its masks, Adam and model files are float32): return model.float()")
    return model


def _find(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def _split_classifier(model: nn.Module, head: str | None, name: str, n_tasks: int,
                      head_size: int) -> tuple[nn.Module, str, int]:
    """The model with its classifier taken out, the classifier's path, and its input size."""
    if head is not None:
        try:
            classifier = model.get_submodule(head)
        except AttributeError:
            raise ValueError(f"{name}: no layer {head!r} to use as the classifier (layers: "
                             f"{', '.join(n for n, _ in model.named_children())})") from None
        path = head
    else:
        found = [(p, m) for p, m in model.named_modules() if isinstance(m, (nn.Linear, TaskHeads))]
        if not found:
            raise ValueError(f"{name}: no nn.Linear to use as the classifier; end the model with an nn.Linear (its "
                             "input is the feature size) or name the classifier layer with head=...")
        path, classifier = found[-1]
    if not path:
        raise ValueError(f"{name}: the whole model is a single layer; sleepcl needs a trunk before the classifier")
    if isinstance(classifier, TaskHeads):
        t, o, features = classifier.weight.shape
        if (t, o) != (n_tasks, head_size):
            raise ValueError(f"{name}: its TaskHeads {path} has {t} heads of {o} outputs, but the tasks need "
                             f"{n_tasks} heads of {head_size}; build it with TaskHeads({n_tasks}, {head_size}, ...)")
    elif isinstance(classifier, nn.Linear):
        features = classifier.in_features
    else:
        raise ValueError(f"{name}: the classifier {path} is a {type(classifier).__name__}; it must be an nn.Linear "
                         "(sleepcl replaces it by one head per task)")
    parent, _, leaf = path.rpartition(".")
    setattr(_find(model, parent), leaf, _Features())
    return model, path, int(features)


class _Features(nn.Module):
    """Where the classifier was: hands on what reached it (with or without a task argument)."""

    def forward(self, h: Tensor, *_args: object, **_kwargs: object) -> Tensor:
        return h


def _use_member_dropout(trunk: nn.Module) -> None:
    """nn.Dropout -> GeneratorDropout in place."""
    for path, m in list(trunk.named_modules()):
        if type(m) is nn.Dropout:
            parent, _, leaf = path.rpartition(".")
            setattr(_find(trunk, parent), leaf, GeneratorDropout(m.p))


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    raise ValueError(f"random layers other than nn.Dropout are supported on cpu and cuda, not {device.type}")


@contextlib.contextmanager
def _drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Inside, torch's default generator (of ``generator``'s device) draws ``generator``'s stream, which goes on
    from where the block left it; the default generator is as it was after."""
    default = _default_generator(generator.device)
    with _DEFAULT_GENERATOR_LOCK:
        saved = default.get_state()
        default.set_state(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(default.get_state())
            default.set_state(saved)


GLOBAL_RANDOM_LOCK = threading.Lock()
"""Held while a model's use of the global random generators (torch's, Python's, numpy's) is checked: code that
draws from them in another thread of this process meanwhile holds it too, or the check would blame the model
(``ray.init`` does, beside the driver's place of a local cluster: runs/cluster.py)."""


def _draws_from_default_generator(trunk: nn.Module, input_shape: tuple[int, ...], dropouts: Sequence[GeneratorDropout],
                                  name: str) -> bool:
    """Run the trunk in evaluation and in training mode on a small batch: whether training draws from torch's
    default generator. Refuses randomness that a member's own generator cannot stand in for."""
    with GLOBAL_RANDOM_LOCK:
        return _check_draws(trunk, input_shape, dropouts, name)


def _check_draws(trunk: nn.Module, input_shape: tuple[int, ...], dropouts: Sequence[GeneratorDropout],
                 name: str) -> bool:
    x = torch.randn(TRIAL_BATCH, *input_shape, generator=torch.Generator().manual_seed(0))
    own = torch.Generator().manual_seed(0)
    for d in dropouts:
        d.generator = own
    state = {n: b.clone() for n, b in trunk.state_dict().items()}  # training mode moves running statistics
    draws = False
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for training in (False, True):
                trunk.train(training)
                outs = []
                for _ in range(2):
                    torch.manual_seed(0)
                    own.manual_seed(0)
                    before = torch.default_generator.get_state()
                    py, npy = python_random.getstate(), np.random.get_state()[1].copy()
                    out = trunk(x)
                    outs.append(out)
                    moved = not torch.equal(before, torch.default_generator.get_state())
                    if python_random.getstate() != py or not np.array_equal(npy, np.random.get_state()[1]):
                        raise ValueError(f"{name}: the model draws from Python's or numpy's global random generator; "
                                         "sleepcl gives each member its own stream of torch's generator only, so "
                                         "runs would not be reproducible. Draw random numbers with torch (e.g. "
                                         "torch.rand, nn.Dropout) instead")
                    if moved and not training:
                        raise ValueError(f"{name}: the model draws random numbers in evaluation mode (model.eval()); "
                                         "its answers would change from one evaluation to the next. Draw them only "
                                         "when self.training is true (nn.Dropout and its kind do)")
                    draws = draws or moved
                if isinstance(outs[0], Tensor) and not _same_values(outs[0], outs[1]):
                    raise ValueError(f"{name}: the model gives different outputs for the same input from the same "
                                     f"random state ({'training' if training else 'evaluation'} mode): its randomness "
                                     "comes from somewhere sleepcl cannot seed per member, so runs would not be "
                                     "reproducible")
    finally:
        trunk.load_state_dict(state)
        trunk.eval()
        for d in dropouts:
            d.generator = None
    return draws


def _same_values(a: Tensor, b: Tensor) -> bool:
    """Bit for bit the same, NaN where NaN: the model checks compare a model with itself, and a model whose outputs
    are NaN is not the checks' business (a run of it fails as diverged, engine/divergence.py)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)


def _marked_shared(model: nn.Module, names: Mapping[str, Tensor], name: str) -> frozenset[str]:
    """The parameters the model's ``sleepcl_shared`` attribute names (names or glob patterns)."""
    marks = getattr(model, SHARED_ATTRIBUTE, ())
    if isinstance(marks, str):
        marks = (marks,)
    if not isinstance(marks, (list, tuple, set, frozenset)) or not all(isinstance(m, str) for m in marks):
        raise ValueError(f"{name}: {SHARED_ATTRIBUTE} must be a list of parameter names or glob patterns, "
                         f"got {marks!r}")
    shared = set()
    for mark in marks:
        hit = {n for n in names if fnmatch.fnmatchcase(n, mark)}
        if not hit:
            raise ValueError(f"{name}: {SHARED_ATTRIBUTE} names {mark!r}, which matches no parameter of the trunk "
                             f"(parameters: {', '.join(names)})")
        shared |= hit
    return frozenset(shared)


def _check_parameters(trunk: nn.Module, name: str) -> None:
    for path, p in trunk.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(f"{name}: {path} is not initialised yet (a lazy layer); give the layer its input size, "
                             "or run the model once on an input before returning it")
        if not p.is_floating_point():
            raise ValueError(f"{name}: parameter {path} is {p.dtype}; sleepcl trains floating-point parameters")


def _check_trunk(trunk: nn.Module, input_shape: tuple[int, ...], features: int, name: str, head_path: str,
                 chosen: bool) -> int:
    """Run the trunk once (eval mode) on a small batch; return the widest activation per sample (floats).

    Refuses a trunk that fails (naming ``--head`` when the classifier was guessed), whose output is not what reached
    the classifier (layers after it, such as a LogSoftmax, would act on the features), or not ``(batch,
    features)``."""
    widest = [features]
    after: list[str] = []  # leaf layers that ran after the classifier's place
    reached: list[Tensor] = []
    paths = {m: p for p, m in trunk.named_modules()}

    def measure(m: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, Tensor) and out.dim() > 0:
            widest[0] = max(widest[0], out.numel() // out.shape[0])
        if isinstance(m, _Features):
            reached.append(out)  # type: ignore[arg-type]
        elif reached:
            after.append(f"{paths[m]} ({type(m).__name__})")

    hooks = [m.register_forward_hook(measure) for m in trunk.modules() if not list(m.children())]
    trunk.eval()
    x = torch.zeros(TRIAL_BATCH, *input_shape)
    linear = [p for p, m in trunk.named_modules() if p and isinstance(m, nn.Linear)]
    guess = "" if chosen or not linear else (
        f"; sleepcl took the model's last nn.Linear, {head_path}, for the classifier: if the classifier is another "
        f"layer, name it with --head LAYER (its other Linear layers: {', '.join(linear)})")
    try:
        with torch.no_grad():
            out = trunk(x)
    except Exception as e:
        raise ValueError(f"{name}: the model without its classifier failed on a batch of shape {tuple(x.shape)}: "
                         f"{type(e).__name__}: {e}; the model must take inputs of shape (batch, "
                         f"{', '.join(map(str, input_shape))}){guess}") from e
    finally:
        for h in hooks:
            h.remove()
    same = isinstance(out, Tensor) and _same_values(out, reached[-1]) if reached else True
    if after or not same:
        ran = f" ({', '.join(after)})" if after else ""
        raise ValueError(f"{name}: the model computes something after its classifier {head_path}{ran}; sleepcl "
                         "replaces the classifier by one head per task and takes what reached it as the features, "
                         "so what comes after it would act on the features instead. Return the classifier's output "
                         "as it is (sleepcl trains with cross-entropy on the scores: a LogSoftmax or Softmax is not "
                         "needed)" + (guess or "; or name another layer with --head"))
    if not isinstance(out, Tensor) or tuple(out.shape) != (TRIAL_BATCH, features):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name}: what reaches the classifier is {got}, not (batch, {features}); the classifier must "
                         "be the model's last step, applied to (batch, features)"
                         + (guess or "; if it is another layer, name it with --head"))
    return max(widest[0], int(torch.tensor(input_shape).prod()))


def _check_buffers_stay(trunk: nn.Module, input_shape: tuple[int, ...], norm_layers: set[str], name: str) -> None:
    """Refuse layers other than norm layers whose buffers a training step changes (a strategy that freezes
    keeps per-task copies of norm layers only, so such state would drift under old tasks)."""
    before = {n: b.clone() for n, b in trunk.named_buffers()}
    trunk.train()
    with torch.no_grad():
        trunk(torch.randn(TRIAL_BATCH, *input_shape, generator=torch.Generator().manual_seed(0)))
    trunk.eval()
    for n, b in trunk.named_buffers():
        layer = n.rpartition(".")[0]
        if layer not in norm_layers and not torch.equal(before[n], b):
            kind = type(_find(trunk, layer)).__name__
            raise ValueError(f"{name}: layer {layer or '(the model)'} ({kind}) changes its buffer {n} in training; "
                             "sleepcl keeps per-task copies only of norm layers' statistics, so under a strategy "
                             "that freezes old tasks this state would drift. Use a norm layer sleepcl knows "
                             f"({', '.join(t.__name__.lstrip('_') for t in NORM_LAYERS)}) or a strategy that does not "
                             "freeze")
