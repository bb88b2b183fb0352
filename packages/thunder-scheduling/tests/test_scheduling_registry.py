"""The one factory: ``make_scheduler``'s errors name the knob (``ConfigError.knob``)."""

from __future__ import annotations

import pytest

from thunder_scheduling import DEFAULT_POLICY, ConfigError, make_scheduler
from thunder_scheduling.config import SchedulerConfig, UnknownKnob


def test_unknown_policy_names_the_policy_knob() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'nope'") as caught:
        make_scheduler("nope")
    assert caught.value.knob == "policy"


def test_unknown_knob_is_named() -> None:
    with pytest.raises(UnknownKnob, match="high_watermarks") as caught:
        make_scheduler("thunder", high_watermarks=0.9)
    assert caught.value.knob == "high_watermarks"
    with pytest.raises(UnknownKnob) as caught:
        make_scheduler("sticky", high_watermark=0.9)  # a knob of another policy
    assert caught.value.knob == "high_watermark"


def test_bad_values_name_their_knob() -> None:
    with pytest.raises(ConfigError, match="lease_s") as caught:
        make_scheduler("thunder", lease_s=0)
    assert caught.value.knob == "lease_s"
    with pytest.raises(ConfigError) as caught:
        make_scheduler("cache_aware", block_tokens=0)
    assert caught.value.knob == "block_tokens"


def test_scheduler_knobs_and_policy_knobs_are_split() -> None:
    core = make_scheduler("thunder", lease_s=60.0, high_watermark=0.9)
    assert core.config.lease_s == 60.0
    with pytest.raises(ConfigError, match="not both") as caught:
        make_scheduler("thunder", config=SchedulerConfig(), lease_s=60.0)
    assert caught.value.knob == "lease_s"


def test_prompt_block_tokens_only_for_a_policy_that_reads_prompt_blocks() -> None:
    assert make_scheduler(DEFAULT_POLICY).prompt_block_tokens is None
    assert make_scheduler("cache_aware").prompt_block_tokens == 64
    assert make_scheduler("cache_aware", block_tokens=16).prompt_block_tokens == 16

