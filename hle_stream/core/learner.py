"""The online learner: grows with the label tree, replays from memory, predicts every level.

One loop serves every method; what differs lives in parts built from their own settings
(``_parts``): the memory policy (reservoir or balanced importance), the stream sampler (FMS),
supervision, augmentation, the learning-rate schedule and the second expert fused into
predictions. The stream is consumed sample by sample for bookkeeping and in batches of ``batch_size // 2``
for training, as in the paper's code; samples short of a full batch wait for the next call.

On a GPU a training step never waits for the device: the memory's labels and bookkeeping live
on the host (``hle_stream.core.memory``), batches are assembled there, and the numerical guard
hands its verdict to the fused optimizer on the device; the host reads the guard's verdicts
once per stream batch, and the importance rule reads its losses once per scoring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

from hle_stream.core.augment import Augmentation
from hle_stream.core.backbones import build_backbone
from hle_stream.core.config import LearnerConfig
from hle_stream.core.device import HostStager, pick_device
from hle_stream.core.experts import DiscriminantExpert, NoExpert
from hle_stream.core.hierarchy import SEPARATOR, LabelTree
from hle_stream.core.inference import level_probabilities, prepare_inputs
from hle_stream.core.losses import per_sample_loss
from hle_stream.core.lr_schedule import LearningRate
from hle_stream.core.memory import ReplayMemory
from hle_stream.core.methods import check_parts
from hle_stream.core.model import HierarchicalNet, grow_head
from hle_stream.core.policies import BalancedImportancePolicy, ReservoirPolicy
from hle_stream.core.predictor import InputSpec, Predictor, prediction_paths
from hle_stream.core.rng import global_rng_from
from hle_stream.core.sampling import StreamSampler
from hle_stream.core.supervision import Supervision
from hle_stream.core.tree_tables import TreeTables

FORMAT_VERSION = 1  # of ``state_dict``


class IncompatibleStateError(ValueError):
    """A saved state written by a format this version cannot read."""


@dataclass(frozen=True)
class LearnerStats:
    """What the learner knows and holds, for metrics and reports."""

    version: int  # training steps taken: the model version predictions carry
    seen: int  # labelled samples observed
    classes_per_level: tuple[int, ...]  # known classes at levels 1, 2, ...
    memory_size: int
    memory_capacity: int
    memory_bytes: int  # the replay memory's preallocated tensors
    memory_per_level: dict[int, int]  # replay samples per labelled level
    memory_per_class: tuple[int, ...]  # replay samples per class, by the tree's global id
    nonfinite_steps: int  # steps skipped because their loss or gradient was not finite
    quarantined: int  # samples dropped from the memory after such a step
    discriminant_rejected: int  # samples the streaming discriminant left out as outliers


PUBLIC_FACE = frozenset({
    "observe", "relabel", "predict_proba", "predict", "predict_paths", "predict_then_learn", "predictor", "check_input",
    "input_spec", "stats", "finite", "state_dict", "from_state_dict", "config", "device", "tree", "steps", "seen",
})


class HierarchicalLearner:
    """Observe labelled batches, predict per-level probabilities.

    The loop is the learner's; each part owns its settings and state and is called at named
    points: the memory policy (where a sample goes, importance scoring), the stream sampler (when
    a step is due, which rows it takes), supervision (what each row teaches), augmentation, the
    learning-rate schedule (``new_class``, ``stepped``, ``memory_loss_changed``) and the second
    expert (``learn``, ``add``, ``frozen``: fused into every prediction).

    ``PUBLIC_FACE`` names the only part used outside ``hle_stream.core`` (a test reads every
    module's attribute uses to hold to it); ``config``, ``device``, ``tree``, ``steps`` and
    ``seen`` are read-only there.

    Examples
    --------
    >>> import torch
    >>> learner = HierarchicalLearner(LearnerConfig(memory_size=8, batch_size=4), (5,), torch.float32)
    >>> learner.observe(torch.randn(4, 5), ["a", "a/x", "b", "b/y"])
    >>> [p.shape[1] for p in learner.predict_proba(torch.randn(3, 5))]
    [2, 2]
    """

    def __init__(self, config: LearnerConfig, input_shape: Sequence[int], input_dtype: torch.dtype) -> None:
        check_parts(config, set())
        self.config = config
        self.device = pick_device(config.device)
        self.generator = torch.Generator().manual_seed(config.seed)  # sampling, augmentation, FMS
        # what draws from torch's global RNG in the libraries (weight init, CutMix's Beta) draws from this instead
        self.implicit_rng = torch.Generator().manual_seed(config.seed)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.is_image = len(self.input_shape) == 3
        self.tree = LabelTree(config.max_depth, config.max_classes)
        self.tables = TreeTables(self.tree, self.device)
        self.host_tables = TreeTables(self.tree, torch.device("cpu"))
        with global_rng_from(self.implicit_rng):
            self.net = HierarchicalNet(build_backbone(config.backbone, self.input_shape)).to(self.device)
        if self.is_image:
            # NHWC convolutions: faster training steps for the small CNN on CPU.
            self.net = self.net.to(memory_format=torch.channels_last)
        # fused Adam: one kernel for all parameters instead of a Python loop over them.
        self.optimizer = torch.optim.Adam(self.net.backbone.parameters(), lr=config.lr, fused=True)
        self.memory = ReplayMemory(config.memory_size, self.input_shape, input_dtype, config.max_depth, self.device)
        self.policy, self.sampler, self.supervision, self.augmentation, self.lr_schedule, self.expert = _parts(
            config, self.input_shape, self.optimizer, self.generator, self.implicit_rng)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.stager = HostStager(self.device)
        self._unit_scale = torch.ones((), device=self.device)  # the guard's gradient check scales by it
        self.first_seen: list[int] = []  # stream count when each class (global id) appeared
        self.seen = 0  # stream samples observed (t)
        self.offered = 0  # samples offered to the memory (reservoir counter)
        self.steps = 0
        self.nonfinite_steps = 0  # steps skipped because their loss or gradient was not finite
        self.quarantined = 0  # samples dropped from the memory after such a step
        self._pending: list[tuple[torch.Tensor, torch.Tensor, int, int, int]] = []
        # steps whose guard verdict the host has not read yet: (non-finite flag on the device, replayed slots)
        self._unsettled: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- learning ---------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, labels: Sequence[str], ids: Sequence[int] | None = None,
                train: bool = True) -> None:
        """Learn from labelled samples ``x`` (first dim = batch) with label paths ``labels``.

        Every path is validated first, so a malformed label rejects the batch before any of
        it is learned (``LabelPathError``). ``train=False`` (a compute budget): the samples
        grow the label tree and go through the memory's insertion rule, but take no gradient
        step; new classes still enter the memory at once and are replayed by later steps.
        """
        self.tree.check_all(labels)
        for i, label in enumerate(labels):
            self._register(label)
            targets, level, bin_id = self._encode(label)
            sample_id = int(ids[i]) if ids is not None else self.seen
            self.seen += 1
            item = (x[i], targets, level, bin_id, sample_id)
            if not train:
                self._remember(*item)
                continue
            if self.policy.insert_before_training:
                self._remember(*item)
            self._pending.append(item)
            self.sampler.count()
            if len(self._pending) >= self.sampler.stream_batch_size:
                self._train_on_pending()
        if labels:
            self.expert.learn(x, labels, self._global_path, self.tree.total_classes)

    def relabel(self, sample_id: int, label: str) -> bool:
        """A finer label for a sample learned earlier (``sample_id`` as given to ``observe``, or
        its position in the stream): the label tree grows, and if the sample sits in the replay
        memory its stored label is upgraded in place, so that replay teaches the finer level (and
        still the levels it was labelled at) and the memory is balanced by the new label. False
        when the sample is not in the memory."""
        self.tree.check_all([label])
        self._register(label)
        slot = self.memory.slot_of(sample_id)
        if slot is None:
            return False
        targets, level, bin_id = self._encode(label)
        # the sample now also stands for its finer classes
        old = {self.tree.global_id_of(h + 1, int(t)) for h, t in enumerate(self.memory.targets[slot]) if t >= 0}
        self.expert.add(self.memory.x[slot:slot + 1], [c for c in self._global_path(label) if c not in old])
        self.memory.relabel(slot, targets, level, bin_id)
        return True

    def _register(self, label: str) -> None:
        for new in self.tree.add(label):
            with global_rng_from(self.implicit_rng):
                grow_head(self.net, self.optimizer, new.level, self.tree.num_classes(new.level))
            self.first_seen.append(self.seen)
            self.lr_schedule.new_class()

    def _encode(self, label: str) -> tuple[torch.Tensor, int, int]:
        indices = self.tree.path_indices(label)
        targets = torch.full((self.config.max_depth,), -1, dtype=torch.long)
        targets[: len(indices)] = torch.tensor(indices)
        return targets, len(indices), self.tree.global_id(label)

    def _global_path(self, label: str) -> list[int]:
        """Global ids of a known label path's classes, coarsest first."""
        segments = self.tree.split(label)
        return [self.tree.global_id(SEPARATOR.join(segments[:k])) for k in range(1, len(segments) + 1)]

    def _remember(self, x: torch.Tensor, targets: torch.Tensor, level: int, bin_id: int, sample_id: int) -> None:
        self.offered += 1
        slot, score = self.policy.place(self.memory, bin_id, self.tree.total_classes, self.offered, self.generator)
        if slot is not None:
            self.memory.write(slot, torch.as_tensor(x), targets, level, bin_id, sample_id, score)

    def _train_on_pending(self) -> None:
        x = self.stager.to_device([torch.as_tensor(p[0]) for p in self._pending])
        targets = torch.stack([p[1] for p in self._pending])
        levels = torch.tensor([p[2] for p in self._pending])
        first_seen = self._first_seen_of([p[3] for p in self._pending])
        skipped_before = self.nonfinite_steps
        for _ in range(self.sampler.steps_due()):
            self._train_step(x, targets, levels, first_seen)
        self._settle()
        if self.nonfinite_steps == skipped_before and not self.policy.insert_before_training:
            for item in self._pending:
                self._remember(*item)
        self._pending.clear()

    def _first_seen_of(self, bin_ids: list[int]) -> torch.Tensor:
        """The stream count at which each class (global id) appeared: the t_c of FMS."""
        return torch.tensor([self.first_seen[b] for b in bin_ids], dtype=torch.long)

    def _ramp_share(self, bin_ids: torch.Tensor) -> torch.Tensor | None:
        """FMS's keep probability now of classes ``bin_ids`` (``None``: every sample is kept)."""
        return self.sampler.share(self.seen, self._first_seen_of(bin_ids.tolist()), self.tree.total_classes)

    def _train_step(self, x: torch.Tensor, targets: torch.Tensor, levels: torch.Tensor, first_seen: torch.Tensor) -> None:
        """One gradient step on stream rows (``x`` on the device, the rest on the host) + memory.
        A step whose loss or gradient is not finite changes no weight (see ``_settle``)."""
        keep, slots = self.sampler.rows(self.seen, first_seen, self.tree.total_classes, self.memory.size,
                                        self.generator)
        if keep.numel() + slots.numel() == 0:
            return
        mem = self.memory
        batch_x = torch.cat([x[keep.to(self.device, non_blocking=True)], mem.x[slots.to(self.device, non_blocking=True)]])
        batch_targets, weights = self.supervision.batch(targets[keep], levels[keep], mem, slots, self._ramp_share)
        inputs = self.augmentation.inputs(prepare_inputs(batch_x, self.is_image, self.device))
        inputs, partner, lam = self.augmentation.mix(inputs, torch.cat([levels[keep], mem.level[slots]]))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            logits = self.net(inputs)
        loss = per_sample_loss(logits, batch_targets, partner, lam, weights,
                               self.supervision.incoming(keep.numel())).sum() / inputs.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nonfinite = self._nonfinite(loss)
        self.optimizer.found_inf = nonfinite  # the fused Adam step skips itself on the device when set
        self.optimizer.step()
        self.steps += 1
        self._unsettled.append((nonfinite, slots))
        self.lr_schedule.stepped()
        if self.policy.record_use(slots):
            self._settle()
            self._rescore_memory()

    def _nonfinite(self, loss: torch.Tensor) -> torch.Tensor:
        """The numerical guard: 1.0 (on the device) when the loss or any gradient holds a NaN or
        Inf, which must never reach the weights (one bad sample would turn every parameter to NaN,
        for good); the optimizer then skips the step. The gradients are checked by the kernel
        ``torch.amp.GradScaler`` uses (one pass over all of them, scaled by exactly 1), much
        cheaper on the CPU than a gradient norm."""
        found = (~torch.isfinite(loss)).float()
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self._unit_scale)
        return found

    def _settle(self) -> None:
        """Read the guard's verdicts on the steps taken since the last reading (one host sync for
        all of them) and quarantine after the first skipped one. Later skips of the same stream
        batch most likely share its culprit (its stream rows are in every step); a culprit that
        survives in the memory fails a later step and is caught then. Until the verdicts are read
        a skipped step counts as a step (``steps``, the importance period, ``er-paper``'s decay);
        it never moves a weight."""
        if not self._unsettled:
            return
        skipped = torch.stack([flag for flag, _ in self._unsettled]).cpu().bool().tolist()
        replayed = [slots for (_, slots), bad in zip(self._unsettled, skipped) if bad]
        self._unsettled.clear()
        if replayed:
            self.steps -= len(replayed)
            self.nonfinite_steps += len(replayed)
            self._quarantine(replayed[0])

    def _quarantine(self, memory_slots: torch.Tensor) -> None:
        """Drop from the memory the slots a skipped step replayed and the stream samples of the
        pending batch, so that the culprit, wherever it is, is not replayed again."""
        mem = self.memory
        stream_ids = torch.tensor([p[4] for p in self._pending])
        from_stream = torch.isin(mem.sample_id[: mem.size], stream_ids).nonzero().flatten()
        doomed = torch.unique(torch.cat([memory_slots, from_stream]))
        order = mem.remove(doomed)
        self.quarantined += int(doomed.numel())
        self.policy.reorder(order)

    def _rescore_memory(self) -> None:
        """The memory policy scores its samples with the network as it is; the learning rate
        hears how the memory loss moved."""
        self.net.eval()
        delta = self.policy.rescore(self.memory, self.generator, self._memory_logits,
                                    lambda slots: self.supervision.memory_targets(self.memory, slots, self._ramp_share),
                                    self.host_tables)
        self.net.train()
        self.lr_schedule.memory_loss_changed(delta)

    def _memory_logits(self, slots: torch.Tensor) -> list[torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            return self.net(prepare_inputs(self.memory.x[slots.to(self.device, non_blocking=True)], self.is_image,
                                           self.device))

    # -- prediction -------------------------------------------------------------------------
    def predict_proba(self, x: torch.Tensor, chunk: int = 512) -> list[torch.Tensor]:
        """Probabilities over the known classes of each level (coarsest first), on the CPU; no
        levels before the first label is learned."""
        if not self.net.heads:
            return []
        return level_probabilities(self.net, x, self.is_image, self.config.decode, self.tables.parents(),
                                   self.use_amp, chunk, self.expert.frozen(self.host_tables, self.tree.depth, copy=False),
                                   self.expert.weight)

    def predict(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Most probable class index per level, coarsest first."""
        return [p.argmax(dim=1) for p in self.predict_proba(x)]

    def predict_paths(self, x: torch.Tensor, threshold: float) -> list[list[dict[str, Any]]]:
        """The served answer per sample: ``{"level", "label", "probability"}`` per level, coarse to
        fine, down to the last level at least ``threshold`` sure."""
        return prediction_paths(self.tree, self.predict_proba(x), x.shape[0], threshold)

    def predict_then_learn(self, x: torch.Tensor, labels: Sequence[str | None], ids: Sequence[int] | None = None,
                           on_predicted: Callable[[list[torch.Tensor]], None] | None = None,
                           train: bool = True) -> list[torch.Tensor]:
        """The prequential step, shared by the benchmark, the daemon and the speed benchmarks:
        predict every row with the model as it is, hand the probabilities to ``on_predicted``
        (scoring, answers: before the tree grows), then learn from the labelled rows (``None``
        labels are only predicted; ``train`` as in ``observe``). Returns the probabilities;
        errors of learning propagate."""
        probabilities = self.predict_proba(x)
        if on_predicted is not None:
            on_predicted(probabilities)
        labelled = [i for i, label in enumerate(labels) if label is not None]
        if labelled:
            rows = x if len(labelled) == len(labels) else x[labelled]
            self.observe(rows, [labels[i] for i in labelled],
                         None if ids is None else [ids[i] for i in labelled], train=train)
        return probabilities

    def predictor(self, previous: Predictor | None = None, version: int | None = None) -> Predictor:
        """A frozen copy to predict with while training goes on (``previous``'s label tree is
        reused when no class was added since: classes only ever grow); ``version`` defaults to the
        train steps."""
        if previous is not None and previous.tree.total_classes == self.tree.total_classes:
            tree, parents = previous.tree, previous.parents
        else:
            tree = LabelTree.from_state_dict(self.tree.state_dict())
            parents = TreeTables(tree, self.device).parents()
        return Predictor(self.net, tree, parents, self.input_spec, self.is_image, self.config.decode, self.use_amp,
                         self.steps if version is None else version, self.config.backbone,
                         self.expert.frozen(self.host_tables, self.tree.depth, copy=True), self.expert.weight)

    # -- what it is and holds ---------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` if the backbone cannot take samples like ``x`` (an image too small
        for its pooling, say): a daemon refuses such a first event rather than fix it for good."""
        self.net.eval()
        try:
            with torch.no_grad():
                self.net.backbone(prepare_inputs(x, self.is_image, self.device))
        except RuntimeError as err:
            raise ValueError(f"the {self.config.backbone} backbone cannot take features of shape "
                             f"{tuple(x.shape[1:])}: {err}") from None
        finally:
            self.net.train()

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_shape, self.memory.x.dtype)

    def finite(self) -> bool:
        """Whether every weight is finite."""
        return self.net.finite()

    def stats(self) -> LearnerStats:
        mem = self.memory
        levels = torch.bincount(mem.level[: mem.size], minlength=self.tree.depth + 1).tolist()
        per_class = torch.bincount(mem.bin[: mem.size], minlength=self.tree.total_classes).tolist()
        return LearnerStats(
            version=self.steps, seen=self.seen,
            classes_per_level=tuple(self.tree.num_classes(lv) for lv in range(1, self.tree.depth + 1)),
            memory_size=mem.size, memory_capacity=mem.capacity, memory_bytes=mem.nbytes(),
            memory_per_level={lv: n for lv, n in enumerate(levels) if lv > 0 and n > 0},
            memory_per_class=tuple(per_class[: self.tree.total_classes]),
            nonfinite_steps=self.nonfinite_steps, quarantined=self.quarantined,
            discriminant_rejected=self.expert.rejected)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the next training step depends on, as tensors and plain data (no pickled
        objects: it loads with ``torch.load(..., weights_only=True)``, so a checkpoint file can
        never run code). Each part owns its state; the learner composes them."""
        pending = self._pending
        state: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "input_shape": list(self.input_shape),
            "input_dtype": str(self.memory.x.dtype).removeprefix("torch."),
            "tree": self.tree.state_dict(),
            "head_sizes": self.net.head_sizes(),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "memory": self.memory.state_dict(),
            "first_seen": list(self.first_seen),
            "counters": {"seen": self.seen, "offered": self.offered, "steps": self.steps, "updates": self.sampler.updates,
                         "nonfinite_steps": self.nonfinite_steps, "quarantined": self.quarantined},
            "pending": {
                "x": torch.stack([torch.as_tensor(p[0]) for p in pending]) if pending else None,
                "targets": torch.stack([p[1] for p in pending]) if pending else None,
                "meta": [[p[2], p[3], p[4]] for p in pending],
            },
            "generator": self.generator.get_state(),
            "torch_rng": self.implicit_rng.get_state(),
        }
        for part in (self.policy, self.lr_schedule, self.expert):
            state.update(part.state_dict())
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | None = None) -> "HierarchicalLearner":
        """A learner that continues exactly where the saved one stopped (``device`` may override)."""
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatibleStateError(f"learner state format {version} is not supported "
                                         f"(this version reads {FORMAT_VERSION})")
        config = LearnerConfig(**state["config"])
        if device is not None:
            config = config.with_(device=device)
        learner = cls(config, state["input_shape"], getattr(torch, state["input_dtype"]))
        learner._load(state)
        return learner

    def _load(self, state: dict[str, Any]) -> None:
        self.tree = LabelTree.from_state_dict(state["tree"])
        self.tables = TreeTables(self.tree, self.device)
        self.host_tables = TreeTables(self.tree, torch.device("cpu"))
        with global_rng_from(self.implicit_rng):  # the saved weights replace these right away
            for level, size in enumerate(state["head_sizes"], start=1):
                grow_head(self.net, self.optimizer, level, size)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(_one_param_group(state["optimizer"]))
        self.memory.load_state_dict(state["memory"])
        self.first_seen = list(state["first_seen"])
        counters = state["counters"]
        self.seen, self.offered, self.steps, self.sampler.updates = (
            counters["seen"], counters["offered"], counters["steps"], counters["updates"])
        self.nonfinite_steps = counters.get("nonfinite_steps", 0)  # absent before the numerical guard
        self.quarantined = counters.get("quarantined", 0)
        pending = state["pending"]
        self._pending = [(pending["x"][i], pending["targets"][i], *meta) for i, meta in enumerate(pending["meta"])]
        for part in (self.policy, self.lr_schedule, self.expert):
            part.load_state_dict(state)
        self.generator.set_state(state["generator"])
        self.implicit_rng.set_state(state["torch_rng"])


def _one_param_group(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """States saved when each head had its own parameter group, merged into the one group heads
    now join (same parameter order: backbone, then the heads by level); the learning rates of
    all groups were always equal."""
    groups = optimizer_state["param_groups"]
    if len(groups) == 1:
        return optimizer_state
    merged = {**groups[0], "params": [index for group in groups for index in group["params"]]}
    return {**optimizer_state, "param_groups": [merged]}


def _parts(config: LearnerConfig, input_shape: tuple[int, ...], optimizer: torch.optim.Optimizer,
           generator: torch.Generator, implicit_rng: torch.Generator) -> tuple[
        ReservoirPolicy | BalancedImportancePolicy, StreamSampler, Supervision, Augmentation, LearningRate,
        DiscriminantExpert | NoExpert]:
    """The learner's parts, each built from its own settings (``LearnerConfig``'s parts)."""
    if config.eviction == "balanced-importance":
        policy: ReservoirPolicy | BalancedImportancePolicy = BalancedImportancePolicy(
            config.memory_size, config.importance_period, config.importance_ema, config.importance_probe,
            config.importance_rule, config.pseudo_labels, config.pseudo_threshold, config.insert_before_training)
    else:
        policy = ReservoirPolicy(config.insert_before_training)
    sampler = StreamSampler(config.batch_size, config.online_iter, config.flexible_sampling, config.fms_horizon)
    supervision = Supervision(config.supervision, config.replay_supervision, config.replay_ancestor_weight,
                              config.replay_path_after_ramp, config.pseudo_loss_weight, config.asymmetric_loss)
    augmentation = Augmentation(input_shape, config.augmentation, config.augment, config.cutmix, config.vector_dropout,
                                generator, implicit_rng)
    lr_schedule = LearningRate(optimizer, config.lr, config.adaptive_lr, config.adaptive_lr_period,
                               config.adaptive_lr_sliding, config.exp_reset_gamma)
    expert: DiscriminantExpert | NoExpert = NoExpert()
    if config.discriminant_weight > 0:
        expert = DiscriminantExpert(input_shape, config.discriminant_weight, config.discriminant_shrinkage,
                                    config.discriminant_normalise, config.discriminant_decode, config.seed)
    return policy, sampler, supervision, augmentation, lr_schedule, expert
