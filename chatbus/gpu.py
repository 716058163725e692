"""Whether this machine may have a GPU, without importing torch (5 s of CPU) to ask."""

from __future__ import annotations

from pathlib import Path

__all__ = ["GPU_DEVICE_FILES", "gpu_driver_present"]

# The device files of NVIDIA's driver, AMD's (ROCm: torch.cuda too) and WSL's GPU bridge.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg")


def gpu_driver_present() -> bool:
    """Whether a GPU driver is installed: without one, torch finds no CUDA device either."""
    return any(Path(path).exists() for path in GPU_DEVICE_FILES)
