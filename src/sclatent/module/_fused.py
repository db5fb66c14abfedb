"""The fused ZINB kernel: built once per machine from ``_zinb_fused.cpp``, with the PyTorch kernel as the fallback.

The kernel computes a batch's ZINB negative log-likelihood and its gradients in one pass per cell
(``benchmarks/step.py`` measures it against the PyTorch kernel). It is compiled by torch's JIT
extension loader the first time a process needs it, which takes about half a minute, and cached
on disk (``TORCH_EXTENSIONS_DIR``, by default under ``~/.cache``), so later processes load it in
a moment. The cached build is named after this CPU's instruction sets, so machines that share a
home directory never load one another's builds.

It needs Linux, a C++ compiler and ``ninja``. Where the build fails, training uses the PyTorch
kernel (same values within float32 rounding, slower) and says so once at info level.
``SCLATENT_FUSED=0`` skips the kernel altogether.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
from pathlib import Path

import torch
from scanpy import logging as logg

_SOURCE = Path(__file__).with_name("_zinb_fused.cpp")
#: -ffast-math is what lets GCC call glibc's vectorised exp, log and log1p; it also assumes finite values,
#: so :func:`fused_zinb_nll` hands non-finite inputs to the PyTorch kernel instead.
_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp")
_LOCK = threading.Lock()
#: Above this log theta, exp overflows float32 (at 88.7): such values go to the PyTorch kernel.
_MAX_LOG_THETA = 80.0
_STATE: dict = {"tried": False, "kernel": None, "error": None}


def _cpu_tag() -> str:
    """Return a short hash of this CPU's instruction sets (``/proc/cpuinfo``'s flags), torch's version, the flags and the source."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    text = "\n".join([flags, torch.__version__, " ".join(_FLAGS), _SOURCE.read_text()])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def fused_zinb_kernel():
    """Return the fused ZINB kernel's function, building it on the first call; ``None`` where it is not available.

    Not available: ``SCLATENT_FUSED=0``, a system other than Linux on x86-64, or a failed build
    (no C++ compiler, no ``ninja``); the reason is in :func:`fused_zinb_status`.
    """
    with _LOCK:
        if _STATE["tried"]:
            return _STATE["kernel"]
        _STATE["tried"] = True
        if os.environ.get("SCLATENT_FUSED") == "0":
            _STATE["error"] = "turned off by SCLATENT_FUSED=0"
            return None
        if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
            _STATE["error"] = f"built only on Linux on x86-64, not on {sys.platform} {platform.machine()}"
            return None
        try:
            from torch.utils.cpp_extension import load

            name = f"sclatent_zinb_{_cpu_tag()}"
            logg.info("sclatent: loading the fused ZINB kernel (the first time on a machine, it is built: ~30 s)")
            _STATE["error"] = "the build was interrupted"  # until it ends
            module = load(name, [str(_SOURCE)], extra_cflags=list(_FLAGS), extra_ldflags=["-fopenmp"], verbose=False)
            _STATE["kernel"], _STATE["error"] = module.zinb_nll, None
        except Exception as err:  # any failed build falls back, and says why
            _STATE["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            logg.info(
                f"sclatent: the fused ZINB kernel could not be built ({_STATE['error']}); training uses the "
                "PyTorch kernel, which gives the same values and is slower. Set SCLATENT_FUSED=0 to skip the attempt."
            )
        return _STATE["kernel"]


def fused_zinb_status() -> str:
    """``"fused"`` where the kernel is in use, else why not (``"not tried"`` before any training asked for it)."""
    if not _STATE["tried"]:
        return "not tried"
    return "fused" if _STATE["kernel"] is not None else _STATE["error"]


class _FusedZINB(torch.autograd.Function):
    """Per-cell ZINB negative log-likelihood from the scale logits, with the kernel's analytic gradients."""

    @staticmethod
    def forward(ctx, x, logits, library, log_theta, zi, kernel):
        # applied only when a gradient is wanted (fused_zinb_nll calls the kernel directly otherwise)
        out = kernel(x, logits, library, log_theta, zi, True)
        ctx.save_for_backward(*out[1:])
        return out[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        d_logits, d_zi, d_log_theta = ctx.saved_tensors
        weights = grad.reshape(-1, 1)
        return None, d_logits * weights, None, d_log_theta.T.mv(grad), d_zi * weights, None


def fused_zinb_nll(
    x: torch.Tensor, logits: torch.Tensor, library: torch.Tensor, log_theta: torch.Tensor, zi: torch.Tensor
) -> torch.Tensor | None:
    """Each cell's ZINB negative log-likelihood with ``mu = library * softmax(logits)``, by the fused kernel.

    Returns ``None`` (the caller then uses the PyTorch kernel) unless the kernel is available and
    every input is a finite float32 CPU tensor of the expected shape (cells × genes, ``library``
    cells × 1, ``log_theta`` genes).
    """
    tensors = (x, logits, library, log_theta, zi)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    if x.dim() != 2 or logits.shape != x.shape or zi.shape != x.shape or log_theta.shape != x.shape[-1:]:
        return None
    if library.numel() != x.shape[0]:
        return None
    kernel = fused_zinb_kernel()
    if kernel is None:
        return None
    with torch.no_grad():
        # the kernel is built with -ffast-math, which assumes finite values: non-finite inputs, and a theta
        # that overflows float32 (exp(88.7)), go to the PyTorch kernel, whose NaN reaches the training
        # loop's check. One cheap pass: a sum is finite only if every value is (or it overflowed: fine too).
        if (
            not torch.isfinite(logits.sum() + zi.sum() + x.sum() + library.sum())
            or float(log_theta.max()) > _MAX_LOG_THETA
        ):
            return None
    x, logits, zi, log_theta = (t.contiguous() for t in (x, logits, zi, log_theta))
    library = library.reshape(-1).contiguous()
    if not (torch.is_grad_enabled() and (logits.requires_grad or zi.requires_grad or log_theta.requires_grad)):
        return kernel(x, logits, library, log_theta, zi, False)[0]  # no gradients to compute (validation, ELBO)
    return _FusedZINB.apply(x, logits, library, log_theta, zi, kernel)
