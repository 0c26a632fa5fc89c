"""Keep glibc's malloc from handing a training loop's memory back to the kernel at every step.

PyTorch's CPU tensors come from malloc. glibc serves blocks of >= 128 KiB (a 128 x 256
float32 activation) with a fresh mmap and unmaps them when they are freed, and trims
the heap's top whenever 128 KiB are free there; the next step then pays page faults
and the kernel's zeroing for the same memory again. A training step frees and
reallocates the same sizes every step, so a worker process keeps its memory instead:
no mmap below 256 MiB, no trimming below 1 GiB. The price is a resident size that
stays at the largest run's peak, in a process that exists to run such runs.

The tracer is the part that suffers most: gradients it keeps alive through backward
(the pre-activation gradients) stop the allocator from reusing one step's buffers in
the next. Both the worker and the tracing benchmark call `keep_memory()`, so the
benchmark's traced and untraced loops run under the same allocator.
"""

import ctypes
import ctypes.util

# mallopt's parameter numbers, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30


def keep_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
