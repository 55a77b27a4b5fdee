"""Facts about the machine a figure was measured on (no TensorFlow import, so benchmarks stay light)."""

import functools
import platform
from pathlib import Path

# CPU flags with which oneDNN computes bfloat16 natively; without them it emulates it, slower than
# float32 (fast_cnn's epoch: 83 s in bfloat16 against 23 s in float32 on an AMD EPYC with AVX2 only).
NATIVE_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpuinfo(field):
    """The first value of `field` in /proc/cpuinfo, or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name():
    return cpuinfo("model name") or platform.processor() or platform.machine()


# The vector and matrix extensions that decide how fast oneDNN and PyTorch run: named beside every figure.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags():
    """Which of SPEED_FLAGS this CPU has, in that order."""
    present = set((cpuinfo("flags") or "").split())
    return [flag for flag in SPEED_FLAGS if flag in present]


@functools.cache
def native_bfloat16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    return bool(NATIVE_BFLOAT16_FLAGS & set((cpuinfo("flags") or "").split()))
