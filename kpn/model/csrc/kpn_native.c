/* kpn's fused CPU loops: the star15_snr features (with model.chroma_input's), the softmax
 * star filter and its backward pass, one pass each over a band of pixels where eager torch
 * makes some seventy, twenty and forty. Single-threaded: beside torch's spinning OpenMP
 * workers two threads of these lost to one (README, Speed). Loaded by
 * kpn/model/native.py (ctypes); kpn's eager code is the definition, and what runs where this
 * does not build. Compiled with -ffp-contract=off: every product and sum rounds as eager
 * torch's separate operations round. log1p, log2 and exp are Cephes' float polynomials
 * written without branches, so that the compiler vectorises the loops over x (within 3e-7
 * of torch's; tests/model/test_native.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAPS 15 /* star15's: the features' and the backward pass's */
#define MAX_TAPS 21 /* star21's (model.kernel_taps): star15's, then its transpose's others */
#define CENTRE 7
#define CHANNELS 32
#define CHROMA_CHANNELS 30 /* model.chroma_input's, after the 32 */
static const int TAP_DX[MAX_TAPS] = {0,  -2, -1, 0, 1, 2, -1, 0, 1, -2, -1,
                                     0,  1,  2,  0, -1, 1, -2, 2, -1, 1};
static const int TAP_DY[MAX_TAPS] = {-2, -1, -1, -1, -1, -1, 0, 0, 0, 1, 1,
                                     1,  1,  1,  2,  -2, -2, 0, 0, 2, 2};

static const float LUMA_R = 0.2627002f, LUMA_G = 0.6779981f, LUMA_B = 0.0593017f;
static const float OPPONENT_RG = 0.70710678118654752f, OPPONENT_YB = 0.40824829046386302f;
static const float NOISE_SCALE = 65535.0f;
static const float SIGMA_FLOOR = 1e-7f;
static const float SIGMA_CEIL = 1e30f;
static const float SOFTMAX_SCALE = 0.1f;
static const float SOFTMAX_MIN_SUM = 1e-3f;
static const float SOFTMAX_MAX_START = -1e38f;

static inline float as_float(int32_t bits) { float f; memcpy(&f, &bits, 4); return f; }
static inline int32_t as_bits(float f) { int32_t b; memcpy(&b, &f, 4); return b; }

/* Cephes logf's polynomial: log(1 + f) + e log(2), f in [sqrt(1/2) - 1, sqrt(2) - 1) */
static inline float log_reduced(float f, float e) {
    float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return (f + y) + 0.693359375f * e;
}

/* u = m 2^e with m in [sqrt(1/2), sqrt(2)), for a positive normal float: f = m - 1 */
static inline void reduce(float u, float *f, float *e) {
    int32_t bits = as_bits(u);
    float exponent = (float)((bits >> 23) - 127);
    float m = as_float((bits & 0x007fffff) | 0x3f800000); /* [1, 2) */
    int big = m > 1.41421356f;
    *f = (big ? 0.5f * m : m) - 1.0f;
    *e = big ? exponent + 1.0f : exponent;
}

/* natural log of a positive normal float */
static inline float log_positive(float u) {
    float f, e;
    reduce(u, &f, &e);
    return log_reduced(f, e);
}

/* sign(x) log(1 + |x|): below sqrt(2) - 1 the polynomial reads |x| itself (1 + |x| would
 * round it), above it log(1 + |x|), whose rounding costs at most 2^-24 / log(sqrt(2)) */
static inline float signed_log1p(float x) {
    float a = fabsf(x);
    float f, e;
    reduce(1.0f + a, &f, &e);
    int small = a < 0.41421356f;
    float r = log_reduced(small ? a : f, small ? 0.0f : e);
    r = a == INFINITY ? a : r;
    return copysignf(r, x);
}

/* exp(x) for x <= 0 (0 below -87.3): Cephes expf */
static inline float exp_nonpositive(float x) {
    float n = floorf(1.44269504088896341f * x + 0.5f);
    float under = x < -87.33654f;
    n = under ? 0.0f : n;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    float scale = as_float(((int32_t)n + 127) << 23);
    return under ? 0.0f : y * scale;
}

/* out = signed_log1p((tap - centre) * inverse), or of tap * inverse without a centre */
static void scaled_log1p(const float *restrict tap, const float *restrict centre,
                         const float *restrict inverse, float *restrict out, int64_t width) {
    if (centre)
        for (int64_t x = 0; x < width; ++x) out[x] = signed_log1p((tap[x] - centre[x]) * inverse[x]);
    else
        for (int64_t x = 0; x < width; ++x) out[x] = signed_log1p(tap[x] * inverse[x]);
}

/* the two orthonormal opponent colours of one row of rgb (kpn.features.opponent_colours) */
static void opponent_colours(const float *restrict r, const float *restrict g,
                             const float *restrict b, float *restrict first,
                             float *restrict second, int64_t width) {
    for (int64_t x = 0; x < width; ++x) {
        first[x] = (r[x] - g[x]) * OPPONENT_RG;
        second[x] = ((r[x] + g[x]) - 2.0f * b[x]) * OPPONENT_YB;
    }
}

/* luminance and saturation of one row of rgb */
static void luminance_saturation(const float *restrict r, const float *restrict g,
                                 const float *restrict b, float *restrict lum,
                                 float *restrict sat, int64_t width) {
    for (int64_t x = 0; x < width; ++x) {
        lum[x] = LUMA_R * r[x] + LUMA_G * g[x] + LUMA_B * b[x];
        float hi = r[x] > g[x] ? r[x] : g[x], lo = r[x] < g[x] ? r[x] : g[x];
        hi = b[x] > hi ? b[x] : hi;
        lo = b[x] < lo ? b[x] : lo;
        sat[x] = hi - lo;
    }
}

/* sigma of the noise at each pixel (kpn.features.noise_sigma, floored and capped), its
 * inverse, and the level channel log2(65535 sigma) / 16 */
static void noise_channels(const float *restrict lum, float a, float b, float level_scale,
                           float *restrict inverse, float *restrict level, int64_t width) {
    for (int64_t x = 0; x < width; ++x) {
        float positive = lum[x] > 0.0f ? lum[x] : 0.0f;
        float variance = a + NOISE_SCALE * positive * b;
        float sigma = level_scale * sqrtf(variance) / NOISE_SCALE;
        sigma = sigma > SIGMA_FLOOR ? sigma : SIGMA_FLOOR;
        sigma = sigma < SIGMA_CEIL ? sigma : SIGMA_CEIL; /* an overflowed variance: inf */
        inverse[x] = 1.0f / sigma;
        level[x] = log_positive(sigma * NOISE_SCALE) * 1.44269504088896341f / 16.0f;
    }
}

#define BLOCK 64 /* pixels whose 32 channels are made together, in L1 */

/* The star15_snr input of kpn.features.star15_snr_features_padded, as pixel rows, and
 * with chroma != 0 model.chroma_input's 30 channels after them
 * (kpn.features.chroma_features_padded).
 * padded: [B,3,h+4,w+4] with element strides (sb, sc, sy, 1); noise_lum: [B,h,w] with
 * (lb, ly, 1); noise_ab: [B,2]; out: [B,h,w,32] (chroma: [B,h,w,62]) contiguous. Returns 0,
 * or -1 (no memory). */
int kpn_star15_snr_rows(const float *padded, int64_t sb, int64_t sc, int64_t sy,
                        const float *noise_lum, int64_t lb, int64_t ly, const float *noise_ab,
                        int64_t batch, int64_t height, int64_t width, float level_scale,
                        int chroma, float *out) {
    int64_t pw = width + 4, ph = height + 4;
    int channels = chroma ? CHANNELS + CHROMA_CHANNELS : CHANNELS;
    int images = chroma ? 4 : 2; /* lum, sat and the two opponent colours */
    float *lum =
        malloc(sizeof(float) * (size_t)(images * ph * pw + 2 * width + (images * TAPS + 2) * BLOCK));
    if (!lum) return -1;
    float *sat = lum + ph * pw;
    float *first = chroma ? sat + ph * pw : sat, *second = chroma ? first + ph * pw : sat;
    float *inverse = lum + images * ph * pw, *level = inverse + width;
    float *planes = level + width; /* [30 or 60][BLOCK] */
    for (int64_t b = 0; b < batch; ++b) {
        const float *image = padded + b * sb;
        for (int64_t y = 0; y < ph; ++y) {
            const float *r = image + y * sy;
            luminance_saturation(r, r + sc, r + 2 * sc, lum + y * pw, sat + y * pw, pw);
            if (chroma)
                opponent_colours(r, r + sc, r + 2 * sc, first + y * pw, second + y * pw, pw);
        }
        for (int64_t y = 0; y < height; ++y) {
            noise_channels(noise_lum + b * lb + y * ly, noise_ab[2 * b], noise_ab[2 * b + 1],
                           level_scale, inverse, level, width);
            int64_t centre = (y + 2) * pw + 2;
            const float *sources[4] = {lum + centre, sat + centre, first + centre,
                                       second + centre};
            float *row = out + ((b * height + y) * width) * channels;
            for (int64_t x0 = 0; x0 < width; x0 += BLOCK) {
                int64_t n = width - x0 < BLOCK ? width - x0 : BLOCK;
                for (int t = 0; t < TAPS; ++t) {
                    int64_t offset = TAP_DY[t] * pw + TAP_DX[t] + x0;
                    for (int i = 0; i < images; ++i) { /* plane 2t + i, then 30 + 2t + i - 2 */
                        float *pl = planes + ((i < 2 ? 0 : 2 * TAPS - 2) + 2 * t + i) * BLOCK;
                        const float *c = sources[i] + x0;
                        if (t == CENTRE)
                            scaled_log1p(c, NULL, inverse + x0, pl, n);
                        else
                            scaled_log1p(sources[i] + offset, c, inverse + x0, pl, n);
                    }
                }
                for (int64_t x = 0; x < n; ++x) {
                    float *pixel = row + (x0 + x) * channels;
                    for (int c = 0; c < 2 * TAPS; ++c) pixel[c] = planes[c * BLOCK + x];
                    pixel[30] = level[x0 + x];
                    pixel[31] = 1.0f;
                    for (int c = 0; c < chroma * CHROMA_CHANNELS; ++c)
                        pixel[CHANNELS + c] = planes[(2 * TAPS + c) * BLOCK + x];
                }
            }
        }
    }
    free(lum);
    return 0;
}

/* largest = max(largest, z), NaN z skipped */
static void running_max(const float *restrict z, float *restrict largest, int64_t width) {
    for (int64_t x = 0; x < width; ++x) largest[x] = z[x] > largest[x] ? z[x] : largest[x];
}

/* w = exp(0.1 (z - largest)), a NaN difference giving 1; total += w */
static void softmax_factors(const float *restrict z, const float *restrict largest,
                            float *restrict w, float *restrict total, int64_t width) {
    for (int64_t x = 0; x < width; ++x) {
        float shifted = z[x] - largest[x];
        shifted = shifted != shifted ? 0.0f : shifted;
        w[x] = exp_nonpositive(SOFTMAX_SCALE * shifted);
        total[x] = total[x] + w[x];
    }
}

static void divide(float *restrict w, const float *restrict total, int64_t width) {
    for (int64_t x = 0; x < width; ++x) w[x] = w[x] / total[x];
}

/* sum = a b (first) or sum + a b */
static void multiply_add(const float *restrict a, const float *restrict b, float *restrict sum,
                         int first, int64_t width) {
    if (first)
        for (int64_t x = 0; x < width; ++x) sum[x] = a[x] * b[x];
    else
        for (int64_t x = 0; x < width; ++x) sum[x] = sum[x] + a[x] * b[x];
}

/* kpn.apply's softmax star filter: apply_kernel_padded(padded, kernel_weights(logits,
 * "softmax"), None) with the first `taps` taps (15: star15, 21: star21). padded:
 * [B,C,h+4,w+4] with (sb, sc, sy, 1); logits: [B,>=taps,h,w] with (kb, kc, ky, 1); out:
 * [B,C,h,w] contiguous; tap_weights: NULL, or [B,taps,h,w] contiguous for the normalised
 * weights. Returns 0, or -1 (no memory, or a tap count outside 1..21). */
int kpn_softmax_apply(const float *padded, int64_t sb, int64_t sc, int64_t sy,
                      const float *logits, int64_t kb, int64_t kc, int64_t ky, int64_t batch,
                      int64_t channels, int64_t height, int64_t width, int64_t taps, float *out,
                      float *tap_weights) {
    if (taps < 1 || taps > MAX_TAPS) return -1;
    float *weights = malloc(sizeof(float) * (size_t)((taps + 2) * width));
    if (!weights) return -1;
    float *largest = weights + taps * width, *total = largest + width;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t y = 0; y < height; ++y) {
            const float *z = logits + b * kb + y * ky;
            for (int64_t x = 0; x < width; ++x) largest[x] = -INFINITY;
            for (int t = 0; t < taps; ++t) running_max(z + t * kc, largest, width);
            for (int64_t x = 0; x < width; ++x) {
                largest[x] = largest[x] > SOFTMAX_MAX_START ? largest[x] : SOFTMAX_MAX_START;
                total[x] = 0.0f;
            }
            for (int t = 0; t < taps; ++t)
                softmax_factors(z + t * kc, largest, weights + t * width, total, width);
            for (int64_t x = 0; x < width; ++x)
                total[x] = total[x] > SOFTMAX_MIN_SUM ? total[x] : SOFTMAX_MIN_SUM;
            for (int t = 0; t < taps; ++t) divide(weights + t * width, total, width);
            if (tap_weights)
                for (int t = 0; t < taps; ++t)
                    memcpy(tap_weights + ((b * taps + t) * height + y) * width,
                           weights + t * width, sizeof(float) * (size_t)width);
            for (int64_t c = 0; c < channels; ++c) {
                float *o = out + ((b * channels + c) * height + y) * width;
                const float *rows = padded + b * sb + c * sc + (y + 2) * sy + 2;
                for (int t = 0; t < taps; ++t)
                    multiply_add(weights + t * width, rows + TAP_DY[t] * sy + TAP_DX[t], o,
                                 t == 0, width);
            }
        }
    }
    free(weights);
    return 0;
}

/* out = (along - along_output) w 0.1 */
static void logit_gradient(const float *restrict along, const float *restrict along_output,
                           const float *restrict w, float *restrict out, int64_t width) {
    for (int64_t x = 0; x < width; ++x)
        out[x] = ((along[x] - along_output[x]) * w[x]) * SOFTMAX_SCALE;
}

/* kpn.band.softmax_apply_backward: dL/dz_k = 0.1 w_k sum_c g_c (X_k,c - I_c).
 * grad, filtered: [B,C,h,w] contiguous; padded: [B,C,h+4,w+4] with (sb, sc, sy, 1);
 * tap_weights, out: [B,15,h,w] contiguous. Returns 0, or -1 (no memory). */
int kpn_softmax_apply_backward(const float *grad, const float *padded, int64_t sb, int64_t sc,
                               int64_t sy, const float *tap_weights, const float *filtered,
                               int64_t batch, int64_t channels, int64_t height, int64_t width,
                               float *out) {
    float *along_output = malloc(sizeof(float) * (size_t)(2 * width));
    if (!along_output) return -1;
    float *along = along_output + width;
    int64_t plane = height * width;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t y = 0; y < height; ++y) {
            const float *g = grad + b * channels * plane + y * width;
            const float *i = filtered + b * channels * plane + y * width;
            for (int64_t c = 0; c < channels; ++c)
                multiply_add(g + c * plane, i + c * plane, along_output, c == 0, width);
            for (int t = 0; t < TAPS; ++t) {
                const float *tap = padded + b * sb + (y + 2 + TAP_DY[t]) * sy + 2 + TAP_DX[t];
                for (int64_t c = 0; c < channels; ++c)
                    multiply_add(g + c * plane, tap + c * sc, along, c == 0, width);
                int64_t at = (b * TAPS + t) * plane + y * width;
                logit_gradient(along, along_output, tap_weights + at, out + at, width);
            }
        }
    }
    free(along_output);
    return 0;
}
