// Dense whole-map kernels for the plan's non-layer steps: Export (NHWC view -> NCHW tensor),
// GlobalPool (mean over the map -> [C]). Mirrors the Export / GlobalPool steps of
// src/backend/cpu/mod.rs.

// out[ch * h * w + p] = view(p, ch); one thread per output element (writes coalesced).
extern "C" __global__ void rd_export_nchw(
    const float* __restrict__ in, int in_pitch, int h, int w, int c, float* __restrict__ out)
{
    RD_PDL_WAIT();
    long long hw = (long long)h * w;
    long long total = hw * c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long ch = e / hw;
        long long p = e - ch * hw;
        out[e] = in[p * in_pitch + ch];
    }
}

#define RD_GAP_CH 32
#define RD_GAP_ROWS 8

// out[ch] = mean over pixels of view(., ch). Block (32, 8): threadIdx.x = channel within a group
// of 32, threadIdx.y strides over pixels; grid.x = ceil(c / 32).
extern "C" __global__ void rd_global_avg_pool(
    const float* __restrict__ in, int in_pitch, int h, int w, int c, float* __restrict__ out)
{
    RD_PDL_WAIT();
    __shared__ float s[RD_GAP_ROWS][RD_GAP_CH];
    int ch = blockIdx.x * RD_GAP_CH + threadIdx.x;
    int hw = h * w;
    float acc = 0.0f;
    if (ch < c)
        for (int p = threadIdx.y; p < hw; p += RD_GAP_ROWS) acc += in[(long long)p * in_pitch + ch];
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float t = 0.0f;
        for (int i = 0; i < RD_GAP_ROWS; ++i) t += s[i][threadIdx.x];
        out[ch] = t * (1.0f / (float)hw);
    }
}

// out[e] = in[index[e]]: a Rearrange step (a folded chain of reshapes, transposes and slices) on
// the result of an Export or another Rearrange; one thread per output element.
extern "C" __global__ void rd_rearrange(
    const float* __restrict__ in, const unsigned* __restrict__ index, int n, float* __restrict__ out)
{
    RD_PDL_WAIT();
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x)
        out[e] = in[index[e]];
}
