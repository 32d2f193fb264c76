"""The histogram update on a GPU, with the numpy collector's histogram definition.

The bin rule is the numpy collector's (`int8kit.calib.kernels.add_counts`)::

    index = trunc(|x| * inv_width)   (float32 product), clamped to the last bin,

and the range rule is `HistogramCollector._make_room` / `_grow` (width from the first non-zero
batch, bins appended when a batch exceeds the range, neighbours merged by a power of two past
`MAX_BINS`). Two implementations:

``cuda`` (the default on NVIDIA GPUs): `DeviceHistogram`. The whole state of a collector — running
min/max/|max|, counts of values, NaN and Inf, the range (width, bins) and the counts — lives on the
GPU in one int64 buffer with room for `MAX_BINS` bins, and the range rule runs there too: nothing
is read back per batch, so the GPU never waits for Python and Python never waits for the GPU.
A batch costs two launches of CUDA kernels compiled once per process with NVRTC
(``torch.cuda._compile_kernel``):

1. ``int8kit_hist_collect``: one pass over x. Each block bins |x| at the width known before the
   batch into a shared-memory histogram (bin 0 — the zeros after a ReLU — and the bin of the
   running max — the sixes after a ReLU6 — are counted in registers: one-address atomics would
   serialise), adds it into the counts, and reduces the batch's min/max and NaN/Inf counts. The
   last block to finish applies the range rule to the batch's range: set the width (first
   non-zero batch), append bins, merge neighbours (in place: binning at width w then merging by
   f is binning at width w*f, since float32 scaling by a power of two is exact), and moves the
   values that landed past the new last bin into it (the clamp).
2. ``int8kit_hist_fixup``: returns at once, except for the first non-zero batch (bins it at the
   width just set) and for values at or past `MAX_BINS` bins of the old width (outliers more
   than 64x the first batch's range: binned at the merged width).

The counts equal the numpy collector's bin for bin (tests/gpu). `read` copies the buffer back
once, when the results are wanted.

``triton-atomic`` / ``triton`` / ``torch`` (`add_counts`): the range rule on the host, which
costs one host read (min and max) per tensor per batch, and only the binning on the GPU; used
where NVRTC cannot compile (no CUDA toolkit headers, a ROCm build) or when forced with
``INT8KIT_TORCH_HIST=triton-atomic|triton|torch`` (``cuda`` forces the default).
``triton-atomic`` adds the values into a row of counts per program with relaxed global atomics;
``triton`` keeps a block histogram per program (``tl.histogram``, 2.3x slower); ``torch``: a few
elementwise passes and ``torch.histc`` on float64 bin indices (exact: ``histc`` computes
``trunc(v * P / P)`` with P a power of two, which is ``v`` for the integral values it gets).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import warnings

import numpy as np
import torch

from int8kit.calib.collector import MAX_BINS, TensorStats

# The Triton kernels keep a block histogram per program in registers, or a row of counts per
# program in memory: up to this many bins.
TRITON_MAX_BINS = 8192
_BLOCK = 2048
_FAILED: dict[str, str] = {}  # backend -> why it failed once (not retried)

# --- the CUDA path ------------------------------------------------------------------------------
_THREADS = 256
_SHARED_BINS = 8192  # bins of the per-block shared-memory histogram (32 KiB); past it, global
_HEAD = 48  # int64 slots before the counts in DeviceHistogram.buf
# F (float64 view of slots 0-15):
_WIDTH, _INV, _AMAX, _SMIN, _SMAX, _INV_OLD = range(6)
# I (int64, slots 16-31):
(_HAS_RANGE, _SIZE, _COUNT, _NAN, _INF, _PENDING, _TICKET, _FIXUP, _OVERFLOW, _HOT,
 _BATCH_NAN, _BATCH_INF, _FIXUP_HOT) = range(13)  # fmt: skip
# K (int32 view of slot 32): the batch's min and max as order-preserving int keys.

_CUDA_SOURCE = r"""
#define S_MAX %(shared_bins)d
#define NWARPS %(warps)d

struct Acc {
    float mn, mx;
    unsigned long long nan, inf, zeros, hots, ovf;
};

__device__ __forceinline__ int f2key(float f) {
    int b = __float_as_int(f);
    return b >= 0 ? b : b ^ 0x7fffffff;
}
__device__ __forceinline__ float key2f(int k) { return __int_as_float(k >= 0 ? k : k ^ 0x7fffffff); }
__device__ __forceinline__ long long lmin(long long a, long long b) { return a < b ? a : b; }

struct Bins {
    float inv, inv_old, capf, lastf;
    int last, hot, s_eff;
    unsigned* sh;
    unsigned long long* counts;
};

// MODE 0: statistics only; 1: statistics and bins at the width known before the batch (values
// at or past cap bins are only counted, in ovf); 2: bins of every finite value, clamped to the
// last bin; 3: the same for the values pass 1 left out (at or past cap bins of inv_old).
template <int MODE>
__device__ __forceinline__ void visit(float v, Acc& a, const Bins& b) {
    if (MODE <= 1) {
        if (isnan(v)) { a.nan++; return; }
        if (isinf(v)) { a.inf++; return; }
        a.mn = fminf(a.mn, v);
        a.mx = fmaxf(a.mx, v);
        if (MODE == 0) return;
    } else if (!isfinite(v)) {
        return;
    }
    float av = fabsf(v);
    int idx;
    if (MODE == 1) {
        float y = __fmul_rn(av, b.inv);
        if (y >= b.capf) { a.ovf++; return; }
        idx = (int)y;
    } else {
        if (MODE == 3 && __fmul_rn(av, b.inv_old) < b.capf) return;
        float y = __fmul_rn(av, b.inv);
        idx = y >= b.lastf ? b.last : (int)y;
    }
    if (idx == 0) a.zeros++;
    else if (idx == b.hot) a.hots++;
    else if (idx < b.s_eff) atomicAdd(b.sh + idx, 1u);
    else atomicAdd(b.counts + idx, 1ull);
}

template <int MODE>
__device__ __forceinline__ void sweep(const float* __restrict__ x, long long n, Acc& a, const Bins& b) {
    long long head = (4 - (((unsigned long long)x >> 2) & 3)) & 3;
    if (head > n) head = n;
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    if (g < head) visit<MODE>(x[g], a, b);
    const float4* x4 = reinterpret_cast<const float4*>(x + head);
    long long n4 = (n - head) >> 2;
    long long i = g;
    for (; i + 3 * stride < n4; i += 4 * stride) {
        float4 q0 = __ldg(x4 + i), q1 = __ldg(x4 + i + stride);
        float4 q2 = __ldg(x4 + i + 2 * stride), q3 = __ldg(x4 + i + 3 * stride);
        visit<MODE>(q0.x, a, b); visit<MODE>(q0.y, a, b); visit<MODE>(q0.z, a, b); visit<MODE>(q0.w, a, b);
        visit<MODE>(q1.x, a, b); visit<MODE>(q1.y, a, b); visit<MODE>(q1.z, a, b); visit<MODE>(q1.w, a, b);
        visit<MODE>(q2.x, a, b); visit<MODE>(q2.y, a, b); visit<MODE>(q2.z, a, b); visit<MODE>(q2.w, a, b);
        visit<MODE>(q3.x, a, b); visit<MODE>(q3.y, a, b); visit<MODE>(q3.z, a, b); visit<MODE>(q3.w, a, b);
    }
    for (; i < n4; i += stride) {
        float4 q = __ldg(x4 + i);
        visit<MODE>(q.x, a, b); visit<MODE>(q.y, a, b); visit<MODE>(q.z, a, b); visit<MODE>(q.w, a, b);
    }
    long long t = head + n4 * 4 + g;
    if (g < 4 && t < n) visit<MODE>(x[t], a, b);
}

__device__ __forceinline__ unsigned long long wsum(unsigned long long v) {
    for (int o = 16; o; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Block-reduce a into thread 0's a (every thread of the block calls it).
__device__ void block_reduce(Acc& a) {
    __shared__ float r_mn[NWARPS], r_mx[NWARPS];
    __shared__ unsigned long long r_u[NWARPS][5];
    for (int o = 16; o; o >>= 1) {
        a.mn = fminf(a.mn, __shfl_down_sync(0xffffffffu, a.mn, o));
        a.mx = fmaxf(a.mx, __shfl_down_sync(0xffffffffu, a.mx, o));
    }
    a.nan = wsum(a.nan); a.inf = wsum(a.inf); a.zeros = wsum(a.zeros);
    a.hots = wsum(a.hots); a.ovf = wsum(a.ovf);
    int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
        r_mn[w] = a.mn; r_mx[w] = a.mx;
        r_u[w][0] = a.nan; r_u[w][1] = a.inf; r_u[w][2] = a.zeros; r_u[w][3] = a.hots; r_u[w][4] = a.ovf;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < NWARPS; k++) {
            a.mn = fminf(a.mn, r_mn[k]); a.mx = fmaxf(a.mx, r_mx[k]);
            a.nan += r_u[k][0]; a.inf += r_u[k][1]; a.zeros += r_u[k][2];
            a.hots += r_u[k][3]; a.ovf += r_u[k][4];
        }
    }
}

// The shared bins into the counts; then the block's register-counted bins (thread 0, after
// block_reduce).
__device__ void flush_shared(const Bins& b) {
    for (int i = threadIdx.x; i < b.s_eff; i += blockDim.x) {
        unsigned c = b.sh[i];
        if (c) atomicAdd(b.counts + i, (unsigned long long)c);
    }
}

__device__ void flush_registers(const Acc& a, const Bins& b) {
    if (a.zeros) atomicAdd(b.counts, a.zeros);
    if (a.hots) atomicAdd(b.counts + b.hot, a.hots);
}

extern "C" __global__ void __launch_bounds__(NWARPS * 32) int8kit_hist_collect(
    const float* __restrict__ x, int n_lo, int n_hi, double* F, long long* I, int* K,
    unsigned long long* counts, int num_bins, int cap, int max_bins, int keep)
{
    __shared__ unsigned sh[S_MAX];
    __shared__ int is_last;
    __shared__ long long s_fold, s_lo, s_hi;
    const long long n = ((long long)n_hi << 31) | (long long)n_lo;
    const int tid = threadIdx.x;
    const bool binning = keep && I[%(has_range)d] != 0;
    Bins b;
    b.inv = (float)F[%(inv)d];
    b.inv_old = b.inv;
    b.capf = (float)cap;
    b.last = cap - 1;
    b.lastf = (float)b.last;
    b.hot = (int)I[%(hot)d];
    b.s_eff = binning ? (int)lmin((long long)S_MAX, lmin(I[%(size)d] + 2, (long long)cap)) : 0;
    b.sh = sh;
    b.counts = counts;
    for (int i = tid; i < b.s_eff; i += blockDim.x) sh[i] = 0;
    __syncthreads();
    Acc a = {__int_as_float(0x7f800000), __int_as_float(0xff800000), 0, 0, 0, 0, 0};
    if (binning) sweep<1>(x, n, a, b); else sweep<0>(x, n, a, b);
    __syncthreads();
    flush_shared(b);
    block_reduce(a);
    if (tid == 0) {
        flush_registers(a, b);
        if (a.ovf) atomicAdd((unsigned long long*)(I + %(overflow)d), a.ovf);
        if (a.nan) atomicAdd((unsigned long long*)(I + %(batch_nan)d), a.nan);
        if (a.inf) atomicAdd((unsigned long long*)(I + %(batch_inf)d), a.inf);
        if (a.mn <= a.mx) { atomicMin(K, f2key(a.mn)); atomicMax(K + 1, f2key(a.mx)); }
    }
    __threadfence();  // every thread's atomics land before the ticket is taken
    __syncthreads();
    if (tid == 0) {
        unsigned long long t = atomicAdd((unsigned long long*)(I + %(ticket)d), 1ull);
        is_last = (t == gridDim.x - 1);
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();

    // The last block: the range rule of HistogramCollector._make_room / _grow on this batch.
    volatile unsigned long long* vc = counts;
    if (tid == 0) {
        volatile long long* vI = I;
        volatile int* vK = K;
        long long bnan = vI[%(batch_nan)d], binf = vI[%(batch_inf)d], ovf = vI[%(overflow)d];
        int kmin = vK[0], kmax = vK[1];
        I[%(batch_nan)d] = 0; I[%(batch_inf)d] = 0; I[%(overflow)d] = 0; I[%(ticket)d] = 0;
        K[0] = 0x7fffffff; K[1] = (int)0x80000000;
        I[%(nan)d] += bnan;
        I[%(inf)d] += binf;
        long long fin = n - bnan - binf;
        long long fixup = 0, fold = 1, lo = 1, hi = 0;
        if (fin > 0) {
            double dmin = (double)key2f(kmin), dmax = (double)key2f(kmax);
            I[%(count)d] += fin;
            if (dmin < F[%(smin)d]) F[%(smin)d] = dmin;
            if (dmax > F[%(smax)d]) F[%(smax)d] = dmax;
            double bam = dmax > -dmin ? dmax : -dmin;  // Python's max(-xmin, xmax)
            if (bam > F[%(amax)d]) F[%(amax)d] = bam;
            bool had = I[%(has_range)d] != 0, go = keep != 0;
            double width = F[%(width)d], size = (double)I[%(size)d];
            float inv_old = (float)F[%(inv)d];
            if (go && !had) {
                if (bam == 0.0) {
                    I[%(pending)d] += fin;
                    go = false;
                } else {
                    width = bam / (double)num_bins;
                    size = (double)num_bins;
                    I[%(has_range)d] = 1;
                    vc[0] += (unsigned long long)I[%(pending)d];
                    I[%(pending)d] = 0;
                    fixup = 1;
                }
            }
            if (go) {
                double f = 1.0;
                if (bam > size * width) {
                    double needed = ceil(bam / width);
                    while (needed > (double)max_bins * f) f *= 2.0;
                    if (f > 1.0) {
                        width *= f;
                        size = ceil(size / f);
                        needed = ceil(bam / width);
                    }
                    if (needed > size) size = needed;
                }
                float inv = (float)(1.0 / width);
                F[%(width)d] = width;
                F[%(inv)d] = (double)inv;
                F[%(inv_old)d] = (double)inv_old;
                I[%(size)d] = (long long)size;
                float yh = __fmul_rn((float)F[%(amax)d], inv);
                I[%(hot)d] = yh >= (float)cap ? (long long)cap : (long long)yh;
                if (had) {
                    fold = f >= (double)cap ? (long long)cap : (long long)f;
                    float ym = __fmul_rn((float)bam, inv_old);
                    long long m = ym >= (float)cap ? (long long)cap - 1 : (long long)ym;
                    lo = (long long)size;
                    hi = m / fold;
                    if (ovf > 0) fixup = 2;
                } else {
                    float yb = __fmul_rn((float)bam, inv);
                    long long last = (long long)size - 1;
                    I[%(fixup_hot)d] = yb >= (float)last ? last : (long long)yb;
                }
            }
        }
        I[%(fixup)d] = fixup;
        s_fold = fold; s_lo = lo; s_hi = hi;
    }
    __syncthreads();
    const long long fold = s_fold;
    if (fold > 1) {
        // In place, chunk by chunk: chunk c writes [cB, cB+B) and reads [cBf, cBf+Bf), which
        // later chunks never read again (f >= 2).
        long long nout = ((long long)cap + fold - 1) / fold;
        for (long long base = 0; base < nout; base += blockDim.x) {
            long long j = base + tid;
            unsigned long long s = 0;
            if (j < nout) {
                long long a0 = j * fold, a1 = lmin(a0 + fold, (long long)cap);
                for (long long k = a0; k < a1; k++) s += vc[k];
            }
            __syncthreads();
            if (j < nout) vc[j] = s;
            __syncthreads();
        }
        for (long long j = nout + tid; j < cap; j += blockDim.x) vc[j] = 0;
        __syncthreads();
    }
    if (tid == 0) {
        // The clamp: the values of this batch past the last bin go into it.
        for (long long j = s_lo; j <= s_hi; j++) {
            vc[s_lo - 1] += vc[j];
            vc[j] = 0;
        }
    }
}

extern "C" __global__ void __launch_bounds__(NWARPS * 32) int8kit_hist_fixup(
    const float* __restrict__ x, int n_lo, int n_hi, const double* F, const long long* I,
    unsigned long long* counts, int cap)
{
    __shared__ unsigned sh[S_MAX];
    const long long mode = I[%(fixup)d];
    if (mode == 0) return;
    const long long n = ((long long)n_hi << 31) | (long long)n_lo;
    const long long size = I[%(size)d];
    Bins b;
    b.inv = (float)F[%(inv)d];
    b.inv_old = (float)F[%(inv_old)d];
    b.capf = (float)cap;
    b.last = (int)size - 1;
    b.lastf = (float)b.last;
    b.hot = mode == 1 ? (int)I[%(fixup_hot)d] : -1;
    b.s_eff = mode == 1 ? (int)lmin((long long)S_MAX, size) : 0;
    b.sh = sh;
    b.counts = counts;
    for (int i = threadIdx.x; i < b.s_eff; i += blockDim.x) sh[i] = 0;
    __syncthreads();
    Acc a = {0.0f, 0.0f, 0, 0, 0, 0, 0};
    if (mode == 1) sweep<2>(x, n, a, b); else sweep<3>(x, n, a, b);
    __syncthreads();
    flush_shared(b);
    block_reduce(a);
    if (threadIdx.x == 0) flush_registers(a, b);
}
"""


def cuda_source() -> str:
    """The CUDA C++ of the two kernels, with the state layout filled in."""
    slots = {
        "has_range": _HAS_RANGE, "size": _SIZE, "count": _COUNT, "nan": _NAN, "inf": _INF,
        "pending": _PENDING, "ticket": _TICKET, "fixup": _FIXUP, "overflow": _OVERFLOW,
        "hot": _HOT, "batch_nan": _BATCH_NAN, "batch_inf": _BATCH_INF,
        "fixup_hot": _FIXUP_HOT, "width": _WIDTH, "inv": _INV, "amax": _AMAX, "smin": _SMIN,
        "smax": _SMAX, "inv_old": _INV_OLD,
    }  # fmt: skip
    return _CUDA_SOURCE % {"shared_bins": _SHARED_BINS, "warps": _THREADS // 32, **slots}


@functools.lru_cache(maxsize=8)
def _cuda_kernels(device_index: int):
    """(collect, fixup) compiled for this device, or None where NVRTC is not usable."""
    try:
        with torch.cuda.device(device_index):
            src = cuda_source()
            opts = ["--fmad=false"]
            collect = torch.cuda._compile_kernel(src, "int8kit_hist_collect", nvcc_options=opts)
            fixup = torch.cuda._compile_kernel(src, "int8kit_hist_fixup", nvcc_options=opts)
        return collect, fixup
    except Exception as exc:  # no NVRTC, no headers, an API that moved: the host-rule path
        _FAILED["cuda"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"the CUDA histogram kernels could not be compiled ({_FAILED['cuda'][:300]}); "
            "binning with a host read per batch instead (slower, same counts)",
            stacklevel=3,
        )
        return None


def device_rule(x: torch.Tensor) -> bool:
    """True when ``x``'s histogram is built by `DeviceHistogram` (range rule on the GPU)."""
    forced = os.environ.get("INT8KIT_TORCH_HIST", "")
    if not x.is_cuda or torch.version.hip or forced not in ("", "cuda"):
        return False
    return _cuda_kernels(x.device.index if x.device.index is not None else 0) is not None


@functools.lru_cache(maxsize=8)
def _num_programs(device_index: int) -> int:
    return 4 * torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.lru_cache(maxsize=1)
def _cu_launch():
    """libcuda's cuLaunchKernel, typed (loaded once; torch's kernel call loads it every time)."""
    lib = ctypes.CDLL("libcuda.so.1")
    fn = lib.cuLaunchKernel
    fn.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    fn.restype = ctypes.c_int
    return fn


class _Launch:
    """One kernel with its argument list built once: a call sets the tensor's pointer and size
    and calls cuLaunchKernel (a whole collect call, both launches, took 24 us of host time on the
    H200's host this way, 76 us through the kernels' own call). Arguments: ctypes values, the
    first three (x, n_lo, n_hi) set per call."""

    def __init__(self, kernel, args: list):
        self.kernel = kernel
        self.args = args
        self.values = [_ctype(a) for a in args]
        array = (ctypes.c_void_p * len(args))(*[ctypes.addressof(v) for v in self.values])
        self.array = array
        self.params = ctypes.cast(array, ctypes.c_void_p)
        try:
            self.func = ctypes.c_void_p(getattr(kernel.func, "value", kernel.func))
            self.launch = _cu_launch()
        except Exception:  # another torch's kernel object: its own call
            self.launch = None

    def __call__(self, x: torch.Tensor, lo: int, hi: int, grid: int, stream) -> None:
        if self.launch is None:
            self.kernel(
                grid=(grid, 1, 1),
                block=(_THREADS, 1, 1),
                args=[x, lo, hi, *self.args[3:]],
                stream=stream,
            )
            return
        self.values[0].value = x.data_ptr()
        self.values[1].value = lo
        self.values[2].value = hi
        rc = self.launch(
            self.func, grid, 1, 1, _THREADS, 1, 1, 0, stream.cuda_stream, self.params, None
        )
        if rc != 0:
            raise RuntimeError(f"cuLaunchKernel failed with CUDA error {rc}")


def _ctype(a):
    if isinstance(a, torch.Tensor):
        return ctypes.c_void_p(a.data_ptr())
    if isinstance(a, int):
        return ctypes.c_int(a)
    raise TypeError(type(a))


class DeviceHistogram:
    """One collector's statistics, range and counts on a GPU (see the module docstring).

    ``buf`` (int64): slots 0-15 are float64 (width, float32 1/width, |max|, min, max, ...),
    16-31 int64 (has a range, bins, count, NaN, Inf, zeros before a range, ...), 32 the batch's
    min/max keys, then ``capacity`` counts."""

    def __init__(self, device: torch.device, num_bins: int, keep_histogram: bool):
        self.device = device
        self.num_bins = num_bins
        self.keep = keep_histogram
        self.capacity = max(MAX_BINS, num_bins)
        self.buf = torch.zeros(_HEAD + self.capacity, dtype=torch.int64, device=device)
        self.F = self.buf[0:16].view(torch.float64)
        self.I = self.buf[16:32]
        self.K = self.buf[32:33].view(torch.int32)
        self.counts = self.buf[_HEAD:]
        index = device.index if device.index is not None else 0
        collect, fixup = _cuda_kernels(index)
        self._programs = _num_programs(index)
        state = [self.F, self.I, self.K, self.counts]
        extra = [num_bins, self.capacity, MAX_BINS, int(keep_histogram)]
        self._collect = _Launch(collect, [self.counts, 0, 0, *state, *extra])
        self._fixup = _Launch(
            fixup, [self.counts, 0, 0, self.F, self.I, self.counts, self.capacity]
        )

    def load(self, stats: TensorStats, amax: float, width: float, counts, pending: int) -> None:
        """Start from a host state (a collector that was read, merged or set by hand)."""
        head = np.zeros(_HEAD, dtype=np.int64)
        f = head[0:16].view(np.float64)
        i = head[16:32]
        k = head[32:33].view(np.int32)
        f[_AMAX], f[_SMIN], f[_SMAX] = amax, stats.min, stats.max
        i[_COUNT], i[_NAN], i[_INF], i[_PENDING] = stats.count, stats.nan, stats.inf, pending
        i[_HOT], i[_FIXUP_HOT] = -1, -1
        k[0], k[1] = np.iinfo(np.int32).max, np.iinfo(np.int32).min
        size = 0 if counts is None else counts.size
        if size > self.capacity:
            raise ValueError(f"{size} bins do not fit the device histogram ({self.capacity})")
        if counts is not None:
            inv = np.float32(1.0 / width)
            f[_WIDTH], f[_INV], f[_INV_OLD] = width, float(inv), float(inv)
            i[_HAS_RANGE], i[_SIZE] = 1, size
            hot = np.float32(np.float32(amax) * inv)
            i[_HOT] = min(int(hot), self.capacity) if math.isfinite(hot) else self.capacity
        host = torch.from_numpy(head)
        self.buf[:_HEAD].copy_(host)
        if size:
            self.counts[:size].copy_(torch.from_numpy(np.ascontiguousarray(counts, np.int64)))

    def update(self, x: torch.Tensor) -> None:
        """Add a batch (flat float32 on this device). No host read."""
        n = x.numel()
        if n == 0:
            return
        grid = max(1, min(self._programs, -(-n // (_THREADS * 16))))
        lo, hi = n & 0x7FFFFFFF, n >> 31
        stream = torch.cuda.current_stream(self.device)
        if torch.cuda.current_device() != self.device.index:
            with torch.cuda.device(self.device):  # the kernels belong to this device's context
                self._collect(x, lo, hi, grid, stream)
                self._fixup(x, lo, hi, grid, stream)
            return
        self._collect(x, lo, hi, grid, stream)
        self._fixup(x, lo, hi, grid, stream)

    def read(self) -> tuple[TensorStats, float, float, np.ndarray | None, int]:
        """(stats, |max|, width, counts or None, zeros before a range): one copy to the host."""
        host = self.buf.cpu().numpy()
        f = host[0:16].view(np.float64)
        i = host[16:32]
        stats = TensorStats(
            count=int(i[_COUNT]),
            min=float(f[_SMIN]),
            max=float(f[_SMAX]),
            nan=int(i[_NAN]),
            inf=int(i[_INF]),
        )
        counts = None
        width = 0.0
        if i[_HAS_RANGE]:
            width = float(f[_WIDTH])
            counts = host[_HEAD : _HEAD + int(i[_SIZE])].copy()
        return stats, float(f[_AMAX]), width, counts, int(i[_PENDING])


# --- the host-rule path: binning only ----------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _triton_kernel():
    """The compiled Triton kernels, or None where Triton is not installed."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def tile_bins(x_ptr, n, tile, inv_width, last, BLOCK: tl.constexpr):  # pragma: no cover
        """One tile: bin indices, the lanes to count, and which fall in bin 0 / the last bin."""
        offs = tile * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        v = tl.load(x_ptr + offs, mask=valid, other=0.0)
        idx = tl.minimum((tl.abs(v) * inv_width).to(tl.int32), last)
        is_lo = valid & (idx == 0)
        is_hi = valid & (idx == last)
        return idx, valid & ~is_lo & ~is_hi, is_lo.to(tl.int32), is_hi.to(tl.int32)

    @triton.jit
    def hist_kernel(
        x_ptr, n, tiles, inv_width, last, counts_ptr, NBINS: tl.constexpr, BLOCK: tl.constexpr
    ):  # pragma: no cover - compiled by Triton
        acc = tl.zeros([NBINS], dtype=tl.int32)
        lo = tl.zeros([BLOCK], dtype=tl.int32)
        hi = tl.zeros([BLOCK], dtype=tl.int32)
        for tile in range(tl.program_id(0), tiles, tl.num_programs(0)):
            idx, rest, is_lo, is_hi = tile_bins(x_ptr, n, tile, inv_width, last, BLOCK)
            lo += is_lo
            hi += is_hi
            acc += tl.histogram(idx, NBINS, mask=rest)
        bins = tl.arange(0, NBINS)
        acc = tl.where(bins == 0, tl.sum(lo, axis=0), acc)
        acc = tl.where(bins == last, acc + tl.sum(hi, axis=0), acc)
        tl.atomic_add(counts_ptr + bins, acc.to(tl.int64), mask=bins <= last, sem="relaxed")

    @triton.jit
    def hist_atomic_kernel(
        x_ptr, n, tiles, inv_width, last, rows_ptr, stride, BLOCK: tl.constexpr
    ):  # pragma: no cover - compiled by Triton
        row = rows_ptr + tl.program_id(0) * stride
        lo = tl.zeros([BLOCK], dtype=tl.int32)
        hi = tl.zeros([BLOCK], dtype=tl.int32)
        ones = tl.full([BLOCK], 1, tl.int32)
        for tile in range(tl.program_id(0), tiles, tl.num_programs(0)):
            idx, rest, is_lo, is_hi = tile_bins(x_ptr, n, tile, inv_width, last, BLOCK)
            lo += is_lo
            hi += is_hi
            tl.atomic_add(row + idx, ones, mask=rest, sem="relaxed")
        tl.atomic_add(row, tl.sum(lo, axis=0), sem="relaxed")
        tl.atomic_add(row + last, tl.sum(hi, axis=0), sem="relaxed")

    hist_kernel.atomic = hist_atomic_kernel
    return hist_kernel


def backend(x: torch.Tensor, nbins: int) -> str:
    """Which implementation builds ``x``'s histogram: "cuda" (range rule on the GPU), or one of
    the host-rule binnings "triton-atomic", "triton", "torch"."""
    if device_rule(x):
        return "cuda"
    return binning_backend(x, nbins)


def binning_backend(x: torch.Tensor, nbins: int) -> str:
    """The host-rule binning of ``x`` into ``nbins`` counts: "triton-atomic", "triton", "torch"."""
    forced = os.environ.get("INT8KIT_TORCH_HIST", "")
    if forced == "torch" or nbins > TRITON_MAX_BINS:
        return "torch"
    if forced in ("triton", "triton-atomic"):
        return forced
    if x.is_cuda and _triton_kernel() is not None:
        return "triton-atomic"
    return "torch"


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def add_counts(x: torch.Tensor, inv_width: float, counts: torch.Tensor) -> None:
    """Add the binned |x| (flat, finite float32, on counts' device) into int64 ``counts``."""
    nbins = counts.numel()
    if x.numel() == 0:
        return
    which = binning_backend(x, nbins)
    if which.startswith("triton") and _FAILED.get("triton") is None:
        kernel = _triton_kernel()
        if kernel is None:
            raise RuntimeError(f"INT8KIT_TORCH_HIST={which}, but Triton is not installed")
        p2 = max(_pow2(nbins), 128)
        tiles = -(-x.numel() // _BLOCK)
        programs = _num_programs(x.device.index or 0) if x.is_cuda else 4
        grid = (min(programs, tiles),)
        try:
            if which == "triton-atomic":  # per-program rows of global atomics, then summed
                rows = torch.zeros((grid[0], nbins), dtype=torch.int32, device=x.device)
                kernel.atomic[grid](
                    x, x.numel(), tiles, float(inv_width), nbins - 1, rows, nbins, BLOCK=_BLOCK
                )
                counts += rows.sum(0)
                return
            kernel[grid](
                x, x.numel(), tiles, float(inv_width), nbins - 1, counts, NBINS=p2, BLOCK=_BLOCK
            )
            return
        except Exception as exc:  # a Triton that cannot compile it: the torch path bins alike
            _FAILED["triton"] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"the Triton histogram kernel failed ({_FAILED['triton'][:200]}); "
                "binning with torch ops instead (slower, same counts)",
                stacklevel=2,
            )
    _add_counts_torch(x, inv_width, counts)


def _add_counts_torch(x: torch.Tensor, inv_width: float, counts: torch.Tensor) -> None:
    last = counts.numel() - 1
    inv = torch.tensor(inv_width, dtype=torch.float32, device=x.device)
    v = torch.abs(x).mul_(inv)  # the float32 product of the numpy rule
    lo = v < 1.0
    hi = v >= last
    counts[0] += lo.sum()
    counts[last] += hi.sum()
    # Hot bins to -1 (outside histc's range, so not counted); the rest as float64 indices.
    v = v.masked_fill_(lo | hi, -1.0).double()
    p2 = _pow2(last + 1)
    counts += torch.histc(v, bins=p2, min=0, max=p2)[: last + 1].to(torch.int64)
