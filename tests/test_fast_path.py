"""The fast path (the engine's default) learns what the reference path learns.

Stated tolerance: for the same seeds, every per-task test and validation accuracy of the fast path is
within 0.01 of the reference path's (2 samples of mnist-5k's ~200 per task; in practice they are equal),
the owner maps are identical, and the weights agree to 1e-4 absolute (weights are ~0.1; the paths drift
apart by float32 rounding only: fused Adam and the fast linear backward round differently from foreach
Adam and autograd's own backward; observed differences are 1e-7 under PackNet, 1e-5 under Memory).
"""

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import assert_task1_weights_stay, run_epochs_inside
from sleepcl.config import RunConfig
from sleepcl.models import build_network
from sleepcl.models.paper import _StackedLinear
from sleepcl.engine.population import FAST_PARTS, MemberAdam, Population, fused_adam_available, speed_parts

TOL = 0.01
SMALL = dict(widths=(64, 32), epochs=2, retrain_epochs=2, batch_size=64)


def _members(**kw):
    return [RunConfig(seed=0, rounds=1, final_free=0.9, **{**SMALL, **kw}),
            RunConfig(seed=1, rounds=2, final_free=0.5, **{**SMALL, **kw})]


def _assert_same_learning(a: Population, b: Population, ra, rb):
    for x, y in zip(ra, rb):
        for key in ("accuracy_matrix", "val_accuracy_matrix"):
            for row_x, row_y in zip(getattr(x, key), getattr(y, key)):
                assert [v is None for v in row_x] == [v is None for v in row_y]
                assert all(abs(u - v) <= TOL for u, v in zip(row_x, row_y) if u is not None), (key, row_x, row_y)
        assert x.free_fraction_after_task == y.free_fraction_after_task
    for name in a.owner:
        assert torch.equal(a.owner[name], b.owner[name]), f"{name}: the paths pruned different weights"
    for name in a.params:
        torch.testing.assert_close(a.params[name].detach(), b.params[name].detach(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("strategy", ["packnet", "memory"])
def test_fast_path_learns_what_the_reference_path_learns(mnist5k, strategy):
    members = _members(strategy=strategy)
    fast, ref = Population(members, mnist5k), Population(members, mnist5k, speed="reference")
    assert fast.parts == frozenset(FAST_PARTS) and fast.adam == "fused"
    assert ref.parts == frozenset() and ref.adam == "foreach"
    _assert_same_learning(fast, ref, fast.fit(), ref.fit())


def test_fast_path_is_not_the_reference_path_bit_for_bit(mnist5k):
    """Guards the test above: the two paths really compute differently (else it would prove nothing)."""
    members = _members()[:1]
    fast, ref = Population(members, mnist5k), Population(members, mnist5k, speed="reference")
    fast.fit(), ref.fit()
    assert not all(torch.equal(fast.params[n], ref.params[n]) for n in fast.params)


def test_gpu_choices_on_cpu_whole_tensor_adam_grouped_convs_and_tf32(mnist5k, monkeypatch):
    """Off CPU the fast path hands whole stacked tensors to the fused kernel, keeps the grouped convolution
    and may allow TF32: the same code, forced here on CPU, learns what the reference path learns."""
    monkeypatch.setattr(MemberAdam, "PER_MEMBER_DEVICES", frozenset())
    members = _members()
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    gpu_like = Population(members, mnist5k, speed=[p for p in FAST_PARTS if p != "member_convs"], tf32=True)
    ref = Population(members, mnist5k, speed="reference")
    optimizer = gpu_like.session(gpu_like.days()[0], 0).optimizer
    assert not optimizer.per_member
    _assert_same_learning(gpu_like, ref, gpu_like.fit(), ref.fit())
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_fast_path_vgg_with_dropout_matches_reference(mnist5k):
    bench = dataclasses.replace(mnist5k, train=tuple(t[:96] for t in mnist5k.train[:2]), val=mnist5k.val[:2],
                                test=mnist5k.test[:2], classes=mnist5k.classes[:2])
    small = dict(network="vgg", widths=(4, 4, 8, 8, 16), n_tasks=2, epochs=1, retrain_epochs=2, batch_size=32,
                 lr=1e-3)
    members = [RunConfig(seed=0, rounds=1, **small), RunConfig(seed=1, rounds=2, final_free=0.5, **small)]
    fast, ref = Population(members, bench), Population(members, bench, speed="reference")
    _assert_same_learning(fast, ref, fast.fit(), ref.fit())


def test_each_fast_part_alone_keeps_frozen_weights_exact(mnist5k):
    """Any subset of the parts is a valid engine: with each part alone, task 1's weights never move."""
    members = [RunConfig(seed=0, rounds=2, final_free=0.5, widths=(16, 16), epochs=1, retrain_epochs=2,
                         batch_size=128, n_tasks=3)]
    bench = dataclasses.replace(mnist5k, train=mnist5k.train[:3], val=mnist5k.val[:3], test=mnist5k.test[:3],
                                classes=mnist5k.classes[:3])
    for part in FAST_PARTS:
        assert_task1_weights_stay(Population(members, bench, speed=[part]), part)


def test_stacked_linear_gradients_equal_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=g, requires_grad=True)
    w = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    b = torch.randn(3, 4, generator=g, requires_grad=True)
    up = torch.randn(3, 7, 4, generator=g)
    out = _StackedLinear.apply(x, w, b)
    expected = torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))
    assert torch.equal(out, expected)
    grads = torch.autograd.grad((out * up).sum(), (x, w, b))
    reference = torch.autograd.grad((expected * up).sum(), (x, w, b))
    for got, want in zip(grads, reference):
        torch.testing.assert_close(got, want)
    assert grads[1].is_contiguous()  # the point of it: the weight gradient in the weight's own layout


def test_fast_network_gives_the_same_forward():
    net = build_network("mlp", (1, 4, 4), n_tasks=2, widths=(8, 8))
    params = {k: torch.stack([v, v * 0.5]).requires_grad_() for k, v in net.member_state(1)[0].items()}
    x = torch.randn(2, 3, 1, 4, 4)
    fast = build_network("mlp", (1, 4, 4), n_tasks=2, widths=(8, 8), fast=True)
    assert torch.equal(fast.logits(params, x, 1), net.logits(params, x, 1))


def _member_adam_run(params, grads, masks):
    """Three steps of MemberAdam, with a prune (each member loses a trainable weight of "b") after the first."""
    params = {n: t.clone().requires_grad_() for n, t in params.items()}
    masks = {n: t.clone() for n, t in masks.items()}
    opt = MemberAdam(params, list(params), masks, 1e-2, compact_below=0.25)
    modes = list(opt.mode["b"])
    for k in range(3):
        for n, p in params.items():
            p.grad = grads[n].clone()
        if k == 1:
            for m in range(masks["b"].shape[0]):
                flat = masks["b"][m].view(-1)
                flat[int(flat.nonzero()[0])] = 0
                opt.member_pruned(m)
        opt.step()
    return modes, {n: p.detach() for n, p in params.items()}, masks


def test_member_adam_updates_a_member_as_if_alone_whatever_its_position():
    """The fused kernel rounds a tensor's vector tail differently: a member handed over as its own tensor
    is updated exactly as alone, at any position, in every mode (free, masked, compact), sizes with tails."""
    assert fused_adam_available("cpu")
    g = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(3, 10, generator=g), "b": torch.randn(3, 7, 9, generator=g)}
    grads = {n: torch.randn(t.shape, generator=g) for n, t in params.items()}
    mask = (torch.rand(3, 7, 9, generator=g) > 0.5).float()
    mask[0] = 1.0                                                   # member 0 trains everything
    mask[2] = (torch.rand(7, 9, generator=g) > 0.85).float()        # member 2 few weights
    modes, together, _ = _member_adam_run(params, grads, {"b": mask})
    assert modes == ["free", "masked", "compact"]
    for m in range(3):
        one = lambda d: {n: t[m:m + 1] for n, t in d.items()}  # noqa: E731
        _, alone, _ = _member_adam_run(one(params), one(grads), {"b": mask[m:m + 1]})
        for n in params:
            assert torch.equal(together[n][m], alone[n][0]), (m, n)
    for m in (1, 2):  # a weight the member may not train never moved
        frozen = mask[m] == 0
        assert frozen.any() and torch.equal(together["b"][m][frozen], params["b"][m][frozen])
    assert not torch.equal(together["b"][2], params["b"][2])  # ...while its trainable ones did


def test_speed_options_are_checked_and_not_part_of_identity(mnist5k):
    assert speed_parts("fast") == frozenset(FAST_PARTS) and speed_parts("reference") == frozenset()
    assert speed_parts(["fused_adam"]) == {"fused_adam"}
    with pytest.raises(ValueError, match="unknown speed"):
        Population(_members(), mnist5k, speed="turbo")
    with pytest.raises(ValueError, match="unknown fast-path parts"):
        Population(_members(), mnist5k, speed=["warp"])
    with pytest.raises(ValueError, match="unknown adam mode"):
        Population(_members(), mnist5k, adam="sgd")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert not fields & {"speed", "adam", "tf32"}  # a run's identity cannot depend on how it was computed


# Ops that make the host wait for the device on CUDA: a value read back (item, bool, int, equal), or an
# output whose size depends on the data (nonzero, masked_select, unique, boolean-mask indexing).
SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal", "aten::nonzero",
                      "aten::nonzero_static", "aten::masked_select", "aten::unique_consecutive", "aten::_unique",
                      "aten::_unique2", "aten::unique_dim", "aten::repeat_interleave", "aten::argwhere"})


class _HostSyncs(TorchDispatchMode):
    """Records every op dispatched under it that would synchronise the host with a CUDA device."""

    def __init__(self, found: list[str] | None = None) -> None:
        super().__init__()
        self.found: list[str] = [] if found is None else found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNC_OPS:
            self.found.append(name)
        elif name.startswith("aten::index") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for a in args if isinstance(a, (list, tuple)) for i in a):
            self.found.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


def test_the_recorder_sees_a_host_sync():
    """Guards the test below: a read-back and a boolean mask are caught."""
    with _HostSyncs() as mode:
        x = torch.arange(6.0)
        _ = x.sum().item()
        _ = x[x > 2]
    assert "aten::_local_scalar_dense" in mode.found and any("boolean" in f for f in mode.found)


@pytest.mark.parametrize("case", ["packnet", "memory", "vgg-gpu-like"])
def test_no_host_sync_inside_an_epoch(mnist5k, monkeypatch, case):
    """Inside an epoch nothing waits for the device (on CUDA a sync per step would idle the GPU between
    kernels): every op of every step, backward and optimizer included, is recorded on CPU, for the fast
    path (masked days, compact nights, per-sample task routing, dropout). Not for the reference path:
    torch.optim.Adam keeps its step count on the host, even for CUDA parameters, and reads it with item()
    each step: a read of host memory, which this CPU recording cannot tell from a device sync."""
    found: list[str] = []
    run_epochs_inside(monkeypatch, lambda: _HostSyncs(found))
    bench = dataclasses.replace(mnist5k, train=tuple(t[:128] for t in mnist5k.train[:2]), val=mnist5k.val[:2],
                                test=mnist5k.test[:2], classes=mnist5k.classes[:2])
    small = dict(widths=(16, 16), n_tasks=2, epochs=1, retrain_epochs=2, batch_size=32)
    speed: str | list[str] = "fast"
    if case == "vgg-gpu-like":
        monkeypatch.setattr(MemberAdam, "PER_MEMBER_DEVICES", frozenset())
        small.update(network="vgg", widths=(4, 4, 8, 8, 16))
        speed = [p for p in FAST_PARTS if p != "member_convs"]
    members = [RunConfig(seed=0, rounds=2, final_free=0.9, strategy="memory" if case == "memory" else "packnet",
                         **small)]
    pop = Population(members, bench, speed=speed)
    pop.fit()
    assert found == [], f"host syncs inside an epoch: {sorted(set(found))}"
