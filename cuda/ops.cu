// Tile-wise kernels for the layers other than convolution: pooling, resize, affine, unary,
// binary and channel gather. Mirrors src/backend/cpu/ops.rs. One block column per active tile;
// threads over the tile's (pixel, channel) elements, channel fastest (see common.cuh).

#define RD_POOL_MAX 0
#define RD_POOL_AVG_EXCL_PAD 1
#define RD_POOL_AVG_INCL_PAD 2

extern "C" __global__ void rd_pool(
    const float* __restrict__ in, int in_pitch, int in_h, int in_w,
    float* __restrict__ out, int out_pitch, int out_h, int out_w, int c,
    int kind, int kh, int kw, int sh, int sw, int pad_t, int pad_l,
    const u32* __restrict__ tiles, int ts, int cols)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, out_w, out_h);
    int total = r.tw * r.th * c;
    RD_TILE_LOOP(e, total) {
        int p = e / c;
        int ch = e - p * c;
        int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
        float acc = kind == RD_POOL_MAX ? rd_neg_inf() : 0.0f;
        int count = 0;
        for (int ky = 0; ky < kh; ++ky) {
            int iy = oy * sh + ky - pad_t;
            for (int kx = 0; kx < kw; ++kx) {
                int ix = ox * sw + kx - pad_l;
                if (iy < 0 || ix < 0 || iy >= in_h || ix >= in_w) continue;
                ++count;
                float v = in[((long long)iy * in_w + ix) * in_pitch + ch];
                acc = kind == RD_POOL_MAX ? fmaxf(acc, v) : acc + v;
            }
        }
        if (kind != RD_POOL_MAX) {
            int d = kind == RD_POOL_AVG_INCL_PAD ? kh * kw : rd_imax(count, 1);
            acc *= 1.0f / (float)d;
        }
        out[((long long)oy * out_w + ox) * out_pitch + ch] = acc;
    }
}

// Per-axis taps: output index o reads in[i0[o]] * (1 - frac[o]) + in[i1[o]] * frac[o].
extern "C" __global__ void rd_resize(
    const float* __restrict__ in, int in_pitch, int in_w,
    float* __restrict__ out, int out_pitch, int out_h, int out_w, int c,
    const u32* __restrict__ y_i0, const u32* __restrict__ y_i1, const float* __restrict__ y_frac,
    const u32* __restrict__ x_i0, const u32* __restrict__ x_i1, const float* __restrict__ x_frac,
    const u32* __restrict__ tiles, int ts, int cols)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, out_w, out_h);
    int total = r.tw * r.th * c;
    RD_TILE_LOOP(e, total) {
        int p = e / c;
        int ch = e - p * c;
        int oy = r.y0 + p / r.tw, ox = r.x0 + p % r.tw;
        long long y0 = y_i0[oy], y1 = y_i1[oy], x0 = x_i0[ox], x1 = x_i1[ox];
        float fy = y_frac[oy], fx = x_frac[ox];
        float a = in[(y0 * in_w + x0) * in_pitch + ch];
        float v;
        if (fy == 0.0f && fx == 0.0f) {
            v = a;
        } else {
            float b = in[(y0 * in_w + x1) * in_pitch + ch];
            float cc = in[(y1 * in_w + x0) * in_pitch + ch];
            float d = in[(y1 * in_w + x1) * in_pitch + ch];
            v = a * ((1.0f - fy) * (1.0f - fx)) + b * ((1.0f - fy) * fx) + cc * (fy * (1.0f - fx)) + d * (fy * fx);
        }
        out[((long long)oy * out_w + ox) * out_pitch + ch] = v;
    }
}

// out = act(in * scale[c] + shift[c]). Input and output views share the map size.
extern "C" __global__ void rd_affine(
    const float* __restrict__ in, int in_pitch,
    float* __restrict__ out, int out_pitch, int h, int w, int c,
    const float* __restrict__ scale, const float* __restrict__ shift,
    int act, float p0, float p1,
    const u32* __restrict__ tiles, int ts, int cols)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, w, h);
    int total = r.tw * r.th * c;
    RD_TILE_LOOP(e, total) {
        int p = e / c;
        int ch = e - p * c;
        long long pix = (long long)(r.y0 + p / r.tw) * w + r.x0 + p % r.tw;
        out[pix * out_pitch + ch] = rd_act(in[pix * in_pitch + ch] * scale[ch] + shift[ch], act, p0, p1);
    }
}

extern "C" __global__ void rd_unary(
    const float* __restrict__ in, int in_pitch,
    float* __restrict__ out, int out_pitch, int h, int w, int c,
    int act, float p0, float p1,
    const u32* __restrict__ tiles, int ts, int cols)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, w, h);
    int total = r.tw * r.th * c;
    RD_TILE_LOOP(e, total) {
        int p = e / c;
        int ch = e - p * c;
        long long pix = (long long)(r.y0 + p / r.tw) * w + r.x0 + p % r.tw;
        out[pix * out_pitch + ch] = rd_act(in[pix * in_pitch + ch], act, p0, p1);
    }
}

// out = act(in op rhs). rhs is a map view (rhs_pitch > 0: pixel-wise, same map size) or a
// per-channel vector (rhs_pitch == 0). When rhs_c == 1 its single channel is broadcast.
extern "C" __global__ void rd_binary(
    const float* __restrict__ in, int in_pitch,
    const float* __restrict__ rhs, int rhs_pitch, int rhs_c,
    float* __restrict__ out, int out_pitch, int h, int w, int c,
    int op, int act, float p0, float p1,
    const u32* __restrict__ tiles, int ts, int cols)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, w, h);
    int total = r.tw * r.th * c;
    RD_TILE_LOOP(e, total) {
        int p = e / c;
        int ch = e - p * c;
        long long pix = (long long)(r.y0 + p / r.tw) * w + r.x0 + p % r.tw;
        int rc = rhs_c == 1 ? 0 : ch;
        float b = rhs_pitch > 0 ? rhs[pix * rhs_pitch + rc] : rhs[rc];
        out[pix * out_pitch + ch] = rd_act(rd_binop(op, in[pix * in_pitch + ch], b), act, p0, p1);
    }
}

// out channel i = in channel perm[i] (perm has c_out entries).
extern "C" __global__ void rd_gather(
    const float* __restrict__ in, int in_pitch,
    float* __restrict__ out, int out_pitch, int h, int w, int c_out,
    const u32* __restrict__ perm,
    const u32* __restrict__ tiles, int ts, int cols)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, w, h);
    int total = r.tw * r.th * c_out;
    RD_TILE_LOOP(e, total) {
        int p = e / c_out;
        int ch = e - p * c_out;
        long long pix = (long long)(r.y0 + p / r.tw) * w + r.x0 + p % r.tw;
        out[pix * out_pitch + ch] = in[pix * in_pitch + perm[ch]];
    }
}
