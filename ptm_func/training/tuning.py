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
- max-pool as four selects when a CPU step is compiled (layers.max_pool2; bitwise
  max_pool2d's values and gradients): inductor had turned max_pool2d's backward into a
  4 MB zero-filled buffer, a scatter through int64 indices saved in the forward, and a kernel
  reading it back, 1.5 of 6.2 ms of Net's step with AVX2 kernels. The selects fuse with tanh
  and its backward: 4.2-4.4 ms a step, the book's loop 10.5 (2026-12-05). A module of one's own
  gets them too (layers.PoolsAsSelects): with AVX2 kernels its compiled max_pool2d backward
  failed and it trained eagerly (MyNet with 16 channels: 1.56 s an epoch against 1.01).
- on CPUs with AVX2 kernels, convolutions with a bias sum its gradient apart in a compiled step
  (nets/conv_grads.py, splits_conv_bias): oneDNN's AVX2 backward took 1.1-1.3 ms for conv1's
  weight and bias gradients and 0.41-0.52 for the weight alone; ATen sums the bias in 0.1 ms.
  The bias gradient then rounds differently (float rounding).
- inductor's C++ kernels in 256-bit vectors on AVX-512 CPUs (CPU_SIMD_BITS): with 512-bit
  ones torch 2.14.1 wrote past a buffer (glibc aborted: "malloc(): unaligned fastbin chunk
  detected"). Convolutions and matmuls (oneDNN, MKL) keep AVX-512; floats then sum in
  another order than with 512-bit kernels (results within float rounding, not bitwise).

Why the compiled step's speed swings between runs (issue 32, 2026-12-05; the tables are in
docs/measurements.md). `benchmarks/train_speed.py --restarts 10` takes turns between the
book's loop and the step, ten fresh processes each. With AVX-512 kernels the step spread less
than the book's loop (28% of its median against 37%); with AVX2 kernels more (24-60% against
18-31%, three rounds). Inside one process, epochs of the same compiled graph vary by up to 30%
and their CPU time rises with them, with no other process in the VM, no steal time, no page
faults or system time, the same two threads on two CPUs, one thread as much as two, and as
much spread with ASLR off: the same instructions ran slower, i.e. the host's other tenants.
A process's level is the host's state, not the process's: in one 40-epoch process the
compiled epochs ran 1.05-1.23 s, then 0.65-0.75 for eleven epochs, then 1.05-1.23 again
(AVX2 kernels). Short processes (a few seconds of timed epochs) each catch one spell, which
looked like a level per process. In a slow spell every kernel takes longer (convolution
backward 1.74 -> 2.12 ms a step), single-threaded work too (dynamo's guard check 0.16 -> 0.27
ms), the fused pool/tanh backward most (0.50 -> 1.72 ms; it reads each 2x2 window four
times), while an FMA loop runs at the same rate on both vCPUs in every state, alone or both at
once: the compute is the same, the memory side is not. The swing is about the same number of
seconds an epoch for the book's loop and the compiled step (0.41 and 0.38 s across ten
processes each), so the step, at half the book's time, spreads twice as much of its median.
Where the host puts the two vCPUs is one state that shows from inside (a cache line's round
trip from CPU 0 to CPU 1, benchmarks/vcpu_roundtrip.c: 50-80 or 330-370 ns, changing every few
seconds to a minute), but it does not set the speed alone: the fastest compiled process of
ten ran with 350 ns before and after. Nothing inside the VM chooses the state; another
runnable thread on the two vCPUs is far worse (a probe awake under 1% of the time made
compiled epochs 3-6x slower: OpenMP's threads meet at a barrier after every kernel).
Fewer passes over conv1's activation (the pool keeping which element it took instead of the
4 MB tanh output) was tried and dropped: the backward gained 0.15 ms, the forward lost 0.4 to
a second tanh, and as one graph inductor recomputes such an index from stored tanh outputs
anyway (docs/measurements.md, "Fewer passes").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
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
    current = os.environ.get(INDUCTOR_CACHE_ENV)  # set but empty: unset (inductor would use ".")
    if current and current != _inductor_default():
        drop_empty_kernels(Path(current))  # the user's TORCHINDUCTOR_CACHE_DIR
        return Path(current)
    try:
        path = user_cache_dir() / "inductor"
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to expand ~ in
        return None
    drop_empty_kernels(path)
    os.environ[INDUCTOR_CACHE_ENV] = str(path)
    return path


EMPTY_KERNEL_AGE_S = 600  # older than any one kernel's build: not one being written now


def drop_empty_kernels(cache: Path) -> list[Path]:
    """Delete the empty compiled kernels (`*.so` of 0 bytes) in inductor's cache folder; which.

    A build cut short (a process killed, two processes racing) can leave one; inductor would
    load it, fail, and every step that needs it would run eagerly until it was deleted. Only
    files untouched for EMPTY_KERNEL_AGE_S go: another process may be writing a new one.
    """
    dropped: list[Path] = []
    too_new = time.time() - EMPTY_KERNEL_AGE_S
    try:
        for kernel in cache.glob("*/*.so"):
            info = kernel.stat()
            if info.st_size == 0 and info.st_mtime < too_new:
                kernel.unlink(missing_ok=True)
                dropped.append(kernel)
    except OSError:  # an unreadable cache: inductor will say so itself
        pass
    return dropped


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


def splits_conv_bias(device: torch.device) -> bool:
    """Do a compiled step's convolutions sum their bias gradients apart (nets/conv_grads.py)?
    On CPUs whose kernels are AVX2: there oneDNN's backward took 1.1-1.3 ms for conv1's weight
    and bias gradients, 0.41-0.52 ms for the weight alone, and Net's step ran 1.16-1.18x as
    fast with the split (median of 80 rounds taking turns, two processes). With AVX-512 kernels
    it ran 0.87x as fast (0.45 against 0.32 ms: little to win), so there it stays off."""
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability() == "AVX2"


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
