// Input normalisation of the changed tiles: packed RGB u8 (network input size) -> the network's
// f32 NHWC input buffer, (v - mean[c]) / std[c] per output channel, optionally fed as B, G, R.
// Mirrors CpuBackend::write_input. One block column per active tile (see common.cuh).

extern "C" __global__ void rd_input_norm(
    const u8* __restrict__ rgb, // packed RGB, w*h*3
    float* __restrict__ out,    // input buffer view (pitch = buffer channels, >= 3)
    int out_pitch,
    int w, int h,
    const u32* __restrict__ tiles, int ts, int cols,
    float mean0, float mean1, float mean2,
    float inv_std0, float inv_std1, float inv_std2,
    int bgr)
{
    RD_PDL_WAIT();
    RdRect r = rd_tile_rect(tiles[blockIdx.x], cols, ts, w, h);
    int total = r.tw * r.th * 3;
    RD_TILE_LOOP(e, total) {
        int ch = e % 3;
        int p = e / 3;
        int y = r.y0 + p / r.tw, x = r.x0 + p % r.tw;
        int src = bgr ? 2 - ch : ch;
        float mean = ch == 0 ? mean0 : (ch == 1 ? mean1 : mean2);
        float inv = ch == 0 ? inv_std0 : (ch == 1 ? inv_std1 : inv_std2);
        int pix = y * w + x;
        out[(long long)pix * out_pitch + ch] = ((float)rgb[pix * 3 + src] - mean) * inv;
    }
}

// Letterbox of a whole frame into the packed RGB network image, on the device. Mirrors
// `letterbox` (src/preprocess.rs) byte for byte: the same taps (uploaded by the host, see
// `LetterboxTaps`), the same float operations in the same order (the _rn intrinsics keep the
// compiler from fusing multiply-adds), the same rounding; BT.601 limited range for 4:2:0 input.
#define RD_FRAME_PACKED 0
#define RD_FRAME_I420 1
#define RD_FRAME_NV12 2

// v clamped to [0, 255] and rounded half up (NaN gives 0), as `round_clamped`.
__device__ __forceinline__ float rd_round255(float v) {
    v = fminf(fmaxf(v, 0.0f), 255.0f);
    float f = floorf(v);
    return __fadd_rn(f, __fsub_rn(v, f) >= 0.5f ? 1.0f : 0.0f);
}

// The frame's own channels at source pixel (x, y) as floats: R, G, B of packed frames; Y, U, V
// of 4:2:0 ones (the chroma of the pixel's 2x2 block).
__device__ __forceinline__ void rd_src_sample(
    const u8* __restrict__ p0, const u8* __restrict__ p1, const u8* __restrict__ p2, int format,
    int stride, int bpp, int off_r, int off_g, int off_b, int uv_stride, int x, int y, float* s)
{
    if (format == RD_FRAME_PACKED) {
        const u8* px = p0 + (long long)y * stride + (long long)x * bpp;
        s[0] = (float)px[off_r];
        s[1] = (float)px[off_g];
        s[2] = (float)px[off_b];
        return;
    }
    long long crow = (long long)(y / 2) * uv_stride;
    s[0] = (float)p0[(long long)y * stride + x];
    if (format == RD_FRAME_NV12) {
        s[1] = (float)p1[crow + (x / 2) * 2];
        s[2] = (float)p1[crow + (x / 2) * 2 + 1];
    } else {
        s[1] = (float)p1[crow + x / 2];
        s[2] = (float)p2[crow + x / 2];
    }
}

// RGB bytes of blended samples: rounded for packed frames; BT.601 limited range for 4:2:0 ones,
// with the float operations of `PixelSource::to_rgb` on the host, in the same order.
__device__ __forceinline__ void rd_samples_to_rgb(int format, const float* s, u8* o)
{
    if (format == RD_FRAME_PACKED) {
        for (int c = 0; c < 3; ++c) o[c] = (u8)rd_round255(s[c]);
        return;
    }
    float c = __fmul_rn(1.164f, __fsub_rn(s[0], 16.0f));
    float d = __fsub_rn(s[1], 128.0f), e = __fsub_rn(s[2], 128.0f);
    o[0] = (u8)rd_round255(__fadd_rn(c, __fmul_rn(1.596f, e)));
    o[1] = (u8)rd_round255(__fsub_rn(__fsub_rn(c, __fmul_rn(0.392f, d)), __fmul_rn(0.813f, e)));
    o[2] = (u8)rd_round255(__fadd_rn(c, __fmul_rn(2.017f, d)));
}

// One thread per output pixel (grid-stride over nw * nh). Packed frames: p0 = pixels with
// `stride` bytes per row, `bpp` bytes per pixel, R/G/B at the offsets. I420: p0 = Y (stride),
// p1 = U, p2 = V (uv_stride). NV12: p0 = Y, p1 = interleaved UV.
extern "C" __global__ void rd_letterbox(
    const u8* __restrict__ p0, const u8* __restrict__ p1, const u8* __restrict__ p2, int format,
    int stride, int bpp, int off_r, int off_g, int off_b, int uv_stride,
    const int* __restrict__ cols_i, const float* __restrict__ cols_a,
    const int* __restrict__ rows_i, const float* __restrict__ rows_a,
    u8* __restrict__ out, int nw, int nh, int pad)
{
    RD_PDL_WAIT();
    long long total = (long long)nw * nh;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int oy = (int)(e / nw), ox = (int)(e - (long long)oy * nw);
        u8* o = out + e * 3;
        int x0 = cols_i[2 * ox], y0 = rows_i[2 * oy];
        if (x0 < 0 || y0 < 0) {
            o[0] = o[1] = o[2] = (u8)pad;
            continue;
        }
        int x1 = cols_i[2 * ox + 1], y1 = rows_i[2 * oy + 1];
        float ax = cols_a[ox], ay = rows_a[oy];
        float p00[3], p01[3], p10[3], p11[3], blend[3];
        rd_src_sample(p0, p1, p2, format, stride, bpp, off_r, off_g, off_b, uv_stride, x0, y0, p00);
        rd_src_sample(p0, p1, p2, format, stride, bpp, off_r, off_g, off_b, uv_stride, x1, y0, p01);
        rd_src_sample(p0, p1, p2, format, stride, bpp, off_r, off_g, off_b, uv_stride, x0, y1, p10);
        rd_src_sample(p0, p1, p2, format, stride, bpp, off_r, off_g, off_b, uv_stride, x1, y1, p11);
        float bx = __fsub_rn(1.0f, ax), by = __fsub_rn(1.0f, ay);
        for (int c = 0; c < 3; ++c) {
            float top = __fadd_rn(__fmul_rn(p00[c], bx), __fmul_rn(p01[c], ax));
            float bot = __fadd_rn(__fmul_rn(p10[c], bx), __fmul_rn(p11[c], ax));
            blend[c] = __fadd_rn(__fmul_rn(top, by), __fmul_rn(bot, ay));
        }
        rd_samples_to_rgb(format, blend, o);
    }
}
