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
