// Region-sparse convolution on the device: gather the active tiles' im2col rows (halo read from
// the input cache) into one row-major [M x K] matrix, GEMM (cuBLAS in f32, or for precision f16 on
// f16 operands with f32 accumulation; rd_sgemm_rm below when cuBLAS is not available), then scatter [M x N] + bias + activation into the output view.
// Depthwise convolutions are computed directly (rd_depthwise). Mirrors src/backend/cpu/conv.rs.
//
// Row layout of the gathered matrix: active tiles in list order; within a tile its clipped output
// pixels row-major. `row_off[i]` is the first row of list entry i (computed on the host together
// with the tile list, see geometry.rs), so M = row_off[n-1] + pixels of the last tile.
// K is ordered (ky, kx, ci) with ci in [0, cig); the input pointer is advanced to the group's first
// channel by the host.

// The input value at column k of im2col row p (pixel p of tile rectangle r, row-major), zero
// where the tap falls outside the input map (padding, or between the samples of a transposed
// convolution).
__device__ __forceinline__ float rd_tap(
    const float* __restrict__ in, int in_pitch, int in_h, int in_w, RdRect r, int p, int k,
    int kw, int sh, int sw, int dh, int dw, int pad_t, int pad_l, int cig, int transposed)
{
    int tap = k / cig;
    int ci = k - tap * cig;
    int ky = tap / kw, kx = tap - ky * kw;
    int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
    int iy, ix;
    if (transposed) {
        int ny = oy + pad_t - ky * dh;
        int nx = ox + pad_l - kx * dw;
        iy = (ny < 0 || ny % sh != 0) ? -1 : ny / sh;
        ix = (nx < 0 || nx % sw != 0) ? -1 : nx / sw;
    } else {
        iy = oy * sh + ky * dh - pad_t;
        ix = ox * sw + kx * dw - pad_l;
    }
    if (iy < 0 || ix < 0 || iy >= in_h || ix >= in_w) return 0.0f;
    return in[((long long)iy * in_w + ix) * in_pitch + ci];
}

// One block column per active tile; threads over (pixel, k), k fastest. `A` is float (rd_im2col)
// or f16 bits (rd_im2col_h, for the tensor-core GEMM of precision f16).
#define RD_IM2COL_PARAMS(A)                                                                      \
    const float* __restrict__ in, int in_pitch, int in_h, int in_w,                              \
    A* __restrict__ a, /* [M x K] row-major */                                                   \
    const u32* __restrict__ tiles, const u32* __restrict__ row_off, int ts, int cols,            \
    int out_h, int out_w,                                                                        \
    int kh, int kw, int sh, int sw, int dh, int dw, int pad_t, int pad_l,                        \
    int cig, int transposed
#define RD_IM2COL_ARGS \
    in, in_pitch, in_h, in_w, a, tiles, row_off, ts, cols, out_h, out_w, kh, kw, sh, sw, dh, dw, pad_t, pad_l, cig, transposed

template <typename A>
__device__ __forceinline__ void rd_im2col_tiles(RD_IM2COL_PARAMS(A))
{
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, out_w, out_h);
    int k_len = kh * kw * cig;
    int total = r.tw * r.th * k_len;
    long long row0 = row_off[blockIdx.x];
    RD_TILE_LOOP(e, total) {
        int p = e / k_len;
        int k = e - p * k_len;
        float v = rd_tap(in, in_pitch, in_h, in_w, r, p, k, kw, sh, sw, dh, dw, pad_t, pad_l, cig, transposed);
        rd_store(a, (row0 + p) * k_len + k, v);
    }
}

extern "C" __global__ void rd_im2col(RD_IM2COL_PARAMS(float))
{
    RD_PDL_WAIT();
    rd_im2col_tiles(RD_IM2COL_ARGS);
}

extern "C" __global__ void rd_im2col_h(RD_IM2COL_PARAMS(u16))
{
    RD_PDL_WAIT();
    rd_im2col_tiles(RD_IM2COL_ARGS);
}

// out(pixel, j) = act(c[row, j] + bias[j]) for the tiles' pixels; the output pointer is advanced
// to the group's first output channel by the host. One block column per active tile.
extern "C" __global__ void rd_scatter_bias_act(
    const float* __restrict__ c, int n,     // [M x N] row-major
    const float* __restrict__ bias,         // [N]
    float* __restrict__ out, int out_pitch, int out_h, int out_w,
    const u32* __restrict__ tiles, const u32* __restrict__ row_off, int ts, int cols,
    int act, float p0, float p1)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, out_w, out_h);
    int total = r.tw * r.th * n;
    long long row0 = row_off[blockIdx.x];
    RD_TILE_LOOP(e, total) {
        int p = e / n;
        int j = e - p * n;
        int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
        float v = c[(row0 + p) * n + j] + bias[j];
        out[((long long)oy * out_w + ox) * out_pitch + j] = rd_act(v, act, p0, p1);
    }
}

// Depthwise conv (groups == cin == cout), weights [kh*kw x C] (tap-major), one block column per
// active tile, threads over (pixel, channel).
extern "C" __global__ void rd_depthwise(
    const float* __restrict__ in, int in_pitch, int in_h, int in_w,
    float* __restrict__ out, int out_pitch, int out_h, int out_w,
    const float* __restrict__ wt, const float* __restrict__ bias, int c,
    int kh, int kw, int sh, int sw, int dh, int dw, int pad_t, int pad_l,
    const u32* __restrict__ tiles, int ts, int cols,
    int act, float p0, float p1)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, out_w, out_h);
    int total = r.tw * r.th * c;
    RD_TILE_LOOP(e, total) {
        int p = e / c;
        int ch = e - p * c;
        int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
        float acc = bias[ch];
        for (int ky = 0; ky < kh; ++ky) {
            int iy = oy * sh + ky * dh - pad_t;
            if (iy < 0 || iy >= in_h) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int ix = ox * sw + kx * dw - pad_l;
                if (ix < 0 || ix >= in_w) continue;
                acc += in[((long long)iy * in_w + ix) * in_pitch + ch] * wt[(ky * kw + kx) * c + ch];
            }
        }
        out[((long long)oy * out_w + ox) * out_pitch + ch] = rd_act(acc, act, p0, p1);
    }
}

#define RD_GEMM_TILE 16

// Fallback SGEMM when cuBLAS cannot be loaded: C[M x N] = A[M x K] * B[K x N], all row-major.
// Block (16, 16), grid (ceil(N/16), ceil(M/16)).
extern "C" __global__ void rd_sgemm_rm(
    const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c,
    int m, int n, int k)
{
    RD_PDL_WAIT();
    __shared__ float sa[RD_GEMM_TILE][RD_GEMM_TILE];
    __shared__ float sb[RD_GEMM_TILE][RD_GEMM_TILE + 1];
    int row = blockIdx.y * RD_GEMM_TILE + threadIdx.y;
    int col = blockIdx.x * RD_GEMM_TILE + threadIdx.x;
    float acc = 0.0f;
    for (int k0 = 0; k0 < k; k0 += RD_GEMM_TILE) {
        int ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
        sa[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? a[(long long)row * k + ka] : 0.0f;
        sb[threadIdx.y][threadIdx.x] = (kb < k && col < n) ? b[(long long)kb * n + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < RD_GEMM_TILE; ++i) acc += sa[threadIdx.y][i] * sb[i][threadIdx.x];
        __syncthreads();
    }
    if (row < m && col < n) c[(long long)row * n + col] = acc;
}

// Fused sparse convolution: act(conv + bias) for the rows of the gathered matrix (the active
// tiles' output pixels in list order, laid out by row_off as for rd_im2col) computed straight from
// the input cache, with no gathered matrix, no GEMM call and no scatter. Not transposed; f32
// arithmetic (rd_conv_rows_tc, further down: f16 operands on the tensor cores); groups by the host
// (one launch per group, pointers advanced as for rd_im2col).
// The taps' reach (kh - 1) * dh and (kw - 1) * dw must be at most 255 and cig at most 65535 (a tap
// packs into 32 bits).
//
// Block RD_FR_THREADS = 256 threads computing BM rows x BN output channels (2 x 4 per thread:
// 32 x 64 in rd_conv_rows, 64 x 32 in rd_conv_rows_n32; 4 x 4 in the _t44 variants); grid
// (ceil(m / BM), ceil(n / BN), splits). Rows past the frame's last pixel (graph launches cover an upper bound `m`) and rows of
// NO_TILE entries are skipped. K is consumed RD_FR_BK at a time through shared memory.
//
// Split K (splits > 1, for maps too small to fill the GPU with row x channel blocks alone): block z
// sums its share of K and leaves the partial sums in `ws` (splits x BM x BN floats per
// output block); the last of an output block's blocks to finish (counted in `counters`, zero before
// the launch and left zero after it) adds the partials in z order, so the result does not depend on
// which block finished last, and applies bias, activation and the scatter.
#define RD_FR_BK 32
#define RD_FR_THREADS 256

// W: the weights' type, float (rd_conv_rows*) or f16 bits (rd_conv_rows_tc*).
#define RD_CONV_ROWS_PARAMS_W(W)                                                                 \
    const float* __restrict__ in, int in_pitch, int in_h, int in_w,                              \
    const W* __restrict__ wt, int n, /* [K x n] row-major (this group) */                        \
    const float* __restrict__ bias,      /* [n] (this group) */                                  \
    float* __restrict__ out, int out_pitch, int out_h, int out_w,                                \
    const u32* __restrict__ tiles, const u32* __restrict__ row_off, int n_tiles, int m,          \
    int ts, int cols,                                                                            \
    int kh, int kw, int sh, int sw, int dh, int dw, int pad_t, int pad_l,                        \
    int cig, int act, float p0, float p1,                                                        \
    int splits, float* __restrict__ ws, u32* __restrict__ counters
#define RD_CONV_ROWS_PARAMS RD_CONV_ROWS_PARAMS_W(float)
#define RD_CONV_ROWS_ARGS                                                                        \
    in, in_pitch, in_h, in_w, wt, n, bias, out, out_pitch, out_h, out_w, tiles, row_off,         \
    n_tiles, m, ts, cols, kh, kw, sh, sw, dh, dw, pad_t, pad_l, cig, act, p0, p1, splits, ws,    \
    counters
// What rd_rows_prepare reads of them.
#define RD_ROWS_PREPARE_ARGS \
    tiles, row_off, n_tiles, m, ts, cols, out_h, out_w, kw, sh, sw, dh, dw, pad_t, pad_l, cig
// What rd_rows_taps reads of them.
#define RD_ROWS_TAPS_ARGS kw, dh, dw, cig
// What rd_rows_k_loop reads of them.
#define RD_ROWS_LOAD_ARGS RD_ROWS_TAPS_ARGS, in, in_pitch, in_h, in_w, wt, n

// How many row offsets rd_rows_prepare samples at once (a power of two, at most RD_FR_THREADS).
#define RD_ROW_SAMPLES RD_FR_THREADS

// Shared state of one fused-convolution block: per row, its output pixel (-1: no pixel of this
// frame) and the input origin of its taps; for the K step being multiplied and the next one, the
// input offset and channel each column k of the implicit matrix reads, packed as
// ci | dy << 16 | dx << 24 (0xffffffff past the block's share of K); rd_rows_prepare's samples of
// the row offsets and of the tiles at them.
template <int BM>
struct RdRowsShared {
    int iy[BM], ix[BM], out[BM];
    u32 tap[2][RD_FR_BK];
    u32 off[RD_ROW_SAMPLES], tile[RD_ROW_SAMPLES];
    int last;
};

#define RD_NO_TAP 0xffffffffu

// Threads 0..RD_FR_BK-1 write the taps of the K step starting at k0 into tap[buf].
template <int BM>
__device__ __forceinline__ void rd_rows_taps(
    RdRowsShared<BM>& s, int buf, int k0, int k_hi, int kw, int dh, int dw, int cig)
{
    int t = (int)threadIdx.x, k = k0 + t;
    if (t >= RD_FR_BK) return;
    u32 v = RD_NO_TAP;
    if (k < k_hi) {
        int tap = k / cig;
        int ky = tap / kw;
        v = (u32)(k - tap * cig) | (u32)(ky * dh) << 16 | (u32)((tap - ky * kw) * dw) << 24;
    }
    s.tap[buf][t] = v;
}

// This block's share of K under `splits`: whole RD_FR_BK steps, [*lo, *hi).
__device__ __forceinline__ void rd_rows_k_share(int k_len, int splits, int* lo, int* hi)
{
    int k_share = (k_len + splits * RD_FR_BK - 1) / (splits * RD_FR_BK) * RD_FR_BK;
    *lo = (int)blockIdx.z * k_share;
    *hi = rd_imin(k_len, *lo + k_share);
}

// Fills the block's rows and the taps of its first K step (its share of K from rd_rows_k_share);
// false (for the whole block) when none of its rows is a pixel of this frame: CUDA graphs launch
// blocks for a bucket's rows, and the frame may have fewer.
//
// A row's tile is the last list entry e with row_off[e] <= row (row_off is non-decreasing). A
// tile has at most ts * ts pixels, so for the block's rows e >= lo = row0 / (ts * ts). The
// threads load RD_ROW_SAMPLES entries of [lo, n_tiles), `stride` apart, into shared memory at
// once, and each row searches them there: one round trip to global memory where a binary search
// of the list took one per halving. Only a list of more than RD_ROW_SAMPLES entries past lo
// (stride > 1) leaves each row stride entries to search in global memory.
template <int BM>
__device__ __forceinline__ bool rd_rows_prepare(
    RdRowsShared<BM>& s, int k_lo, int k_hi, const u32* __restrict__ tiles,
    const u32* __restrict__ row_off, int n_tiles, int m, int ts, int cols, int out_h, int out_w,
    int kw, int sh, int sw, int dh, int dw, int pad_t, int pad_l, int cig)
{
    int t = (int)threadIdx.x;
    int row0 = (int)blockIdx.x * BM;
    if (row0 >= m || n_tiles <= 0) return false;
    int lo = rd_imin(row0 / rd_imax(ts * ts, 1), n_tiles - 1);
    int stride = (n_tiles - lo + RD_ROW_SAMPLES - 1) / RD_ROW_SAMPLES;
    if (t < RD_ROW_SAMPLES) {
        int e = lo + t * stride;
        s.off[t] = e < n_tiles ? row_off[e] : 0xffffffffu;
        s.tile[t] = e < n_tiles ? tiles[e] : RD_NO_TILE;
    }
    rd_rows_taps(s, 0, k_lo, k_hi, RD_ROWS_TAPS_ARGS);
    __syncthreads();
    int found = 0;
    if (t < BM) {
        u32 row = (u32)(row0 + t);
        int o = -1, iy = 0, ix = 0;
        if (row < (u32)m) {
            // The last sample at or before the row (s.off[0] <= row, as above).
            int j = 0;
#pragma unroll
            for (int half = RD_ROW_SAMPLES / 2; half > 0; half >>= 1)
                if (s.off[j + half] <= row) j += half;
            u32 tile = s.tile[j], first = s.off[j];
            if (stride > 1) {
                int a = lo + j * stride, b = rd_imin(a + stride, n_tiles) - 1;
                while (a < b) {
                    int mid = (a + b + 1) >> 1;
                    if (row_off[mid] <= row) a = mid; else b = mid - 1;
                }
                tile = tiles[a];
                first = row_off[a];
            }
            if (tile != RD_NO_TILE) {
                RdRect r = rd_tile_rect(tile, cols, ts, out_w, out_h);
                int p = (int)(row - first);
                if (p < r.tw * r.th) {
                    int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
                    o = oy * out_w + ox;
                    iy = oy * sh - pad_t;
                    ix = ox * sw - pad_l;
                    found = 1;
                }
            }
        }
        s.out[t] = o;
        s.iy[t] = iy;
        s.ix[t] = ix;
    }
    return __syncthreads_or(found) != 0;
}

// The input value at row r, column kk of the block's K step whose taps are `taps` (0 outside the
// map, past the share of K, or for a row that is no pixel).
template <int BM>
__device__ __forceinline__ float rd_rows_tap(
    const RdRowsShared<BM>& s, const u32* taps, const float* __restrict__ in, int in_pitch,
    int in_h, int in_w, int r, int kk)
{
    u32 tap = taps[kk];
    if (tap == RD_NO_TAP || s.out[r] < 0) return 0.0f;
    int iy = s.iy[r] + (int)((tap >> 16) & 0xffu), ix = s.ix[r] + (int)(tap >> 24);
    if (iy < 0 || ix < 0 || iy >= in_h || ix >= in_w) return 0.0f;
    return in[((long long)iy * in_w + ix) * in_pitch + (int)(tap & 0xffffu)];
}

// Four consecutive values loaded at once (16 and 8 bytes: aligned vector loads).
struct alignas(16) RdF4 { float v[4]; };
struct alignas(8) RdH4 { u16 v[4]; };
__device__ __forceinline__ void rd_load4(const float* p, float* v)
{
    RdF4 q = *reinterpret_cast<const RdF4*>(p);
#pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = q.v[c];
}
__device__ __forceinline__ void rd_load4(const u16* p, u16* v)
{
    RdH4 q = *reinterpret_cast<const RdH4*>(p);
#pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = q.v[c];
}

// The four input values at row r, columns kk..kk+3 of the block's K step whose taps are `taps`,
// where those columns are four consecutive channels of one tap (`vec`: cig, in_pitch and the
// input's address multiples of 4 floats); else each column on its own.
template <int BM>
__device__ __forceinline__ void rd_rows_tap4(
    const RdRowsShared<BM>& s, const u32* taps, const float* __restrict__ in, int in_pitch,
    int in_h, int in_w, int r, int kk, bool vec, float* v)
{
    if (!vec) {
#pragma unroll
        for (int c = 0; c < 4; ++c) v[c] = rd_rows_tap(s, taps, in, in_pitch, in_h, in_w, r, kk + c);
        return;
    }
    u32 tap = taps[kk];
    int iy = s.iy[r] + (int)((tap >> 16) & 0xffu), ix = s.ix[r] + (int)(tap >> 24);
    if (tap == RD_NO_TAP || s.out[r] < 0 || iy < 0 || ix < 0 || iy >= in_h || ix >= in_w) {
#pragma unroll
        for (int c = 0; c < 4; ++c) v[c] = 0.0f;
        return;
    }
    rd_load4(in + ((long long)iy * in_w + ix) * in_pitch + (int)(tap & 0xffffu), v);
}

// One K step's operands, fetched from global memory into registers while the step before it is
// multiplied, then put into shared memory, four consecutive values at a time: chunk
// c = threadIdx.x + i * RD_FR_THREADS of the step is taps (row c / (RD_FR_BK / 4), columns
// 4 (c % (RD_FR_BK / 4)) + 0..3), so neighbouring threads read neighbouring channels; and
// weights (column c / (BN / 4), channels 4 (c % (BN / 4)) + 0..3).
template <int BM, int BN, typename W>
struct RdRowsRegs {
    static_assert(RD_FR_BK * BM % (4 * RD_FR_THREADS) == 0 &&
                      RD_FR_BK * BN % (4 * RD_FR_THREADS) == 0,
                  "whole chunks per thread");
    static constexpr int NA = RD_FR_BK * BM / (4 * RD_FR_THREADS);
    static constexpr int NW = RD_FR_BK * BN / (4 * RD_FR_THREADS);
    float a[NA][4];
    W w[NW][4];
    bool vec_a, vec_w; // rd_rows_vec_a, rd_rows_vec_w
};

// Whether a launch's chunks of four may be loaded as vectors: taps where they are four consecutive,
// aligned channels of one tap (the K step starts at a multiple of 4), weights where they are four
// aligned output channels of one weight row.
__device__ __forceinline__ bool rd_rows_vec_a(const float* in, int in_pitch, int cig)
{
    return cig % 4 == 0 && in_pitch % 4 == 0 && ((unsigned long long)in & 15u) == 0;
}
template <typename W>
__device__ __forceinline__ bool rd_rows_vec_w(const W* wt, int n)
{
    return n % 4 == 0 && ((unsigned long long)wt & (4 * sizeof(W) - 1)) == 0;
}

// Reads the taps of the K step whose taps are in tap[buf] into `regs`, for every row (0 outside
// the map, past the share of K, or for a row that is no pixel).
template <int BM, int BN, typename W>
__device__ __forceinline__ void rd_rows_fetch_a(
    const RdRowsShared<BM>& s, int buf, const float* __restrict__ in, int in_pitch, int in_h,
    int in_w, RdRowsRegs<BM, BN, W>& regs)
{
    int t = (int)threadIdx.x;
#pragma unroll
    for (int i = 0; i < regs.NA; ++i) {
        int c = t + i * RD_FR_THREADS;
        rd_rows_tap4(s, s.tap[buf], in, in_pitch, in_h, in_w, c / (RD_FR_BK / 4),
                     4 * (c % (RD_FR_BK / 4)), regs.vec_a, regs.a[i]);
    }
}

// Reads the weights of the K step [k0, k0 + RD_FR_BK) into `regs`: the block's channels from
// n_base (0 past the share of K or past n).
template <int BM, int BN, typename W>
__device__ __forceinline__ void rd_rows_fetch_w(
    int k0, int k_hi, const W* __restrict__ wt, int n, int n_base, RdRowsRegs<BM, BN, W>& regs)
{
    int t = (int)threadIdx.x;
#pragma unroll
    for (int i = 0; i < regs.NW; ++i) {
        int c = t + i * RD_FR_THREADS;
        int k = k0 + c / (BN / 4), j = n_base + 4 * (c % (BN / 4));
        const W* p = wt + (long long)k * n + j;
        if (regs.vec_w && k < k_hi && j + 3 < n) {
            rd_load4(p, regs.w[i]);
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) regs.w[i][e] = (k < k_hi && j + e < n) ? p[e] : W(0);
        }
    }
}

// Puts `regs` into shared memory as store_a(row, kk, value) and store_w(channel, kk, weight).
template <int BM, int BN, typename W, typename StoreA, typename StoreW>
__device__ __forceinline__ void rd_rows_put(
    const RdRowsRegs<BM, BN, W>& regs, StoreA store_a, StoreW store_w)
{
    int t = (int)threadIdx.x;
#pragma unroll
    for (int i = 0; i < regs.NA; ++i) {
        int c = t + i * RD_FR_THREADS;
#pragma unroll
        for (int e = 0; e < 4; ++e)
            store_a(c / (RD_FR_BK / 4), 4 * (c % (RD_FR_BK / 4)) + e, regs.a[i][e]);
    }
#pragma unroll
    for (int i = 0; i < regs.NW; ++i) {
        int c = t + i * RD_FR_THREADS;
#pragma unroll
        for (int e = 0; e < 4; ++e) store_w(4 * (c % (BN / 4)) + e, c / (BN / 4), regs.w[i][e]);
    }
}

// Starts a fused-convolution block: fetches the weights of its first K step (which no kernel
// writes) while its rows are found (rd_rows_prepare), then waits for the kernel before it (PDL:
// until here the block reads only the weights and the frame's tile lists, uploaded before the
// frame's first kernel). Fills the share of K; false when the block has no pixel of this frame.
template <int BM, int BN, typename W>
__device__ __forceinline__ bool rd_rows_begin(
    RdRowsShared<BM>& s, RdRowsRegs<BM, BN, W>& regs, int* k_lo, int* k_hi,
    RD_CONV_ROWS_PARAMS_W(W))
{
    rd_rows_k_share(kh * kw * cig, splits, k_lo, k_hi);
    regs.vec_a = rd_rows_vec_a(in, in_pitch, cig);
    regs.vec_w = rd_rows_vec_w(wt, n);
    rd_rows_fetch_w<BM, BN>(*k_lo, *k_hi, wt, n, (int)blockIdx.y * BN, regs);
    // A block with no rows waits too: were a whole launch to find none, the kernel after it
    // would otherwise not be ordered after the kernel before it.
    bool rows = rd_rows_prepare(s, *k_lo, *k_hi, RD_ROWS_PREPARE_ARGS);
    RD_PDL_WAIT();
    return rows;
}

// The K loop of a fused convolution over the block's share [k_lo, k_hi), after rd_rows_begin
// (the first step's weights in `regs`, its taps in tap[0]): each step's operands are put into
// shared memory, the next step's fetch is issued, and then the step is multiplied (multiply()),
// so that the next step's loads are in flight while this one's products are computed. Taps go
// two steps ahead: a step's taps are written once every fetch of the step two before, which used
// the same buffer, is done.
template <int BM, int BN, typename W, typename StoreA, typename StoreW, typename Multiply>
__device__ __forceinline__ void rd_rows_k_loop(
    RdRowsShared<BM>& s, RdRowsRegs<BM, BN, W>& regs, int k_lo, int k_hi, int kw, int dh, int dw,
    int cig, const float* __restrict__ in, int in_pitch, int in_h, int in_w,
    const W* __restrict__ wt, int n, StoreA store_a, StoreW store_w, Multiply multiply)
{
    int n_base = (int)blockIdx.y * BN;
    rd_rows_fetch_a<BM, BN>(s, 0, in, in_pitch, in_h, in_w, regs);
    rd_rows_taps(s, 1, k_lo + RD_FR_BK, k_hi, kw, dh, dw, cig);
    for (int k0 = k_lo, cur = 0; k0 < k_hi; k0 += RD_FR_BK, cur ^= 1) {
        rd_rows_put(regs, store_a, store_w);
        __syncthreads();
        if (k0 + RD_FR_BK < k_hi) {
            rd_rows_fetch_a<BM, BN>(s, cur ^ 1, in, in_pitch, in_h, in_w, regs);
            rd_rows_fetch_w<BM, BN>(k0 + RD_FR_BK, k_hi, wt, n, n_base, regs);
            rd_rows_taps(s, cur, k0 + 2 * RD_FR_BK, k_hi, kw, dh, dw, cig);
        }
        multiply();
        __syncthreads();
    }
}

// Four consecutive floats of another block's results, read past the (non-coherent) L1 cache
// (16-byte aligned).
__device__ __forceinline__ void rd_load4_cg(const float* p, float* v)
{
#ifdef RD_HOST_EMU
    memcpy(v, p, 16);
#else
    asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3])
                 : "l"(p)
                 : "memory");
#endif
}

// The bias, activation and pixel of the block's output (row r, channel c) with value v.
template <int BN>
__device__ __forceinline__ void rd_rows_put_out(
    const int* rows_out, int r, int c, float v, int n, const float* __restrict__ bias,
    float* __restrict__ out, int out_pitch, int act, float p0, float p1)
{
    int o = rows_out[r], j = (int)blockIdx.y * BN + c;
    if (o >= 0 && j < n) out[(long long)o * out_pitch + j] = rd_act(v + bias[j], act, p0, p1);
}

// Ends a fused convolution: adds bias, applies the activation and writes each value to its pixel.
// The thread's value i is the block's output (row, col) of `pos(i)`. With split K, each block
// leaves its partial sums (BM x BN, row-major) in `ws` (16-byte aligned: a device allocation)
// instead, and the last block of the output block to finish sums every split's partial in z order
// and writes the outputs; the other blocks return. The sum reads four consecutive values at a
// time, each thread its own chunks of the tile, two splits' loads in flight at once.
template <int BM, int BN, int NV, typename Pos>
__device__ __forceinline__ void rd_rows_finish(
    RdRowsShared<BM>& s, float (&acc)[NV], Pos pos, int n, const float* __restrict__ bias,
    float* __restrict__ out, int out_pitch, int act, float p0, float p1,
    int splits, float* __restrict__ ws, u32* __restrict__ counters)
{
    if (splits <= 1) {
#pragma unroll
        for (int i = 0; i < NV; ++i) {
            int r, c;
            pos(i, &r, &c);
            rd_rows_put_out<BN>(s.out, r, c, acc[i], n, bias, out, out_pitch, act, p0, p1);
        }
        return;
    }
    int block = (int)(blockIdx.y * gridDim.x + blockIdx.x);
    long long part = (long long)BM * BN;
    float* mine = ws + ((long long)block * splits + blockIdx.z) * part;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
        int r, c;
        pos(i, &r, &c);
        mine[r * BN + c] = acc[i];
    }
    __threadfence();
    __syncthreads();
    // The block's partial is complete: thread 0 publishes it (fence, then the count).
    if (threadIdx.x == 0) {
        __threadfence();
        s.last = atomicAdd(&counters[block], 1u) == (u32)(splits - 1);
    }
    __syncthreads();
    if (!s.last) return;
    __threadfence();
    constexpr int CHUNKS = BM * BN / (4 * RD_FR_THREADS); // of four values, per thread
    static_assert(BM * BN % (4 * RD_FR_THREADS) == 0, "whole chunks per thread");
    const float* all = ws + (long long)block * splits * part;
    float sum[CHUNKS][4];
#pragma unroll
    for (int q = 0; q < CHUNKS; ++q)
#pragma unroll
        for (int e = 0; e < 4; ++e) sum[q][e] = 0.0f;
#pragma unroll 2
    for (int z = 0; z < splits; ++z) {
        float v[CHUNKS][4];
#pragma unroll
        for (int q = 0; q < CHUNKS; ++q)
            rd_load4_cg(all + z * part + 4 * ((int)threadIdx.x + q * RD_FR_THREADS), v[q]);
#pragma unroll
        for (int q = 0; q < CHUNKS; ++q)
#pragma unroll
            for (int e = 0; e < 4; ++e) sum[q][e] += v[q][e];
    }
#pragma unroll
    for (int q = 0; q < CHUNKS; ++q) {
        int at = 4 * ((int)threadIdx.x + q * RD_FR_THREADS);
#pragma unroll
        for (int e = 0; e < 4; ++e)
            rd_rows_put_out<BN>(s.out, at / BN, at % BN + e, sum[q][e], n, bias, out, out_pitch, act, p0, p1);
    }
    if (threadIdx.x == 0) counters[block] = 0;
}

// The f32 kernels' threads: BN / TN across, BM / TM down, TM x TN outputs each (acc[i * TN + j]:
// row ty TM + i, channel tx TN + j).
template <int BM, int BN, int TM, int TN>
struct RdSimt {
    static constexpr int NV = TM * TN;
    int tx, ty;

    __device__ __forceinline__ RdSimt()
    {
        int t = (int)threadIdx.x;
        tx = t % (BN / TN);
        ty = t / (BN / TN);
    }

    // acc += one K step: the tap of row r, column kk is a_at(r, kk); the weight of column kk,
    // channel j is b_at(kk, j).
    template <typename GetA, typename GetB>
    __device__ __forceinline__ void multiply(float* acc, GetA a_at, GetB b_at) const
    {
        for (int kk = 0; kk < RD_FR_BK; ++kk) {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = a_at(ty * TM + i, kk);
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = b_at(kk, tx * TN + j);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i * TN + j] += a[i] * b[j];
        }
    }

    // A pipelined K step: taps row-major at `a` (pitch lda), weights row-major at `b` (pitch ldb).
    __device__ __forceinline__ void step(float* acc, const float* a, int lda, const float* b, int ldb) const
    {
        multiply(acc, [&](int r, int kk) { return a[r * lda + kk]; },
                 [&](int kk, int j) { return b[kk * ldb + j]; });
    }

    // The block's (row, channel) of accumulator i (the `pos` of rd_rows_finish).
    __device__ __forceinline__ void operator()(int i, int* r, int* c) const
    {
        *r = ty * TM + i / TN;
        *c = tx * TN + i % TN;
    }
};

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void rd_conv_rows_block(RD_CONV_ROWS_PARAMS)
{
    __shared__ float sa[RD_FR_BK][BM + 1];
    __shared__ float sw_[RD_FR_BK][BN];
    __shared__ RdRowsShared<BM> s;
    RdRowsRegs<BM, BN, float> regs;
    int k_lo, k_hi;
    if (!rd_rows_begin(s, regs, &k_lo, &k_hi, RD_CONV_ROWS_ARGS)) return;
    RdSimt<BM, BN, TM, TN> th;
    float acc[TM * TN];
#pragma unroll
    for (int i = 0; i < TM * TN; ++i) acc[i] = 0.0f;
    rd_rows_k_loop<BM, BN>(
        s, regs, k_lo, k_hi, RD_ROWS_LOAD_ARGS,
        [&](int r, int kk, float v) { sa[kk][r] = v; },
        [&](int jj, int kk, float w) { sw_[kk][jj] = w; },
        [&]() {
            th.multiply(acc, [&](int r, int kk) { return sa[kk][r]; },
                        [&](int kk, int j) { return sw_[kk][j]; });
        });
    rd_rows_finish<BM, BN>(s, acc, th, n, bias, out, out_pitch, act, p0, p1, splits, ws, counters);
}

extern "C" __global__ void rd_conv_rows(RD_CONV_ROWS_PARAMS)
{
    rd_conv_rows_block<32, 64, 2, 4>(RD_CONV_ROWS_ARGS);
}

// For layers of at most 32 output channels (per group): 64 rows x 32 channels per block, so no
// thread computes channels that do not exist.
extern "C" __global__ void rd_conv_rows_n32(RD_CONV_ROWS_PARAMS)
{
    rd_conv_rows_block<64, 32, 2, 4>(RD_CONV_ROWS_ARGS);
}

// 4 x 4 outputs per thread (64 x 64, and 128 x 32 for at most 32 channels): half the shared-memory
// loads per multiply-add of the 2 x 4 blocks, in larger blocks (REGIONDROP_CUDA_FUSED_TILE=4x4).
extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 3) rd_conv_rows_t44(RD_CONV_ROWS_PARAMS)
{
    rd_conv_rows_block<64, 64, 4, 4>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 3) rd_conv_rows_n32_t44(RD_CONV_ROWS_PARAMS)
{
    rd_conv_rows_block<128, 32, 4, 4>(RD_CONV_ROWS_ARGS);
}

// The tensor-core form for precision f16 (compute capability 8.0 and newer): the input taps are
// rounded to f16 as rd_im2col_h rounds them, the weights are the layer's f16 copy, products are
// summed in f32 by mma.sync (m16n8k16). Same grid, rows, split K and outputs as the f32 kernel of
// the same block shape.
#define RD_TC_LD (RD_FR_BK + 8) // the taps' f16 row pitch in shared memory (16 bytes of padding: no bank conflicts)


// Where a lane's mma.m16n8k16 registers come from (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"; g = lane / 4, q = lane % 4). Each f16 register holds two
// elements, the lower one first. A, row-major with pitch lda: rows g and g + 8 at column 2q, then
// the same rows at column 2q + 8 (each register one 4-byte load). B, row-major (k by k) with
// pitch ldb: column g at k = 2q, 2q + 1 (register 0) and 2q + 8, 2q + 9 (register 1), each
// element one 2-byte load (b_off[0..4]). The four f32 accumulators: (g, 2q), (g, 2q + 1),
// (g + 8, 2q), (g + 8, 2q + 1).
__device__ __forceinline__ void rd_mma_fragments(int lane, int lda, int ldb, int* a_off, int* b_off)
{
    int g = lane >> 2, q = lane & 3;
    a_off[0] = g * lda + 2 * q;
    a_off[1] = (g + 8) * lda + 2 * q;
    a_off[2] = g * lda + 2 * q + 8;
    a_off[3] = (g + 8) * lda + 2 * q + 8;
    b_off[0] = (2 * q) * ldb + g;
    b_off[1] = (2 * q + 1) * ldb + g;
    b_off[2] = (2 * q + 8) * ldb + g;
    b_off[3] = (2 * q + 9) * ldb + g;
}

__device__ __forceinline__ void rd_mma_acc_pos(int lane, int i, int* r, int* c)
{
    *r = (lane >> 2) + (i >= 2 ? 8 : 0);
    *c = 2 * (lane & 3) + (i & 1);
}

// The row whose address lane `lane` gives ldmatrix.x4.trans to load the B fragments of two
// 16 x 8 tiles side by side (row-major, pitch ldb, as an offset from the first tile): matrix
// m = lane / 8 is rows k = 8 (m % 2) + 0..7 at columns 8 (m / 2) + 0..7, and the instruction
// hands each lane the transposed elements mma.m16n8k16 wants in registers b0, b1 of the first
// tile (matrices 0, 1) and of the second (2, 3) (tests/cuda_kernels_host.rs checks this against
// rd_mma_fragments).
__device__ __forceinline__ int rd_ldsm_b_row(int lane, int ldb)
{
    int m = lane >> 3;
    return ((lane & 7) + 8 * (m & 1)) * ldb + 8 * (m >> 1);
}

// A generic pointer to shared memory as the 32-bit shared address PTX operands take.
__device__ __forceinline__ u32 rd_smem_addr(const void* p)
{
#ifdef RD_HOST_EMU
    (void)p;
    return 0;
#else
    u32 d;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(d) : "l"(p));
    return d;
#endif
}

// An f16 operand of A as bits: as stored (u16), or an f32 rounded as rd_im2col_h rounds it.
__device__ __forceinline__ u32 rd_a_bits(const u16* a, int i) { return a[i]; }
__device__ __forceinline__ u32 rd_a_bits(const float* a, int i) { return rd_f16_bits(a[i]); }

// Two f16 operands of A at a, a + 1 in one register, the lower one first (aligned pairs load
// at once: u16 pairs as one word, f32 pairs as 8 bytes).
struct alignas(8) RdF2 { float v[2]; };
__device__ __forceinline__ u32 rd_a_pair(const u16* a) { return *(const u32*)a; }
__device__ __forceinline__ u32 rd_a_pair(const float* a)
{
    RdF2 p = *reinterpret_cast<const RdF2*>(a);
#if !defined(RD_HOST_EMU) && __CUDA_ARCH__ >= 800
    // Both rounded in one instruction, saturated at the largest finite f16 with NaN kept NaN, as
    // rd_f16_bits does (the first source goes to the upper half).
    u32 h;
    asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(p.v[1]), "f"(p.v[0]));
    return h;
#else
    return (u32)rd_f16_bits(p.v[0]) | (u32)rd_f16_bits(p.v[1]) << 16;
#endif
}

// The tensor-core product of a warp, in three parts: A's fragment of a 16 x 16 tile, B's
// fragments of two 16 x 8 tiles side by side, and mma.m16n8k16 on them (f16 operands, f32 sums).
// A is row-major at `a` (pitch `lda`; f16 bits, or f32 rounded to f16 as the fragment is built).
// B is row-major at `b` (row k, the 16 columns consecutive, at b + k * ldb).

// ra[0..3] = this lane's A fragment.
template <typename A>
__device__ __forceinline__ void rd_mma_a_frag(const A* a, int lda, int lane, u32* ra)
{
    int ao[4], bo[4];
    rd_mma_fragments(lane, lda, 0, ao, bo);
#pragma unroll
    for (int i = 0; i < 4; ++i) ra[i] = rd_a_pair(a + ao[i]);
}

// rb[0..3] = this lane's B registers b0, b1 of the first tile, then of the second: LDSM by one
// ldmatrix.x4.trans (B's rows 16-byte aligned), else by 2-byte loads.
template <bool LDSM>
__device__ __forceinline__ void rd_mma_b_frags(const u16* b, int ldb, int lane, u32* rb)
{
#ifndef RD_HOST_EMU
    if (LDSM) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(rb[0]), "=r"(rb[1]), "=r"(rb[2]), "=r"(rb[3])
                     : "r"(rd_smem_addr(b + rd_ldsm_b_row(lane, ldb))));
        return;
    }
#endif
    int ao[4], bo[4];
    rd_mma_fragments(lane, 0, ldb, ao, bo);
#pragma unroll
    for (int ni = 0; ni < 2; ++ni) {
        const u16* bn = b + 8 * ni;
        rb[2 * ni] = (u32)bn[bo[0]] | (u32)bn[bo[1]] << 16;
        rb[2 * ni + 1] = (u32)bn[bo[2]] | (u32)bn[bo[3]] << 16;
    }
}

// acc[0..3] (this lane's accumulators of a 16 x 8 tile, as rd_mma_acc_pos places them) += A · B.
// (The host emulation computes the products in rd_mma_emu instead.)
#ifndef RD_HOST_EMU
__device__ __forceinline__ void rd_mma_sync(float* acc, const u32* ra, u32 rb0, u32 rb1)
{
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb0), "r"(rb1));
#else
    // The host launches the tensor-core kernels on compute capability 8.0 and newer only.
    __trap();
#endif
}
#endif

#ifdef RD_HOST_EMU
// The host has no warps: each lane computes its own accumulators of the two 16 x 8 tiles from
// shared memory (tests/cuda_kernels_host.rs checks rd_mma_fragments against the ISA's layout).
template <typename A>
__device__ __forceinline__ void rd_mma_emu(float* acc, const A* a, int lda, const u16* b, int ldb)
{
    int lane = (int)(threadIdx.x & 31u);
    for (int ni = 0; ni < 2; ++ni)
        for (int i = 0; i < 4; ++i) {
            int r, c;
            rd_mma_acc_pos(lane, i, &r, &c);
            float sum = 0.0f;
            for (int k = 0; k < 16; ++k)
                sum += rd_emu_f16_value((u16)rd_a_bits(a, r * lda + k)) *
                       rd_emu_f16_value(b[k * ldb + 8 * ni + c]);
            acc[4 * ni + i] += sum;
        }
}
#endif

// The tensor-core kernels' eight warps: BN / 16 across, 128 / BN down, each computing MI x 2
// tiles of 16 x 8 (MI = 1 in 32 x 64 and 64 x 32 blocks, 2 in 64 x 64 and 128 x 32 blocks).
// A thread's accumulators are acc[MI * 8], [mi][ni][4]: rows wm + 16 mi, channels wn + 8 ni.
template <int BM, int BN>
struct RdTcWarps {
    static constexpr int MI = BM * BN / (RD_FR_THREADS * 8);
    static_assert(BN % 16 == 0 && (RD_FR_THREADS / 32) % (BN / 16) == 0 &&
                      (RD_FR_THREADS / 32) / (BN / 16) * 16 * MI == BM,
                  "eight warps of MI x 2 tiles of 16 x 8");
    static_assert(BM <= RD_FR_THREADS, "one thread per row in rd_rows_prepare");
    static constexpr int NV = MI * 8;
    int lane, wm, wn;

    __device__ __forceinline__ RdTcWarps()
    {
        int t = (int)threadIdx.x, warp = t >> 5;
        lane = t & 31;
        wm = (warp / (BN / 16)) * 16 * MI;
        wn = (warp % (BN / 16)) * 16;
    }

    // acc += one K step: the block's taps `a` (BM rows of RD_FR_BK, pitch lda) times its weights
    // `b` (RD_FR_BK rows of BN channels, pitch ldb); LDSM: b's fragments by ldmatrix (its rows
    // 16-byte aligned). B's fragments are loaded once for the MI tiles of A, A's once for the
    // two of B.
    template <bool LDSM, typename A>
    __device__ __forceinline__ void multiply(float* acc, const A* a, int lda, const u16* b, int ldb) const
    {
#pragma unroll
        for (int ks = 0; ks < RD_FR_BK; ks += 16) {
#ifdef RD_HOST_EMU
            for (int mi = 0; mi < MI; ++mi)
                rd_mma_emu(acc + mi * 8, a + (wm + 16 * mi) * lda + ks, lda, b + ks * ldb + wn, ldb);
#else
            u32 rb[4];
            rd_mma_b_frags<LDSM>(b + ks * ldb + wn, ldb, lane, rb);
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                u32 ra[4];
                rd_mma_a_frag(a + (wm + 16 * mi) * lda + ks, lda, lane, ra);
                rd_mma_sync(acc + mi * 8, ra, rb[0], rb[1]);
                rd_mma_sync(acc + mi * 8 + 4, ra, rb[2], rb[3]);
            }
#endif
        }
    }

    // A pipelined K step: f32 taps, f16 weights with 16-byte aligned rows (ldmatrix).
    __device__ __forceinline__ void step(float* acc, const float* a, int lda, const u16* b, int ldb) const
    {
        multiply<true>(acc, a, lda, b, ldb);
    }

    // The block's (row, channel) of accumulator i (the `pos` of rd_rows_finish).
    __device__ __forceinline__ void operator()(int i, int* r, int* c) const
    {
        int mi = i >> 3, ni = (i >> 2) & 1;
        rd_mma_acc_pos(lane, i & 3, r, c);
        *r += wm + 16 * mi;
        *c += wn + 8 * ni;
    }
};

template <int BM, int BN>
__device__ __forceinline__ void rd_conv_rows_tc_block(RD_CONV_ROWS_PARAMS_W(u16))
{
    // Taps, row-major, declared as u32 words so that the fragments' 4-byte reads are aligned.
    // The weights' rows k by k, as they come from global memory, padded by 8 channels so that
    // neighbouring k fall 4 banks apart: the stores of a row's channels and the fragments'
    // loads of a column's k are free of bank conflicts.
    constexpr int LDB = BN + 8;
    __shared__ u32 sa_words[BM * RD_TC_LD / 2];
    __shared__ u32 sb_words[RD_FR_BK * LDB / 2];
    u16(*sa)[RD_TC_LD] = reinterpret_cast<u16(*)[RD_TC_LD]>(sa_words);
    u16(*sb)[LDB] = reinterpret_cast<u16(*)[LDB]>(sb_words);
    __shared__ RdRowsShared<BM> s;
    RdRowsRegs<BM, BN, u16> regs;
    int k_lo, k_hi;
    if (!rd_rows_begin(s, regs, &k_lo, &k_hi, RD_CONV_ROWS_ARGS)) return;
    RdTcWarps<BM, BN> w;
    float acc[RdTcWarps<BM, BN>::NV];
#pragma unroll
    for (int i = 0; i < RdTcWarps<BM, BN>::NV; ++i) acc[i] = 0.0f;
    rd_rows_k_loop<BM, BN>(
        s, regs, k_lo, k_hi, RD_ROWS_LOAD_ARGS,
        [&](int r, int kk, float v) { sa[r][kk] = rd_f16_bits(v); },
        [&](int jj, int kk, u16 wv) { sb[kk][jj] = wv; },
        [&]() { w.template multiply<false>(acc, &sa[0][0], RD_TC_LD, &sb[0][0], LDB); });
    rd_rows_finish<BM, BN>(s, acc, w, n, bias, out, out_pitch, act, p0, p1, splits, ws, counters);
}

// The block shapes of rd_conv_rows and rd_conv_rows_n32 (32 x 64, 64 x 32) and of their _t44
// variants (64 x 64, 128 x 32).
extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_tc(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_tc_block<32, 64>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_tc_n32(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_tc_block<64, 32>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 3) rd_conv_rows_tc_t44(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_tc_block<64, 64>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 3) rd_conv_rows_tc_n32_t44(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_tc_block<128, 32>(RD_CONV_ROWS_ARGS);
}

// The pipelined tensor-core convolution (rd_conv_rows_pipe*): rd_conv_rows_tc's rows, blocks,
// warps, split K and outputs, with its operands copied from global to shared memory by cp.async
// (compute capability 8.0), STAGES K steps in flight instead of one step in registers. The taps
// stay f32 in shared memory and are rounded to f16 as the fragments are built.
// The host launches it only where every chunk of four copies as one vector (geometry::pipeable):
// cig, in_pitch, the input's channel offset and n multiples of 4, so that four consecutive
// columns of a K step are four channels of one tap, and four weights four output channels.

// The taps' f32 row pitch in shared memory: 8 floats of padding put the 8-byte fragment loads
// of a half warp (rows g = 0..3, columns 2q, q = 0..3) on 32 different banks; 4 floats (the
// 128 x 32 block, which 48 KB holds no more) on two ways at most.
#define RD_PIPE_LDA (RD_FR_BK + 8)
#define RD_PIPE_LDA_SMALL (RD_FR_BK + 4)

// Copies BYTES (16 or 8) from global `src` to shared `dst`, or zeros when !valid (then `src` is
// not read). Asynchronous on the device, waited for by rd_cp_wait; done at once on the host.
// Through L1 (.ca): a 3 x 3 convolution reads each input pixel for several rows' taps.
template <int BYTES>
__device__ __forceinline__ void rd_cp_async(void* dst, const void* src, bool valid)
{
#ifdef RD_HOST_EMU
    if (valid) memcpy(dst, src, BYTES);
    else memset(dst, 0, BYTES);
#elif __CUDA_ARCH__ >= 800
    u32 d = rd_smem_addr(dst);
    if (BYTES == 16)
        asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;"
                     :: "r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;"
                     :: "r"(d), "l"(src), "r"(valid ? 8 : 0) : "memory");
#else
    __trap();
#endif
}

// Closes this thread's group of copies issued since the last commit.
__device__ __forceinline__ void rd_cp_commit()
{
#if !defined(RD_HOST_EMU) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still copying.
template <int N>
__device__ __forceinline__ void rd_cp_wait()
{
#if !defined(RD_HOST_EMU) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
#endif
}

// A pipelined block's shared memory: STAGES K steps of taps (f32, rows of LDA) and weights (W:
// f16, rows padded by 8 as in rd_conv_rows_tc, or f32, padded by 4), 16-byte aligned for the
// copies.
template <int BM, int BN, int STAGES, int LDA, typename W>
struct alignas(16) RdPipeShared {
    static constexpr int LDB = BN + (sizeof(W) == 2 ? 8 : 4);
    float a[STAGES][BM][LDA];
    W b[STAGES][RD_FR_BK][LDB];
};

// Where this thread's tap chunks of the next K step to fetch read. Every chunk of a thread has
// the same columns (RD_FR_THREADS is a multiple of RD_FR_BK / 4), so one column k, its channel
// and its tap's offsets (ky dh, kx dw) serve them all; they advance a K step at a time, with no
// division after the first.
struct RdPipeTap {
    int k, ci, dy, dx;

    __device__ __forceinline__ RdPipeTap(int k0, int kw, int dh, int dw, int cig)
    {
        static_assert(RD_FR_THREADS % (RD_FR_BK / 4) == 0, "the same columns in every chunk");
        k = k0 + 4 * ((int)threadIdx.x % (RD_FR_BK / 4));
        int tap = k / cig, ky = tap / kw;
        ci = k - tap * cig;
        dy = ky * dh;
        dx = (tap - ky * kw) * dw;
    }

    __device__ __forceinline__ void advance(int kw, int dh, int dw, int cig)
    {
        k += RD_FR_BK;
        ci += RD_FR_BK;
        while (ci >= cig) {
            ci -= cig;
            dx += dw;
            if (dx == kw * dw) {
                dx = 0;
                dy += dh;
            }
        }
    }
};

// Starts the copies of the taps of the K step `tap` is at into `a`, and moves `tap` to the next
// step: chunk c = threadIdx.x + i * RD_FR_THREADS is row c / (RD_FR_BK / 4), columns
// 4 (c % (RD_FR_BK / 4)) + 0..3 (zeros outside the map, past the share of K, or for a row that is
// no pixel).
template <int BM, int LDA>
__device__ __forceinline__ void rd_pipe_fetch_a(
    const RdRowsShared<BM>& s, float (*a)[LDA], RdPipeTap& tap, int k_hi, int kw, int dh, int dw,
    int cig, const float* __restrict__ in, int in_pitch, int in_h, int in_w)
{
    int kk = 4 * ((int)threadIdx.x % (RD_FR_BK / 4));
#pragma unroll
    for (int i = 0; i < RD_FR_BK * BM / (4 * RD_FR_THREADS); ++i) {
        int r = ((int)threadIdx.x + i * RD_FR_THREADS) / (RD_FR_BK / 4);
        int iy = s.iy[r] + tap.dy, ix = s.ix[r] + tap.dx;
        bool ok = tap.k < k_hi && s.out[r] >= 0 && iy >= 0 && ix >= 0 && iy < in_h && ix < in_w;
        const float* src = ok ? in + ((long long)iy * in_w + ix) * in_pitch + tap.ci : in;
        rd_cp_async<16>(&a[r][kk], src, ok);
    }
    tap.advance(kw, dh, dw, cig);
}

// Starts the copies of the weights of the K step at k0 into `b`: chunk c is row c / (BN / 4),
// channels n_base + 4 (c % (BN / 4)) + 0..3 (zeros past the share of K or past n).
template <int BN, int LDB, typename W>
__device__ __forceinline__ void rd_pipe_fetch_w(
    W (*b)[LDB], int k0, int k_hi, const W* __restrict__ wt, int n, int n_base)
{
#pragma unroll
    for (int i = 0; i < RD_FR_BK * BN / (4 * RD_FR_THREADS); ++i) {
        int c = (int)threadIdx.x + i * RD_FR_THREADS;
        int kk = c / (BN / 4), j = 4 * (c % (BN / 4));
        int k = k0 + kk, col = n_base + j;
        bool ok = k < k_hi && col < n;
        rd_cp_async<4 * sizeof(W)>(&b[kk][j], ok ? wt + (long long)k * n + col : wt, ok);
    }
}

// The K loop keeps STAGES - 1 steps' copies in flight: step i waits for its own group, then (once
// every thread is past step i - 1, whose buffers the new copies reuse) starts step
// i + STAGES - 1's, then multiplies (Mma::step: RdTcWarps for f16 weights, RdSimt for f32). The
// weights of the first STAGES - 1 steps (which no kernel writes) are requested before the rows
// are found and before the PDL wait, in the first group.
template <int BM, int BN, int STAGES, int LDA, typename W, typename Mma>
__device__ __forceinline__ void rd_conv_rows_pipe_block(RD_CONV_ROWS_PARAMS_W(W))
{
    static_assert(STAGES >= 2, "a step in flight while one is multiplied");
    using Ring = RdPipeShared<BM, BN, STAGES, LDA, W>;
    constexpr int LDB = Ring::LDB;
    __shared__ Ring ring;
    __shared__ RdRowsShared<BM> s;
    int k_lo, k_hi;
    rd_rows_k_share(kh * kw * cig, splits, &k_lo, &k_hi);
    int n_base = (int)blockIdx.y * BN;
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st)
        rd_pipe_fetch_w<BN, LDB>(ring.b[st], k_lo + st * RD_FR_BK, k_hi, wt, n, n_base);
    bool rows = rd_rows_prepare(s, k_lo, k_hi, RD_ROWS_PREPARE_ARGS);
    RD_PDL_WAIT(); // in a block with no rows too, as in rd_rows_begin
    if (!rows) {
        rd_cp_commit();
        rd_cp_wait<0>(); // no copy outlives the block
        return;
    }
    RdPipeTap tap(k_lo, kw, dh, dw, cig);
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        rd_pipe_fetch_a<BM, LDA>(s, ring.a[st], tap, k_hi, kw, dh, dw, cig, in, in_pitch, in_h, in_w);
        rd_cp_commit();
    }
    Mma w;
    float acc[Mma::NV];
#pragma unroll
    for (int i = 0; i < Mma::NV; ++i) acc[i] = 0.0f;
    int steps = rd_imax(0, (k_hi - k_lo + RD_FR_BK - 1) / RD_FR_BK);
    for (int i = 0; i < steps; ++i) {
        rd_cp_wait<STAGES - 2>();
        __syncthreads();
        int next = i + STAGES - 1;
        if (next < steps) {
            int k0 = k_lo + next * RD_FR_BK, st = next % STAGES;
            rd_pipe_fetch_w<BN, LDB>(ring.b[st], k0, k_hi, wt, n, n_base);
            rd_pipe_fetch_a<BM, LDA>(s, ring.a[st], tap, k_hi, kw, dh, dw, cig, in, in_pitch, in_h, in_w);
        }
        rd_cp_commit(); // empty past the last step: the group count stays one per step
        int cur = i % STAGES;
        w.step(acc, &ring.a[cur][0][0], LDA, &ring.b[cur][0][0], LDB);
    }
    rd_cp_wait<0>();
    rd_rows_finish<BM, BN>(s, acc, w, n, bias, out, out_pitch, act, p0, p1, splits, ws, counters);
}

// The tensor-core blocks: the shapes of rd_conv_rows_tc (32 x 64, four steps in flight) and
// rd_conv_rows_tc_n32 (64 x 32, three: 48 KB of static shared memory holds no more), and of their
// _t44 variants (64 x 64 with three steps, 128 x 32 with two). Four blocks fit an SM with at most
// 64 registers a thread (unbounded: 80, 58, 71 and 74; none spills at 64, scripts/ptxas_info.py).
extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_pipe(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_pipe_block<32, 64, 4, RD_PIPE_LDA, u16, RdTcWarps<32, 64>>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void rd_conv_rows_pipe_n32(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_pipe_block<64, 32, 3, RD_PIPE_LDA, u16, RdTcWarps<64, 32>>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_pipe_t44(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_pipe_block<64, 64, 3, RD_PIPE_LDA, u16, RdTcWarps<64, 64>>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_pipe_n32_t44(RD_CONV_ROWS_PARAMS_W(u16))
{
    rd_conv_rows_pipe_block<128, 32, 2, RD_PIPE_LDA_SMALL, u16, RdTcWarps<128, 32>>(RD_CONV_ROWS_ARGS);
}

// The f32 blocks (precision f32, or f16 without the tensor cores): rd_conv_rows' shapes and
// 2 x 4 outputs a thread, f32 weights, three steps in flight; four blocks an SM (the 32 x 64 one
// bounded to 64 registers from 66, without spills). The taps' rows are read four at a time at
// one column, 36 floats apart: four different banks.
extern "C" __global__ void __launch_bounds__(RD_FR_THREADS, 4) rd_conv_rows_pipe_f32(RD_CONV_ROWS_PARAMS)
{
    rd_conv_rows_pipe_block<32, 64, 3, RD_PIPE_LDA_SMALL, float, RdSimt<32, 64, 2, 4>>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void rd_conv_rows_pipe_f32_n32(RD_CONV_ROWS_PARAMS)
{
    rd_conv_rows_pipe_block<64, 32, 3, RD_PIPE_LDA_SMALL, float, RdSimt<64, 32, 2, 4>>(RD_CONV_ROWS_ARGS);
}
