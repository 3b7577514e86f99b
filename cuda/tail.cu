// The host tail's Generic steps on the device (the detection head's ops on NCHW tensors, see
// src/backend/generic and src/backend/cuda/tail.rs): flat arrays, one thread per output element,
// grid-stride loops. Each mirrors the host kernel of the same step.

// Copy runs: output element e comes from table[run_slot[r]][run_src[r] + e - run_dst[r]], r the
// last run with run_dst[r] <= e (the runs cover the output in order, without gaps).
extern "C" __global__ void rd_tail_copy(
    const unsigned long long* __restrict__ table, const u32* __restrict__ run_dst,
    const u32* __restrict__ run_src, const u32* __restrict__ run_slot, int n_runs,
    float* __restrict__ out, int n)
{
    RD_PDL_WAIT();
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        int lo = 0, hi = n_runs - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) >> 1;
            if ((int)run_dst[mid] <= e) lo = mid; else hi = mid - 1;
        }
        const float* src = (const float*)table[run_slot[lo]];
        out[e] = src[run_src[lo] + (u32)(e - (int)run_dst[lo])];
    }
}

// out = act(x).
extern "C" __global__ void rd_tail_act(
    const float* __restrict__ x, float* __restrict__ out, int n, int act, float p0, float p1)
{
    RD_PDL_WAIT();
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x)
        out[e] = rd_act(x[e], act, p0, p1);
}

// out[e] = a[a_map[e]] op b[b_map[e]]; a map flag of 0 reads the input at e (same shape).
extern "C" __global__ void rd_tail_binary(
    const float* __restrict__ a, const u32* __restrict__ a_map, int a_mapped,
    const float* __restrict__ b, const u32* __restrict__ b_map, int b_mapped,
    float* __restrict__ out, int n, int op)
{
    RD_PDL_WAIT();
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        float x = a[a_mapped ? a_map[e] : (u32)e];
        float y = b[b_mapped ? b_map[e] : (u32)e];
        out[e] = rd_binop(op, x, y);
    }
}

// Softmax over the middle extent of (outer, n, inner); one thread per (outer, inner) column.
extern "C" __global__ void rd_tail_softmax(
    const float* __restrict__ x, float* __restrict__ out, int outer, int n, int inner)
{
    RD_PDL_WAIT();
    int cols = outer * inner;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < cols; t += gridDim.x * blockDim.x) {
        int o = t / inner, i = t - o * inner;
        long long base = (long long)o * n * inner + i;
        float m = -3.402823466e38f;
        for (int k = 0; k < n; ++k) m = fmaxf(m, x[base + (long long)k * inner]);
        float sum = 0.0f;
        for (int k = 0; k < n; ++k) {
            float v = expf(x[base + (long long)k * inner] - m);
            out[base + (long long)k * inner] = v;
            sum += v;
        }
        for (int k = 0; k < n; ++k) out[base + (long long)k * inner] /= sum;
    }
}

// Direct 2-D convolution of x [1, c, h, w] with weights [co, c/group, kh, kw] (plus bias where
// has_bias) into out [1, co, oh, ow]; each output sums its bias, then its taps in (ic, ky, kx)
// order, as the host's ConvGeom does. g: c, h, w, co, cig, kh, kw, group, sh, sw, dh, dw, ph, pw,
// oh, ow.
extern "C" __global__ void rd_tail_conv(
    const float* __restrict__ x, const float* __restrict__ wt, const float* __restrict__ bias,
    int has_bias, float* __restrict__ out,
    int c, int h, int w, int co, int cig, int kh, int kw, int group,
    int sh, int sw, int dh, int dw, int ph, int pw, int oh, int ow)
{
    RD_PDL_WAIT();
    int n = co * oh * ow;
    int cog = co / group;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        int oc = e / (oh * ow);
        int p = e - oc * oh * ow;
        int oy = p / ow, ox = p - oy * ow;
        int grp = oc / cog;
        float acc = has_bias ? bias[oc] : 0.0f;
        for (int ic = 0; ic < cig; ++ic) {
            int ci = grp * cig + ic;
            for (int ky = 0; ky < kh; ++ky) {
                int iy = oy * sh - ph + ky * dh;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; ++kx) {
                    int ix = ox * sw - pw + kx * dw;
                    if (ix < 0 || ix >= w) continue;
                    acc += wt[((oc * cig + ic) * kh + ky) * kw + kx] * x[((long long)ci * h + iy) * w + ix];
                }
            }
        }
        out[e] = acc;
    }
}
