"""GPU specifications used by the roofline cost model.

Each constant is a datasheet figure (dense, i.e. without 2:4 structured sparsity):

- H100 SXM5 80GB: NVIDIA H100 Tensor Core GPU datasheet,
  https://www.nvidia.com/en-us/data-center/h100/ ("BF16 Tensor Core 1,979 teraFLOPS*",
  "FP8 Tensor Core 3,958 teraFLOPS*", "* With sparsity", "GPU memory 80GB",
  "GPU memory bandwidth 3.35TB/s"). Dense = half the sparse figure: 989.5 / 1979 TFLOPS.
- H200 SXM 141GB: NVIDIA H200 datasheet, https://www.nvidia.com/en-us/data-center/h200/
  (same tensor-core figures as H100 SXM, "GPU Memory 141GB", "GPU Memory Bandwidth 4.8TB/s").

``host_device_bytes_per_s`` is the host-to-device link HiCache loads back over: PCIe Gen5 x16
on both, NVIDIA's datasheets list "PCIe Gen5: 128GB/s" (both directions together), so 64 GB/s
one way. Achieved copy bandwidth is lower (pinned-memory copies reach about 50-55 GB/s on Gen5
x16); the datasheet figure is kept, as for the other peaks.

``usable_memory_bytes`` is the device memory the CUDA driver reports (``nvidia-smi`` /
``torch.cuda.mem_get_info`` total): 81,559 MiB on H100 SXM 80GB and 143,771 MiB on H200,
the values SGLang's ``get_device_memory_capacity`` sees when it sizes ``mem_fraction_static``.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    bf16_dense_flops: float       # FLOP/s, dense tensor-core peak
    fp8_dense_flops: float        # FLOP/s, dense tensor-core peak
    hbm_bytes_per_s: float        # HBM bandwidth, bytes/s
    usable_memory_bytes: int      # what the driver reports as total device memory
    host_device_bytes_per_s: float = 64e9   # PCIe Gen5 x16, one direction (datasheet 128/2)

    def __post_init__(self) -> None:
        if min(self.bf16_dense_flops, self.fp8_dense_flops, self.hbm_bytes_per_s,
               self.host_device_bytes_per_s) <= 0:
            raise ValueError(f"{self.name}: peak figures must be positive")
        if self.usable_memory_bytes <= 0:
            raise ValueError(f"{self.name}: memory must be positive")


H100_SXM = GpuSpec(
    name="h100",
    bf16_dense_flops=989.5e12,    # datasheet 1,979 TFLOPS with sparsity / 2
    fp8_dense_flops=1979e12,      # datasheet 3,958 TFLOPS with sparsity / 2
    hbm_bytes_per_s=3.35e12,      # datasheet 3.35 TB/s (HBM3)
    usable_memory_bytes=81_559 * MIB,  # 80 GB HBM3 as reported by the driver
    host_device_bytes_per_s=64e9,  # datasheet "PCIe Gen5: 128GB/s" (both directions)
)

H200 = GpuSpec(
    name="h200",
    bf16_dense_flops=989.5e12,    # datasheet: same tensor cores as H100 SXM
    fp8_dense_flops=1979e12,
    hbm_bytes_per_s=4.8e12,       # datasheet 4.8 TB/s (HBM3e)
    usable_memory_bytes=143_771 * MIB,  # 141 GB HBM3e as reported by the driver
    host_device_bytes_per_s=64e9,  # datasheet "PCIe Gen5: 128GB/s" (both directions)
)

GPUS: dict[str, GpuSpec] = {"h100": H100_SXM, "h200": H200}
