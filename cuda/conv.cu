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
// arithmetic; groups by the host (one launch per group, pointers advanced as for rd_im2col).
// K = kh * kw * cig must be at most RD_FR_KMAX (the tap table lives in shared memory).
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
#define RD_FR_KMAX 1024

#define RD_CONV_ROWS_PARAMS                                                                      \
    const float* __restrict__ in, int in_pitch, int in_h, int in_w,                              \
    const float* __restrict__ wt, int n, /* [K x n] row-major (this group) */                    \
    const float* __restrict__ bias,      /* [n] (this group) */                                  \
    float* __restrict__ out, int out_pitch, int out_h, int out_w,                                \
    const u32* __restrict__ tiles, const u32* __restrict__ row_off, int n_tiles, int m,          \
    int ts, int cols,                                                                            \
    int kh, int kw, int sh, int sw, int dh, int dw, int pad_t, int pad_l,                        \
    int cig, int act, float p0, float p1,                                                        \
    int splits, float* __restrict__ ws, u32* __restrict__ counters
#define RD_CONV_ROWS_ARGS                                                                        \
    in, in_pitch, in_h, in_w, wt, n, bias, out, out_pitch, out_h, out_w, tiles, row_off,         \
    n_tiles, m, ts, cols, kh, kw, sh, sw, dh, dw, pad_t, pad_l, cig, act, p0, p1, splits, ws,    \
    counters

// One block of BM rows x BN channels: BN / TN threads across, BM / TM down, TM x TN outputs each.
template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void rd_conv_rows_block(RD_CONV_ROWS_PARAMS)
{
    __shared__ float sa[RD_FR_BK][BM + 1];
    __shared__ float sw_[RD_FR_BK][BN];
    __shared__ int s_iy[BM], s_ix[BM], s_out[BM];
    __shared__ int s_dy[RD_FR_KMAX], s_dx[RD_FR_KMAX], s_ci[RD_FR_KMAX];
    __shared__ int s_any, s_last;
    int t = (int)threadIdx.x;
    int k_len = kh * kw * cig;
    int n_base = (int)blockIdx.y * BN;
    if (t == 0) s_any = 0;
    __syncthreads();
    // Each row's output pixel and the input origin of its taps.
    if (t < BM) {
        int row = (int)blockIdx.x * BM + t;
        int o = -1, iy = 0, ix = 0;
        if (row < m && n_tiles > 0) {
            // The last list entry whose first row is <= row (row_off is non-decreasing).
            int lo = 0, hi = n_tiles - 1;
            while (lo < hi) {
                int mid = (lo + hi + 1) >> 1;
                if ((int)row_off[mid] <= row) lo = mid; else hi = mid - 1;
            }
            u32 tile = tiles[lo];
            if (tile != RD_NO_TILE) {
                RdRect r = rd_tile_rect(tile, cols, ts, out_w, out_h);
                int p = row - (int)row_off[lo];
                if (p < r.tw * r.th) {
                    int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
                    o = oy * out_w + ox;
                    iy = oy * sh - pad_t;
                    ix = ox * sw - pad_l;
                    s_any = 1;
                }
            }
        }
        s_out[t] = o;
        s_iy[t] = iy;
        s_ix[t] = ix;
    }
    // The tap table: column k of the implicit matrix reads input offset (dy, dx), channel ci.
    for (int k = t; k < k_len; k += RD_FR_THREADS) {
        int tap = k / cig;
        int ky = tap / kw;
        s_dy[k] = ky * dh;
        s_dx[k] = (tap - ky * kw) * dw;
        s_ci[k] = k - tap * cig;
    }
    __syncthreads();
    // The whole block leaves together when none of its rows is a pixel of this frame.
    if (!s_any) return;
    int tx = t % (BN / TN), ty = t / (BN / TN);
    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    // This block's share of K: whole RD_FR_BK steps.
    int k_share = (k_len + splits * RD_FR_BK - 1) / (splits * RD_FR_BK) * RD_FR_BK;
    int k_lo = (int)blockIdx.z * k_share;
    int k_hi = rd_imin(k_len, k_lo + k_share);
    for (int k0 = k_lo; k0 < k_hi; k0 += RD_FR_BK) {
        // Input taps [BK x BM]: k fastest, so neighbouring threads read neighbouring channels.
        for (int e = t; e < RD_FR_BK * BM; e += RD_FR_THREADS) {
            int kk = e % RD_FR_BK, r = e / RD_FR_BK;
            int k = k0 + kk;
            float v = 0.0f;
            if (k < k_hi && s_out[r] >= 0) {
                int iy = s_iy[r] + s_dy[k], ix = s_ix[r] + s_dx[k];
                if (iy >= 0 && ix >= 0 && iy < in_h && ix < in_w)
                    v = in[((long long)iy * in_w + ix) * in_pitch + s_ci[k]];
            }
            sa[kk][r] = v;
        }
        // Weights [BK x BN], output channel fastest.
        for (int e = t; e < RD_FR_BK * BN; e += RD_FR_THREADS) {
            int jj = e % BN, kk = e / BN;
            int k = k0 + kk, j = n_base + jj;
            sw_[kk][jj] = (k < k_hi && j < n) ? wt[(long long)k * n + j] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < RD_FR_BK; ++kk) {
            float a[TM], b[TN];
            for (int i = 0; i < TM; ++i) a[i] = sa[kk][ty * TM + i];
            for (int j = 0; j < TN; ++j) b[j] = sw_[kk][tx * TN + j];
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    if (splits > 1) {
        int block = (int)(blockIdx.y * gridDim.x + blockIdx.x);
        long long part = (long long)BM * BN;
        float* mine = ws + ((long long)block * splits + blockIdx.z) * part;
        for (int i = 0; i < TM; ++i)
            for (int j = 0; j < TN; ++j) mine[(ty * TM + i) * BN + tx * TN + j] = acc[i][j];
        __threadfence();
        __syncthreads();
        // The block's partial is complete: thread 0 publishes it (fence, then the count).
        if (t == 0) {
            __threadfence();
            s_last = atomicAdd(&counters[block], 1u) == (u32)(splits - 1);
        }
        __syncthreads();
        if (!s_last) return;
        __threadfence();
        // Every split's partial, read past the (non-coherent) L1 cache.
        const volatile float* all = ws + (long long)block * splits * part;
        for (int i = 0; i < TM; ++i)
            for (int j = 0; j < TN; ++j) {
                int e = (ty * TM + i) * BN + tx * TN + j;
                float sum = 0.0f;
                for (int z = 0; z < splits; ++z) sum += all[z * part + e];
                acc[i][j] = sum;
            }
        if (t == 0) counters[block] = 0;
    }
    for (int i = 0; i < TM; ++i) {
        int o = s_out[ty * TM + i];
        if (o < 0) continue;
        float* dst = out + (long long)o * out_pitch;
        for (int j = 0; j < TN; ++j) {
            int jj = n_base + tx * TN + j;
            if (jj < n) dst[jj] = rd_act(acc[i][j] + bias[jj], act, p0, p1);
        }
    }
}

extern "C" __global__ void rd_conv_rows(RD_CONV_ROWS_PARAMS)
{
    RD_PDL_WAIT();
    rd_conv_rows_block<32, 64, 2, 4>(RD_CONV_ROWS_ARGS);
}

// For layers of at most 32 output channels (per group): 64 rows x 32 channels per block, so no
// thread computes channels that do not exist.
extern "C" __global__ void rd_conv_rows_n32(RD_CONV_ROWS_PARAMS)
{
    RD_PDL_WAIT();
    rd_conv_rows_block<64, 32, 2, 4>(RD_CONV_ROWS_ARGS);
}

// 4 x 4 outputs per thread (64 x 64, and 128 x 32 for at most 32 channels): half the shared-memory
// loads per multiply-add of the 2 x 4 blocks, in larger blocks (REGIONDROP_CUDA_FUSED_TILE=4x4).
extern "C" __global__ void rd_conv_rows_t44(RD_CONV_ROWS_PARAMS)
{
    RD_PDL_WAIT();
    rd_conv_rows_block<64, 64, 4, 4>(RD_CONV_ROWS_ARGS);
}

extern "C" __global__ void rd_conv_rows_n32_t44(RD_CONV_ROWS_PARAMS)
{
    RD_PDL_WAIT();
    rd_conv_rows_block<128, 32, 4, 4>(RD_CONV_ROWS_ARGS);
}
