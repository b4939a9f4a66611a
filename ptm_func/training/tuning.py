"""How training runs fast on a CPU: memory layout, allocator and compiler settings.

None of these change what is computed, only how: the pure models and the SGD step are the
same functions. Measured on a 2-core AVX-512 CPU with `benchmarks/train_speed.py` (Net, batch
64, ratios against the book's loop in the same process):

- channels-last images: convolutions, tanh/relu and max-pool run on NHWC data, where
  PyTorch's CPU max-pool is vectorised across channels (2x2 pool of 64x16x32x32: 2.9 ms
  NCHW, 0.3 ms NHWC). Results equal NCHW's up to float rounding (another summation order).
- the allocator keeps freed memory instead of returning every large block to the system:
  an eager step allocates ~20 MB of short-lived tensors, and glibc's default mmap/trim
  policy made each step fault them back in (1M page faults per 200 steps, 2.8 s of system
  time); the eager torch.func step went from 17 to 11-12 ms.
- inductor's compiled kernels are kept under $PTM_CACHE_DIR/inductor (default
  ~/.cache/ptm_func/inductor), not in inductor's /tmp default: the 18-24 s first compile of a
  step is paid once per machine, not once per reboot.
- inductor's decomposed tanh, 2 / (1 + exp(-2x)) - 1, instead of Sleef's tanh: 3x less
  time in the fused tanh/max-pool kernel; absolute error ~1e-7 (a few ulp near +-1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest; blocks up to it are reused, not mapped anew
_TRIM_THRESHOLD = 512 * 2**20  # give memory back to the system only past this much free
_allocator_tuned = False


CACHE_ENV = "PTM_CACHE_DIR"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def user_cache_dir() -> Path:
    """ptm's cache folder: $PTM_CACHE_DIR, else ~/.cache/ptm_func."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ptm_func").expanduser()


def use_compile_cache() -> Path | None:
    """Point inductor's cache at user_cache_dir()/inductor, unless the user chose one; its folder.

    None (inductor keeps its default) when that folder cannot be made.
    """
    current = os.environ.get(INDUCTOR_CACHE_ENV)
    if current is not None and current != _inductor_default():
        return Path(current)  # the user's TORCHINDUCTOR_CACHE_DIR
    try:
        path = user_cache_dir() / "inductor"
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to expand ~ in
        return None
    os.environ[INDUCTOR_CACHE_ENV] = str(path)
    return path


def _inductor_default() -> str | None:
    """Inductor's own cache folder (in /tmp), which it writes into the environment when first used."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: only an unset variable is ours to set
        return None
    return default_cache_dir()


def channels_last_default(device: torch.device) -> bool:
    """Train on channels-last images? On CPU, yes (see the module docstring); on CUDA, no."""
    return device.type == "cpu"


def in_layout(images: Tensor, channels_last: bool) -> Tensor:
    """NCHW `images` in channels-last memory order (a copy), or `images` itself.

    Same shape and values; indexing a batch (`images[idx]`) keeps the order, so this is done
    once per run.
    """
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def tune_allocator() -> bool:
    """Make glibc's malloc keep freed blocks up to 32 MiB for reuse (once per process).

    Returns whether the settings took effect (False off glibc, e.g. macOS or musl).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    _allocator_tuned = ok
    return ok


# Inductor's C++ kernels in 256-bit vectors (AVX2) on AVX-512 CPUs: there, a 2-D tile over a
# dimension of 8 (Net's conv2 has 8 channels) loads 8 of a vector's 16 floats but stores all 16,
# past the end of a buffer (the heap corruption of pytorch/pytorch#196681's kind; torch 2.14.1).
# With 8-float vectors such tiles are whole. ATen's and oneDNN's own kernels keep AVX-512.
CPU_SIMD_BITS = 256


def compile_options(device: torch.device, mode: str | None) -> dict[str, Any] | None:
    """Inductor options for a step compiled in `mode` (torch.compile takes a mode or options)."""
    if device.type != "cpu":
        return None
    options: dict[str, Any] = {}
    if mode in (None, "default"):
        options["cpp.use_decompose_tanh"] = True
    if torch.backends.cpu.get_cpu_capability() == "AVX512":  # see CPU_SIMD_BITS
        options["cpp.simdlen"] = CPU_SIMD_BITS
    return options or None
