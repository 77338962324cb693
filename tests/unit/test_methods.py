"""The learner's product surface: a few presets, every option by name, checkpoints continued by
their resolved settings whatever name made them, and combinations that would leave a part inert
refused with one clear line."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from connectors.memory import ListSink, MemorySource
from hle_stream.core.config import LearnerConfig
from hle_stream.core.methods import (
    DEFAULT_METHOD,
    FORMER_NAMES,
    PRESETS,
    REQUIRES,
    LearnerOptionError,
    canonical,
    equivalent,
    options_by_part,
    parse_assignment,
    resolve,
    resolve_name,
)
from hle_stream.service.checkpointer import CheckpointMismatchError
from hle_stream.service.config import DaemonConfig, ProcessingConfig
from hle_stream.service.daemon import Daemon

# every method name before the presets, with the settings it resolved to then (LearnerConfig()'s base)
FORMER = json.loads((Path(__file__).resolve().parents[1] / "data" / "former_methods.json").read_text())


def test_there_are_few_methods_and_the_default_is_hle():
    assert DEFAULT_METHOD == "hle" and len(PRESETS) <= 8
    assert set(FORMER) == set(FORMER_NAMES) | (set(FORMER) & set(PRESETS))


@pytest.mark.parametrize("name", sorted(FORMER))
def test_every_former_method_name_stands_for_exactly_the_settings_it_had(name):
    assert asdict(resolve_name(name)) == FORMER[name]


@pytest.mark.parametrize("name", sorted(set(FORMER) - set(PRESETS)))
def test_a_checkpoint_written_under_each_former_name_is_continued_by_its_preset_and_options(tmp_path, name):
    saved = _in_memory_run(tmp_path, name_settings=FORMER[name])
    saved.run()
    preset, options = FORMER_NAMES[name]
    continued = _in_memory_run(tmp_path, method=preset, overrides=options)
    continued.run()
    assert continued.processor.learner.seen == 48  # the first run's 24 events and this one's


def test_a_checkpoint_of_the_former_default_is_continued_by_method_hle(tmp_path):
    name = "pl-fms-ancestor-hint-after-ramp-colour-aug-lda-unit-tree-feature-drop"
    _in_memory_run(tmp_path, name_settings=FORMER[name]).run()
    continued = _in_memory_run(tmp_path, method="hle")
    continued.run()
    assert continued.processor.learner.seen == 48


def test_a_pl_fms_checkpoint_is_refused_under_hle_naming_each_differing_option(tmp_path):
    _in_memory_run(tmp_path, method="pl-fms").run()
    with pytest.raises(CheckpointMismatchError) as refused:
        _in_memory_run(tmp_path, method="hle").run()
    message = str(refused.value)
    for name in PRESETS["hle"]:
        assert f"{name} {getattr(LearnerConfig(), name)!r} (this run: {PRESETS['hle'][name]!r})" in message


def test_options_of_a_part_switched_off_do_not_stop_a_checkpoint_from_being_continued(tmp_path):
    # the discriminant off: its other options no longer matter, whichever values the names gave them
    _in_memory_run(tmp_path, method="hle", overrides=dict(discriminant_weight=0.0)).run()
    flat = dict(discriminant_weight=0.0, discriminant_normalise=False, discriminant_decode="flat")
    continued = _in_memory_run(tmp_path, method="hle", overrides=flat)
    continued.run()
    assert continued.processor.learner.seen == 48
    assert canonical(resolve("hle", flat).config) == canonical(resolve("hle", dict(discriminant_weight=0.0)).config)


def _part(key: str, on: bool) -> dict[str, object]:
    """Settings under which option ``key``'s part is on, or off."""
    need, value, _ = REQUIRES[key]
    if value == "balanced-importance":
        return {} if on else {"eviction": "reservoir", "adaptive_lr": False}
    return {need: (1.0 if on else 0.0) if value == "> 0" else on}


INERT_OPTIONS = {  # per option, a value it does not default to
    "importance_period": 3, "importance_ema": 0.5, "importance_probe": 8, "importance_rule": "released",
    "pseudo_threshold": 0.9, "fms_horizon": 100, "discriminant_shrinkage": 0.3, "discriminant_normalise": True,
    "discriminant_decode": "tree", "adaptive_lr_period": 2, "adaptive_lr_sliding": True,
}


@pytest.mark.parametrize("key", sorted(REQUIRES))
def test_an_option_set_for_a_part_that_is_off_is_refused_naming_both(key):
    with pytest.raises(LearnerOptionError, match=f"{key}=.* needs {REQUIRES[key][0]}"):
        resolve("pl-fms", {**_part(key, on=False), key: INERT_OPTIONS[key]})
    resolve("pl-fms", {**_part(key, on=True), key: INERT_OPTIONS[key]})  # with its part on: accepted


@pytest.mark.parametrize(("method", "options", "message"), [
    ("hle", dict(eviction="reservoir"), "adaptive_lr needs eviction=balanced-importance"),
    ("er", dict(pseudo_labels=True), "pseudo_labels needs eviction=balanced-importance"),
    ("pl-fms", dict(pseudo_loss_weight=0.5), "pseudo_loss_weight needs pseudo_labels=true"),
    ("hle", dict(supervision="path"), "replay_supervision=path needs supervision=own-level"),
    ("pl-fms", dict(replay_path_after_ramp=True), "replay_path_after_ramp needs replay_supervision=path"),
    ("hle", dict(flexible_sampling=False), "replay_path_after_ramp needs replay_supervision=path and flexible"),
    ("pl-fms", dict(replay_ancestor_weight=0.5), "replay_ancestor_weight needs replay_supervision=path"),
    ("pl-fms", dict(exp_reset_gamma=0.999), "exp_reset_gamma and adaptive_lr are two learning-rate schedules"),
])
def test_parts_that_cannot_act_together_are_refused(method, options, message):
    with pytest.raises(LearnerOptionError, match=message):
        resolve(method, options)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_on_its_own(name):
    assert resolve(name).sources == {**resolve(name).sources, **{k: f"method {name}" for k in PRESETS[name]}}


@pytest.mark.parametrize(("text", "value"), [
    ("vector_dropout=0", ("vector_dropout", 0.0)), ("vector-dropout=0.25", ("vector_dropout", 0.25)),
    ("importance_probe=none", ("importance_probe", None)), ("cutmix=false", ("cutmix", False)),
    ("eviction=reservoir", ("eviction", "reservoir")), ("batch_size=8", ("batch_size", 8)),
])
def test_options_are_read_by_name_with_their_type(text, value):
    assert parse_assignment(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("vector_dropot=0", "unknown learner option 'vector_dropot'; did you mean vector_dropout?"),
    ("eviction=fifo", "eviction='fifo': expected reservoir, balanced-importance"),
    ("batch_size=2.5", "batch_size='2.5': expected int"),
    ("cutmix=perhaps", "cutmix='perhaps': expected true or false"),
    ("vector_dropout", "expected KEY=VALUE"),
])
def test_a_bad_option_is_one_line_naming_the_key_and_what_it_takes(text, message):
    with pytest.raises(LearnerOptionError, match=message.replace("?", r"\?").replace("|", r"\|")):
        parse_assignment(text)








def _in_memory_run(checkpoint_dir: Path, method: str = "hle", overrides: dict | None = None,
                   name_settings: dict | None = None) -> Daemon:
    """Learns the next 24 events of a 48-event topic (a run that resumes reads the second half).
    ``name_settings``: a former name's resolved settings, as its checkpoint recorded them."""
    values = [json.dumps({"id": f"e{i}", "x": [float(i % 3)] * 4, "label": "ab"[i % 2] + ("/x" if i % 3 else "")})
              .encode() for i in range(48)]
    base = LearnerConfig(memory_size=16, batch_size=4, device="cpu")
    if name_settings is not None:  # the old checkpoint: its full settings on the preset with no options
        method, base = "pl-fms", LearnerConfig(**{**name_settings, "memory_size": 16, "batch_size": 4, "device": "cpu"})
    processing = ProcessingConfig(method=method, learner_config=base, learner_overrides=tuple((overrides or {}).items()))
    config = DaemonConfig(checkpoint_dir=checkpoint_dir, http_port=None, metrics=False, max_events=24,
                          processing=processing)
    return Daemon(config, lambda resume, dropped: (MemorySource("hle-events", [values], resume=resume), ListSink()))


def test_the_method_doc_lists_every_option_with_its_default_and_every_former_name():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "method.md").read_text()
    for part in options_by_part().values():
        for option in part:
            assert f"| `{option['name']}` | {option['type']} | `{option['default']}` | {option['help']} |" in doc
    for name in FORMER_NAMES:
        assert f"| `{name}` | `{equivalent(name)}` |" in doc
