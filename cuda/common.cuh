// regiondrop CUDA kernels: shared device helpers.
//
// This file is prepended by the host (src/backend/cuda/kernels.rs) to every other `cuda/*.cu`
// before NVRTC compiles it, so the kernel files need no #include (NVRTC here has no CUDA or system
// headers). To build a kernel file with nvcc instead: `nvcc -include cuda/common.cuh cuda/conv.cu`.
//
// Conventions shared by all kernels:
// - Feature maps are NHWC f32. A *view* is passed as a pointer already advanced by its channel
//   offset, plus `pitch` = channels of the whole buffer; pixel (y, x) channel c of the view lives at
//   `ptr[(y * w + x) * pitch + c]`.
// - Tile-wise kernels get the active tiles as a device array `tiles[n_tiles]` (u32 tile indices
//   into a grid with `cols` columns) and `ts` = tile / scale, the tile's size in pixels of this map.
//   A tile's rectangle is clipped to the map (border tiles may be partial), exactly as
//   `TileGrid::rect` does on the host.
// - Launch: gridDim.x = number of active tiles (one block column per tile), gridDim.y = blocks per
//   tile; threads stride over the tile's (pixel, channel) elements, channel fastest, so consecutive
//   threads touch consecutive addresses.

// Every kernel calls RD_PDL_WAIT() before it reads what an earlier kernel wrote or writes
// anything: with programmatic dependent launch (REGIONDROP_CUDA_PDL=1, sm_90 and newer) a kernel
// may start while the kernel before it in the stream finishes, and must wait there for that
// kernel's results. Most kernels wait first thing; the fused convolutions (conv.cu,
// rd_rows_begin) first read their weights and the frame's tile lists, which the host uploads
// before the frame's first kernel. Without PDL (or on older GPUs, or on the host) it does
// nothing.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define RD_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define RD_PDL_WAIT() ((void)0)
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define RD_ACT_IDENTITY 0
#define RD_ACT_RELU 1
#define RD_ACT_LEAKY_RELU 2
#define RD_ACT_SIGMOID 3
#define RD_ACT_SILU 4
#define RD_ACT_TANH 5
#define RD_ACT_HARD_SIGMOID 6
#define RD_ACT_HARD_SWISH 7
#define RD_ACT_CLIP 8

__device__ __forceinline__ int rd_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int rd_imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ float rd_neg_inf() { return __int_as_float(0xff800000); }

// f32 -> f16 bits (round to nearest even), saturated at the largest finite f16 (65504) so an
// outlier activation stays finite in an f16 GEMM; NaN stays NaN. (Inline PTX: NVRTC has no
// cuda_fp16.h here.)
__device__ __forceinline__ u16 rd_f16_bits(float x) {
    if (x == x) x = fminf(fmaxf(x, -65504.0f), 65504.0f);
#ifdef RD_HOST_EMU
    return rd_emu_f16_bits(x); // tests/cuda_emu/emu.hpp
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
#endif
}

// Stores v into an f32 matrix, or into an f16 one (as bits).
__device__ __forceinline__ void rd_store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void rd_store(u16* p, long long i, float v) { p[i] = rd_f16_bits(v); }

__device__ __forceinline__ float rd_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float rd_clamp01(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }

// Mirrors `Act::apply` (src/model/act.rs); p0/p1 carry the activation's parameters.
__device__ __forceinline__ float rd_act(float x, int act, float p0, float p1) {
    switch (act) {
    case RD_ACT_RELU: return fmaxf(x, 0.0f);
    case RD_ACT_LEAKY_RELU: return x >= 0.0f ? x : p0 * x;
    case RD_ACT_SIGMOID: return rd_sigmoid(x);
    case RD_ACT_SILU: return x * rd_sigmoid(x);
    case RD_ACT_TANH: return tanhf(x);
    case RD_ACT_HARD_SIGMOID: return rd_clamp01(p0 * x + p1);
    case RD_ACT_HARD_SWISH: return x * rd_clamp01(x / 6.0f + 0.5f);
    case RD_ACT_CLIP: return fminf(fmaxf(x, p0), p1);
    default: return x;
    }
}

#define RD_BIN_ADD 0
#define RD_BIN_SUB 1
#define RD_BIN_MUL 2
#define RD_BIN_DIV 3

__device__ __forceinline__ float rd_binop(int op, float a, float b) {
    switch (op) {
    case RD_BIN_SUB: return a - b;
    case RD_BIN_MUL: return a * b;
    case RD_BIN_DIV: return a / b;
    default: return a + b;
    }
}

// The rectangle of tile `t` in a map of `map_w` x `map_h` pixels where a tile is `ts` pixels.
struct RdRect {
    int x0, y0, tw, th;
};

// Padding entry of a tile list (CUDA graphs launch a fixed number of tile blocks per layer; the
// blocks past the frame's active tiles get this and do nothing). Must match NO_TILE in geometry.rs.
#define RD_NO_TILE 0xffffffffu

// The rectangle of tile `t` (empty for RD_NO_TILE, so the tile loops do nothing).
__device__ __forceinline__ RdRect rd_tile_rect(u32 t, int cols, int ts, int map_w, int map_h) {
    if (t == RD_NO_TILE) {
        RdRect e;
        e.x0 = 0; e.y0 = 0; e.tw = 0; e.th = 0;
        return e;
    }
    int tx = (int)(t % (u32)cols), ty = (int)(t / (u32)cols);
    RdRect r;
    r.x0 = rd_imin(tx * ts, map_w);
    r.y0 = rd_imin(ty * ts, map_h);
    r.tw = rd_imin((tx + 1) * ts, map_w) - r.x0;
    r.th = rd_imin((ty + 1) * ts, map_h) - r.y0;
    return r;
}

// First element index and stride of this thread within its tile's element range.
// The host guarantees that a tile's element count fits in an int (see launch geometry checks).
#define RD_TILE_LOOP(e, total) \
    for (int e = (int)(blockIdx.y * blockDim.x + threadIdx.x); e < (total); e += (int)(gridDim.y * blockDim.x))
