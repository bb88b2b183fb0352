"""Garbage-collection decisions, as pure functions (no I/O, no clock): the manager executes them.

``plan_reconcile``: at start-up every runtime that carries our labels is either *adopted* (its
owner key is the key of a program the scheduler still knows) or *reclaimed* (pool runtimes of a
previous manager, runtimes of unknown programs, half-made runtimes without an owner, orphaned
volumes). This is what makes a SIGKILLed manager leak-free: ownership lives on the runtimes.

``plan_image_eviction``: when runtime disk plus image disk exceeds the budget, remove images
least recently used first, skipping every spec that a queued or running program still needs,
until the total fits. ThunderAgent (arXiv 2602.13692, section 5) reports 3.3 TB without
lifecycle cleanup vs 0.8 TB with it over 300 OpenHands workflows; removing runtimes at program
end does most of that, image eviction bounds the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thunder_scheduler.tools.base import ObservedRuntime, program_key


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    adopt: list[tuple[ObservedRuntime, str]] = field(default_factory=list)
    reclaim: list[ObservedRuntime] = field(default_factory=list)


def plan_reconcile(observed: list[ObservedRuntime], known_programs: set[str]) -> ReconcilePlan:
    keys = {program_key(program_id): program_id for program_id in known_programs}
    plan = ReconcilePlan()
    for runtime in observed:
        owner = keys.get(runtime.owner_key)
        if owner is not None and runtime.ref and runtime.running:
            plan.adopt.append((runtime, owner))
        else:
            plan.reclaim.append(runtime)
    return plan


@dataclass(frozen=True, slots=True)
class ImageCandidate:
    spec_hash: str
    spec_name: str
    size_bytes: int
    last_used_s: float


def plan_image_eviction(
    images: list[ImageCandidate], needed_specs: set[str], total_bytes: int, budget_bytes: int
) -> list[str]:
    """Spec hashes whose images to remove (LRU first) to bring ``total_bytes`` under budget."""
    if total_bytes <= budget_bytes:
        return []
    victims: list[str] = []
    for image in sorted(images, key=lambda candidate: candidate.last_used_s):
        if total_bytes <= budget_bytes:
            break
        if image.spec_name in needed_specs or image.size_bytes <= 0:
            continue
        victims.append(image.spec_hash)
        total_bytes -= image.size_bytes
    return victims


__all__ = ["ImageCandidate", "ReconcilePlan", "plan_image_eviction", "plan_reconcile"]
