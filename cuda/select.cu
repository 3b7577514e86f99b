// Candidate anchors of a detection head, selected where the outputs are so that only their rows
// are downloaded. Mirrors `Gate::select` and `best_class` (src/detect/gate.rs): an anchor passes
// when its objectness (if any) and its best class score times the objectness both reach the
// threshold (fmaxf ignores NaN, as f32::max does).
//
// The levels' anchors are numbered one after the other (global ids). Per level the host writes
// RD_SELECT_INTS ints into `levels` (src/backend/cuda/select.rs builds them):
//   anchors, first id, row length, first score column, end of score columns, objectness column
//   (-1: none), then per part (RD_SELECT_PARTS, unused parts have 0 values): values, anchor
//   stride, value stride;
// and per part one address into `parts` (level-major). Row column f is part 0's value f, or part
// 1's value f - (part 0's values).

#define RD_SELECT_PARTS 2
#define RD_SELECT_INTS (6 + 3 * RD_SELECT_PARTS)

__device__ __forceinline__ float rd_row_value(
    const int* __restrict__ lv, const unsigned long long* __restrict__ parts, long long a, int f)
{
    int p = 0;
    while (p + 1 < RD_SELECT_PARTS && f >= lv[6 + 3 * p]) {
        f -= lv[6 + 3 * p];
        ++p;
    }
    const float* base = (const float*)parts[p];
    return base[a * lv[7 + 3 * p] + (long long)f * lv[8 + 3 * p]];
}

// One thread per anchor of all levels. `count` (zeroed before the launch) receives the number of
// candidates; candidate i's id goes to ids[i] and its row to rows[i * row_stride ..]. The buffers
// hold every anchor, so none is ever dropped.
extern "C" __global__ void rd_select(
    const int* __restrict__ levels, int n_levels, const unsigned long long* __restrict__ parts,
    int total, float threshold, u32* __restrict__ count, u32* __restrict__ ids,
    float* __restrict__ rows, int row_stride)
{
    RD_PDL_WAIT();
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
        int l = 0;
        while (l + 1 < n_levels && e >= levels[(l + 1) * RD_SELECT_INTS + 1]) ++l;
        const int* lv = levels + l * RD_SELECT_INTS;
        const unsigned long long* lp = parts + l * RD_SELECT_PARTS;
        long long a = e - lv[1];
        float obj = lv[5] >= 0 ? rd_row_value(lv, lp, a, lv[5]) : 1.0f;
        if (obj < threshold) continue;
        float best = rd_neg_inf();
        for (int f = lv[3]; f < lv[4]; ++f) best = fmaxf(best, rd_row_value(lv, lp, a, f) * obj);
        if (best < threshold) continue;
        u32 i = atomicAdd(count, 1u);
        ids[i] = (u32)e;
        float* row = rows + (long long)i * row_stride;
        for (int f = 0; f < lv[2]; ++f) row[f] = rd_row_value(lv, lp, a, f);
    }
}
