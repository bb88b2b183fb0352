"""Roofline cost model, hardware and model specs, and named presets."""

from thunder_sim.costmodel.base import CostModel, PrefillChunk
from thunder_sim.costmodel.hardware import GPUS, GpuSpec
from thunder_sim.costmodel.models import MODELS, ModelSpec
from thunder_sim.costmodel.presets import PRESETS, Preset, get_preset
from thunder_sim.costmodel.roofline import RooflineCostModel

__all__ = [
    "GPUS", "MODELS", "PRESETS", "CostModel", "GpuSpec", "ModelSpec", "PrefillChunk", "Preset",
    "RooflineCostModel", "get_preset",
]
