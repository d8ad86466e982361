// NV12 resizing for Ladder's `gpu` and `hybrid` backends.
//
// Compiled to PTX by NVRTC (scripts/ptx.py; `make kernels`), the PTX committed
// in kernels/ptx/ and embedded in the binary (src/pipeline/gpu/kernels.rs),
// which also holds a CPU reference of every kernel here: same integers, same
// rounding, same edge handling, so GPU output can be compared bit for bit.
// Plain CUDA C, integer arithmetic only: no headers (NVRTC has no system
// includes), no floating point, so no fast-math or FMA question arises.
//
// Pictures are 8-bit NV12: a Y plane and an interleaved UV plane (U first),
// each with its own pointer and pitch (bytes between rows); chroma planes
// are ceil(w/2) x ceil(h/2) UV pairs. One thread computes one output sample
// (Y) or one output UV pair; launch a 2-D grid covering dst_w x dst_h with
// any block shape (32 x 8 is what the Rust side uses).
//
// Output of the UV kernels goes through two pointers, a shared pitch and a
// step (bytes between horizontally adjacent samples):
//   NV12 out: dst_u = uv, dst_v = uv + 1, dst_step = 2
//   I420 out: dst_u = U plane, dst_v = V plane (same pitch), dst_step = 1
// so the hybrid path (x264 on the host takes I420 pictures) gets planar
// chroma straight from the resize, with no extra pass.
//
// Filter kernels (ladder_filter_y, ladder_filter_uv): separable, driven by
// weight tables built on the host (kernels.rs: area, bicubic, or anything
// else) and uploaded once per (source size, rung size). Per axis:
//   pos[i]           first source sample of output i's window (int32)
//   coef[k * n + i]  tap k of output i, n = output length (int16, tap-major
//                    so that neighbouring threads read neighbouring words)
//   taps             window length, the same for every output
// The host guarantees 0 <= pos[i] and pos[i] + taps <= source length (edge
// taps are folded onto the edge sample), and that each output's
// coefficients sum to exactly 1 << 14. Arithmetic, per output sample:
//   h(row) = (sum_k xcoef[k] * src[row][xpos + k] + 128) >> 8     (6 fraction bits)
//   out    = clamp((sum_j ycoef[j] * h(ypos + j) + (1 << 19)) >> 20, 0, 255)
// (>> on a negative int is arithmetic, i.e. floor; rounding is half up).
// All sums fit in int32 for |coefficients| summing to < 4 << 14.
//
// Bilinear kernels (ladder_bilinear_y, ladder_bilinear_uv): the fast option,
// 2 x 2 taps, no tables, no anti-aliasing (they alias when shrinking by
// more than 2). Source position of output i in 16.16 fixed point:
//   p = max(i * step + off, 0); i0 = p >> 16; f = (p >> 8) & 255;
//   i1 = i0 + 1, both clamped to the last sample
//   out = ((row0 mix) * (256 - fy) + (row1 mix) * fy + 32768) >> 16,
//   row mix = s[i0] * (256 - fx) + s[i1] * fx
// step and off come from the host (kernels.rs BilinearAxis). Sizes up to
// 16383 keep i * step inside int32.

typedef unsigned char u8;

#define LADDER_MID_SHIFT 8
#define LADDER_MID_ROUND (1 << (LADDER_MID_SHIFT - 1))
#define LADDER_OUT_SHIFT 20
#define LADDER_OUT_ROUND (1 << (LADDER_OUT_SHIFT - 1))

__device__ __forceinline__ int ladder_clamp_u8(int v)
{
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

__device__ __forceinline__ long long ladder_offset(int row, int pitch)
{
    return (long long)row * (long long)pitch;
}

extern "C" __global__ void ladder_filter_y(
    const u8* __restrict__ src, int src_pitch,
    u8* __restrict__ dst, int dst_pitch, int dst_w, int dst_h,
    const int* __restrict__ x_pos, const short* __restrict__ x_coef, int x_taps,
    const int* __restrict__ y_pos, const short* __restrict__ y_coef, int y_taps)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) {
        return;
    }
    const u8* base = src + ladder_offset(y_pos[y], src_pitch) + x_pos[x];
    int acc = 0;
    for (int j = 0; j < y_taps; ++j) {
        const u8* row = base + ladder_offset(j, src_pitch);
        int h = 0;
        for (int k = 0; k < x_taps; ++k) {
            h += (int)x_coef[k * dst_w + x] * (int)row[k];
        }
        h = (h + LADDER_MID_ROUND) >> LADDER_MID_SHIFT;
        acc += (int)y_coef[j * dst_h + y] * h;
    }
    dst[ladder_offset(y, dst_pitch) + x] =
        (u8)ladder_clamp_u8((acc + LADDER_OUT_ROUND) >> LADDER_OUT_SHIFT);
}

extern "C" __global__ void ladder_filter_uv(
    const u8* __restrict__ src, int src_pitch,
    u8* dst_u, u8* dst_v, int dst_pitch, int dst_step, int dst_w, int dst_h,
    const int* __restrict__ x_pos, const short* __restrict__ x_coef, int x_taps,
    const int* __restrict__ y_pos, const short* __restrict__ y_coef, int y_taps)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) {
        return;
    }
    const u8* base = src + ladder_offset(y_pos[y], src_pitch) + 2 * x_pos[x];
    int acc_u = 0;
    int acc_v = 0;
    for (int j = 0; j < y_taps; ++j) {
        const u8* row = base + ladder_offset(j, src_pitch);
        int hu = 0;
        int hv = 0;
        for (int k = 0; k < x_taps; ++k) {
            int c = (int)x_coef[k * dst_w + x];
            hu += c * (int)row[2 * k];
            hv += c * (int)row[2 * k + 1];
        }
        hu = (hu + LADDER_MID_ROUND) >> LADDER_MID_SHIFT;
        hv = (hv + LADDER_MID_ROUND) >> LADDER_MID_SHIFT;
        int cy = (int)y_coef[j * dst_h + y];
        acc_u += cy * hu;
        acc_v += cy * hv;
    }
    long long at = ladder_offset(y, dst_pitch) + (long long)x * dst_step;
    dst_u[at] = (u8)ladder_clamp_u8((acc_u + LADDER_OUT_ROUND) >> LADDER_OUT_SHIFT);
    dst_v[at] = (u8)ladder_clamp_u8((acc_v + LADDER_OUT_ROUND) >> LADDER_OUT_SHIFT);
}

// Bilinear source position: first and second sample, and the 8-bit weight
// of the second.
__device__ __forceinline__ void ladder_bilinear_pos(
    int i, int step, int off, int n, int* i0, int* i1, int* f)
{
    int p = i * step + off;
    if (p < 0) {
        p = 0;
    }
    int a = p >> 16;
    *f = (p >> 8) & 255;
    if (a >= n - 1) {
        *i0 = n - 1;
        *i1 = n - 1;
    } else {
        *i0 = a;
        *i1 = a + 1;
    }
}

extern "C" __global__ void ladder_bilinear_y(
    const u8* __restrict__ src, int src_pitch, int src_w, int src_h,
    u8* __restrict__ dst, int dst_pitch, int dst_w, int dst_h,
    int x_step, int x_off, int y_step, int y_off)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) {
        return;
    }
    int x0, x1, fx, y0, y1, fy;
    ladder_bilinear_pos(x, x_step, x_off, src_w, &x0, &x1, &fx);
    ladder_bilinear_pos(y, y_step, y_off, src_h, &y0, &y1, &fy);
    const u8* r0 = src + ladder_offset(y0, src_pitch);
    const u8* r1 = src + ladder_offset(y1, src_pitch);
    int h0 = (int)r0[x0] * (256 - fx) + (int)r0[x1] * fx;
    int h1 = (int)r1[x0] * (256 - fx) + (int)r1[x1] * fx;
    dst[ladder_offset(y, dst_pitch) + x] = (u8)((h0 * (256 - fy) + h1 * fy + 32768) >> 16);
}

extern "C" __global__ void ladder_bilinear_uv(
    const u8* __restrict__ src, int src_pitch, int src_w, int src_h,
    u8* dst_u, u8* dst_v, int dst_pitch, int dst_step, int dst_w, int dst_h,
    int x_step, int x_off, int y_step, int y_off)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) {
        return;
    }
    int x0, x1, fx, y0, y1, fy;
    ladder_bilinear_pos(x, x_step, x_off, src_w, &x0, &x1, &fx);
    ladder_bilinear_pos(y, y_step, y_off, src_h, &y0, &y1, &fy);
    const u8* r0 = src + ladder_offset(y0, src_pitch);
    const u8* r1 = src + ladder_offset(y1, src_pitch);
    long long at = ladder_offset(y, dst_pitch) + (long long)x * dst_step;
    for (int c = 0; c < 2; ++c) {
        int h0 = (int)r0[2 * x0 + c] * (256 - fx) + (int)r0[2 * x1 + c] * fx;
        int h1 = (int)r1[2 * x0 + c] * (256 - fx) + (int)r1[2 * x1 + c] * fx;
        u8 v = (u8)((h0 * (256 - fy) + h1 * fy + 32768) >> 16);
        if (c == 0) {
            dst_u[at] = v;
        } else {
            dst_v[at] = v;
        }
    }
}

// NV12 UV plane to separate U and V planes (I420), no resizing: for a rung
// at the source size, which the hybrid path hands to x264 as I420 (the Y
// plane is a plain 2-D copy, cuMemcpy2D). w x h UV pairs.
extern "C" __global__ void ladder_deinterleave_uv(
    const u8* __restrict__ src, int src_pitch,
    u8* __restrict__ dst_u, u8* __restrict__ dst_v, int dst_pitch, int w, int h)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) {
        return;
    }
    const u8* s = src + ladder_offset(y, src_pitch) + 2 * x;
    long long at = ladder_offset(y, dst_pitch) + x;
    dst_u[at] = s[0];
    dst_v[at] = s[1];
}
