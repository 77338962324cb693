"""A training step never reads device data on the host, on the CPU too.

On a GPU every host read of a device tensor (``int(t)``, ``bool(t.any())``, ``t.nonzero()``,
``t.cpu()``) stalls the host until the device has caught up. ``torch.cuda.set_sync_debug_mode``
counts them on a GPU (``benchmarks/gpu.py``); this test finds them on the CPU by tracking which
tensors would live on the device: the weights, the optimizer's state, the memory's samples, the
staged stream batch and whatever is sent with ``.to(device)``, and everything computed from them.
Host reads of such a tensor are allowed only where the learner says it syncs: reading the
guard's verdicts once per stream batch (``_settle``) and the scoring's losses (``_rescore_memory``).
"""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hle_stream.core.learner import HierarchicalLearner
from hle_stream.core.methods import DEFAULT_METHOD, resolve_name

# aten ops that hand device data to the host: the host must wait for the value, or for a size
HOST_READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
              "aten.is_nonzero.default", "aten.equal.default", "aten._unique2.default", "aten.unique_dim.default",
              "aten.unique_consecutive.default", "aten.bincount.default", "aten.repeat_interleave.Tensor"}
ALLOWED_IN = {"_settle", "_rescore_memory"}
LABELS = ["a", "b", "c", "a/x", "a/y", "b/x", "c/x", "b/x/p", "b/x/q", "a/y/r"]


class DeviceTracker(TorchDispatchMode):
    """Marks tensors as device-resident (keeping them alive, so that no address is reused) and
    records every host read of one, with the learner function it was made in."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: set[int] = set()
        self.alive: list[torch.Tensor] = []
        self.reads: list[tuple[str, str]] = []

    def mark(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel():  # an empty tensor has no storage of its own to tell it by
            self.addresses.add(tensor.untyped_storage().data_ptr())
            self.alive.append(tensor)
        return tensor

    def is_on_device(self, tensor: object) -> bool:
        return (isinstance(tensor, torch.Tensor) and bool(tensor.numel())
                and tensor.untyped_storage().data_ptr() in self.addresses)

    def record_read(self, what: str) -> None:
        learner_frames = [f.name for f in traceback.extract_stack() if f.filename.endswith("learner.py")]
        self.reads.append((what, learner_frames[-1] if learner_frames else "?"))
        if not ALLOWED_IN & set(learner_frames):
            where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_stack()
                     if "hle_stream" in f.filename]
            self.reads[-1] = (what, "DISALLOWED at " + where[-1])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs, _ = tree_flatten((args, kwargs or {}))
        from_device = any(self.is_on_device(t) for t in inputs)
        bool_index = str(func).startswith("aten.index") and any(
            isinstance(t, torch.Tensor) and t.dtype == torch.bool and self.is_on_device(t) for t in inputs)
        if from_device and (str(func) in HOST_READS or bool_index):
            self.record_read(str(func))
        out = func(*args, **(kwargs or {}))
        if from_device:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.mark(t)
        return out


@pytest.fixture
def tracker(monkeypatch):
    tracker = DeviceTracker()
    to, cpu, tolist = torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.tolist

    def to_device(self, *args, **kwargs):  # on the CPU `.to(cpu)` returns the host tensor itself
        out = to(self, *args, **kwargs)
        return tracker.mark(out.clone()) if out is self and not tracker.is_on_device(self) else out

    def to_host(self, *args, **kwargs):  # a host copy, no longer marked
        if not tracker.is_on_device(self):
            return cpu(self, *args, **kwargs)
        tracker.record_read("cpu")
        with torch.utils._python_dispatch._disable_current_modes():
            return cpu(self, *args, **kwargs).clone()

    def read_list(self):
        if tracker.is_on_device(self):
            tracker.record_read("tolist")
        return tolist(self)

    monkeypatch.setattr(torch.Tensor, "to", to_device)
    monkeypatch.setattr(torch.Tensor, "cpu", to_host)
    monkeypatch.setattr(torch.Tensor, "tolist", read_list)
    return tracker


@pytest.mark.parametrize("method", ["pl-fms", DEFAULT_METHOD, "pl-fms-pl", "pl-fms-ace", "er"])
def test_a_training_step_reads_nothing_from_the_device_but_the_guard_verdicts_and_the_scores(
        small_config, tracker, method):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (400, 1, 16, 16), dtype=torch.uint8)
    labels = [LABELS[i % len(LABELS)] for i in range(len(x))]
    learner = HierarchicalLearner(resolve_name(method, small_config.with_(memory_size=40)), (1, 16, 16), x.dtype)
    for start in range(0, 360, 4):  # every class is known and the memory is full
        learner.observe(x[start:start + 4], labels[start:start + 4])
    for tensor in [*learner.net.parameters(), learner.memory.x]:
        tracker.mark(tensor)
    for state in learner.optimizer.state.values():
        for tensor in state.values():
            tracker.mark(tensor)
    stage = learner.stager.to_device
    learner.stager.to_device = lambda samples: tracker.mark(stage(samples).clone())
    steps, settles = learner.steps, 0
    settle = learner._settle

    def counted_settle():
        nonlocal settles
        settles += 1
        settle()

    learner._settle = counted_settle
    with tracker:
        for start in range(360, 400, 4):
            learner.observe(x[start:start + 4], labels[start:start + 4])
    assert learner.steps - steps == 40
    disallowed = [read for read in tracker.reads if read[1].startswith("DISALLOWED")]
    assert not disallowed, disallowed
    settle_reads = [read for read in tracker.reads if read[1] == "_settle"]
    assert len(settle_reads) <= settles  # one read per reading of the verdicts, not one per step
