// Per-frame change detection on the device: per-tile score against the reference image, mask,
// dilation, compaction into the active-tile list, and the reference update of fired tiles.
// Mirrors ChangeDetector::detect (src/mask/detector.rs). Images are packed RGB u8, w*h*3.
//
// Sequence per frame: rd_tile_diff -> (rd_mask_dilate if dilation > 0) -> rd_mask_compact ->
// rd_ref_update (launched over the compacted list; its length is read back or bounded by the
// number of tiles, blocks past `*count` return at once).

#define RD_DIFF_THREADS 256

// One block per tile of the grid (gridDim.x = cols * rows), RD_DIFF_THREADS threads.
// metric 0 = max abs difference, 1 = mean abs difference over the tile's bytes.
// Writes score[t] and mask[t] = score > threshold (or 1 for every tile when `force` != 0).
extern "C" __global__ void rd_tile_diff(
    const u8* __restrict__ img, const u8* __restrict__ ref,
    int w, int h, int tile, int cols,
    int metric, float threshold, int force,
    float* __restrict__ score, u8* __restrict__ mask)
{
    RD_PDL_WAIT();
    __shared__ unsigned int s_max[RD_DIFF_THREADS];
    __shared__ unsigned int s_sum[RD_DIFF_THREADS];
    u32 t = blockIdx.x;
    RdRect r = rd_tile_rect(t, cols, tile, w, h);
    int row_bytes = r.tw * 3;
    int total = row_bytes * r.th;
    unsigned int mx = 0, sum = 0;
    for (int e = threadIdx.x; e < total; e += blockDim.x) {
        int y = r.y0 + e / row_bytes;
        int b = e % row_bytes;
        int i = (y * w + r.x0) * 3 + b;
        int d = (int)img[i] - (int)ref[i];
        unsigned int ad = (unsigned int)(d < 0 ? -d : d);
        mx = ad > mx ? ad : mx;
        sum += ad;
    }
    s_max[threadIdx.x] = mx;
    s_sum[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            unsigned int o = s_max[threadIdx.x + s];
            if (o > s_max[threadIdx.x]) s_max[threadIdx.x] = o;
            s_sum[threadIdx.x] += s_sum[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float sc = metric == 0 ? (float)s_max[0] : (float)s_sum[0] / (float)rd_imax(total, 1);
        score[t] = sc;
        mask[t] = (force != 0 || sc > threshold) ? 1 : 0;
    }
}

// Grows the mask by `radius` tiles (Chebyshev distance): one thread per tile, out != in.
extern "C" __global__ void rd_mask_dilate(
    const u8* __restrict__ in, u8* __restrict__ out, int cols, int rows, int radius)
{
    RD_PDL_WAIT();
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= cols * rows) return;
    int tx = t % cols, ty = t / cols;
    u8 v = 0;
    for (int y = rd_imax(ty - radius, 0); y <= rd_imin(ty + radius, rows - 1) && !v; ++y)
        for (int x = rd_imax(tx - radius, 0); x <= rd_imin(tx + radius, cols - 1); ++x)
            if (in[y * cols + x]) { v = 1; break; }
    out[t] = v;
}

#define RD_COMPACT_THREADS 1024

// Writes the indices of set tiles, ascending, to `list` and their number to `*count`.
// Launch with exactly one block of RD_COMPACT_THREADS threads.
extern "C" __global__ void rd_mask_compact(
    const u8* __restrict__ mask, int n, u32* __restrict__ list, u32* __restrict__ count)
{
    RD_PDL_WAIT();
    __shared__ u32 s[RD_COMPACT_THREADS];
    u32 base = 0;
    for (int start = 0; start < n; start += RD_COMPACT_THREADS) {
        int i = start + threadIdx.x;
        u32 flag = (i < n && mask[i]) ? 1u : 0u;
        s[threadIdx.x] = flag;
        __syncthreads();
        // Hillis-Steele inclusive scan.
        for (int off = 1; off < RD_COMPACT_THREADS; off <<= 1) {
            u32 v = threadIdx.x >= (unsigned)off ? s[threadIdx.x - off] : 0u;
            __syncthreads();
            s[threadIdx.x] += v;
            __syncthreads();
        }
        if (flag) list[base + s[threadIdx.x] - 1] = (u32)i;
        u32 chunk = s[RD_COMPACT_THREADS - 1];
        __syncthreads();
        base += chunk;
    }
    if (threadIdx.x == 0) *count = base;
}

// Copies the fired tiles of `img` into `ref`. gridDim.x = an upper bound of the list length;
// blocks at or past `*count` (device-side length from rd_mask_compact) do nothing. Pass a null
// `count` to use gridDim.x as the length.
extern "C" __global__ void rd_ref_update(
    const u8* __restrict__ img, u8* __restrict__ ref, int w, int h, int tile, int cols,
    const u32* __restrict__ tiles, const u32* __restrict__ count)
{
    RD_PDL_WAIT();
    if (count != 0 && blockIdx.x >= *count) return;
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, tile, w, h);
    int row_bytes = r.tw * 3;
    int total = row_bytes * r.th;
    RD_TILE_LOOP(e, total) {
        int y = r.y0 + e / row_bytes;
        int i = (y * w + r.x0) * 3 + e % row_bytes;
        ref[i] = img[i];
    }
}
