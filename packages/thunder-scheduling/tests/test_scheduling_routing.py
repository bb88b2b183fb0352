"""Request-level routing (``routes_requests``): the gateway baselines spread requests like a
plain load balancer, while program-aware policies keep a program on its backend."""

from __future__ import annotations

from core_harness import Harness

from thunder_scheduling.commands import Admit
from thunder_scheduling.policies.cache_aware import CacheAwarePolicy, CacheAwareRouter


def _router(h: Harness) -> CacheAwareRouter:
    policy = h.scheduler.policy
    assert isinstance(policy, CacheAwarePolicy)
    return policy.router


def _backends_of(h: Harness, pid: str, n: int, blocks: tuple[int, ...] = ()) -> list[str]:
    chosen = []
    for _ in range(n):
        (admit,) = h.of(Admit, h.request(pid, 100, prompt_blocks=blocks))
        chosen.append(admit.backend)
        h.finish(pid, 100, 10)
    return chosen


def test_round_robin_rotates_every_request_of_one_program_across_backends() -> None:
    h = Harness("round_robin", {"a": 1000, "b": 1000, "c": 1000})
    assert _backends_of(h, "p1", 6) == ["a", "b", "c", "a", "b", "c"]
    # the program's charge followed its last request: only c holds it
    assert [h.backend(n).active_programs for n in "abc"] == [0, 0, 1]


def test_round_robin_rotation_is_shared_by_all_programs_and_skips_unhealthy() -> None:
    h = Harness("round_robin", {"a": 1000, "b": 1000, "c": 1000})
    assert _backends_of(h, "p1", 1) == ["a"]
    assert _backends_of(h, "p2", 1) == ["b"]
    h.backend_update("c", 1000, healthy=False)
    assert _backends_of(h, "p1", 2) == ["a", "b"]


def test_thunder_keeps_a_program_on_its_backend_across_requests() -> None:
    h = Harness("thunder", {"a": 1000, "b": 1000})
    assert len(set(_backends_of(h, "p1", 4))) == 1


def test_cache_aware_follows_the_prefix_and_releases_load_on_finish() -> None:
    h = Harness("cache_aware", {"a": 1000, "b": 1000})
    first = _backends_of(h, "p1", 1, blocks=(1, 2, 3, 4))
    other = _backends_of(h, "p2", 1, blocks=(50, 51))
    assert first != other                       # no match: the smaller tree
    # the same program's next prompt extends its prefix: routed back to where it lives
    assert _backends_of(h, "p1", 3, blocks=(1, 2, 3, 4, 5)) == first * 3
    assert _router(h).load == {"a": 0, "b": 0}   # every finish released load


def test_cache_aware_counts_in_flight_load_per_request() -> None:
    h = Harness("cache_aware", {"a": 1000, "b": 1000})
    h.request("p1", 100, prompt_blocks=(1, 2))
    h.request("p2", 100, prompt_blocks=(1, 2, 3))
    router = _router(h)
    assert sum(router.load.values()) == 2
    h.finish("p2", 100, 10)
    assert sum(router.load.values()) == 1
