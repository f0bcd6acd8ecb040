/* Direct CPU correlation for gcm_lasagne/fastconv.py (compiled as C++ by
 * Theano; the Python side puts one of FC_OP_FORWARD, FC_OP_GRADWEIGHTS,
 * FC_OP_GRADINPUTS in front of this file).
 *
 * Written for this project. There is no im2col buffer and no BLAS: each
 * image is copied once into zero-padded "planes", and small vector kernels
 * read the taps of a filter straight from them, keeping their sums in
 * registers. Vectors are GCC vector extensions of FC_VL floats (16 with
 * AVX-512, 8 with AVX, else 4).
 *
 *   Planes. For stride (sh, sw) the padded image is split into sh*sw phase
 *   planes, Q[c][py][px][r][q] = Xpad[c][sh*r + py][sw*q + px], each Hq x Wq.
 *   Tap (i, j) of output pixel (a, b) is Q[c][i%sh][j%sw][a + i/sh][b + j/sw],
 *   so for a fixed tap the pixels of an output row are contiguous in memory,
 *   whatever the stride. The kernels work on an "extended" output grid of
 *   Ho rows x Wq columns (Wq >= Wo): a run of consecutive extended pixels is
 *   one contiguous run of every tap's plane. The Wq - Wo extra columns are
 *   computed and dropped (6% more work on a 32x32 3x3 layer, 25% on 8x8).
 *
 *   Forward: out[m][n..n+VL) = sum_k w[m][k] * plane[off[k] + n..], n a
 *   block of VL extended pixels. A tile keeps up to FC_MR output channels x
 *   VL pixels in registers; the weights are broadcast from a packed copy.
 *
 *   Input gradient: dX = the stride-1 correlation of the zero-padded dY with
 *   the flipped, transposed filters, by the forward kernel. With stride s,
 *   each of the s*s output phases (y % s, x % s) gets the taps that land on
 *   it, so no zeros are inserted and no work is wasted; each phase is then
 *   scattered into dX.
 *
 *   Weight gradient: dW[m][k] = sum over images and pixels of
 *   dY[m][a][b] * plane[off[k] + a*Wq + b], two ways:
 *   - vectorised over output channels (dY transposed per image to
 *     pixel-major): a tile keeps KR taps x MVT channel vectors in registers
 *     over a whole image, with no horizontal sums;
 *   - vectorised over pixels, when M is small (GCM's 10 class maps would
 *     fill 10 of 16 lanes): a tile keeps MR channels x KR taps of VL partial
 *     sums, added across lanes at the very end.
 *   Every thread sums its images; the threads' sums are added at the end.
 *
 * Images are shared out to OpenMP threads one at a time (dynamic schedule:
 * on a shared machine a thread that loses its core does not hold the other
 * one up for a whole static half of the batch). float32 only.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <malloc.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef FC_VL
# if defined(__AVX512F__)
#  define FC_VL 16
# elif defined(__AVX__)
#  define FC_VL 8
# else
#  define FC_VL 4
# endif
#endif
/* The weight gradient sums its images in this many fixed chunks, each into
   its own buffer, and then adds the chunks in order: the result does not
   depend on which thread took which chunk, or on the number of threads, so
   a run (and a resumed run) repeats bit for bit. */
#define FC_CHUNKS 8

/* Output channels per forward tile: one accumulator each, plus the pixel
   vector and a broadcast must fit in the vector registers. */
#ifndef FC_MR
# if FC_VL >= 16
#  define FC_MR 16
# else
#  define FC_MR 12
# endif
#endif
/* Channel vectors per weight-gradient tile. */
#ifndef FC_MVT
# if FC_VL >= 16
#  define FC_MVT 4
# else
#  define FC_MVT 2
# endif
#endif

typedef float fc_v __attribute__((vector_size(FC_VL * 4)));
typedef float fc_vu
    __attribute__((vector_size(FC_VL * 4), aligned(4), may_alias));

static inline fc_v fc_load(const float* p) { return *(const fc_vu*)p; }
static inline void fc_store(float* p, fc_v v) { *(fc_vu*)p = v; }

static inline npy_intp fc_floordiv(npy_intp a, npy_intp b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static inline npy_intp fc_clip(npy_intp x, npy_intp lo, npy_intp hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* Zeroed, 64-byte aligned scratch memory; give it back with fc_free. */
static float* fc_alloc(npy_intp n)
{
    void* p = NULL;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
#ifdef _WIN32
    p = _aligned_malloc(bytes, 64);
    if (!p)
        return NULL;
#else
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
#endif
    memset(p, 0, bytes);
    return (float*)p;
}

static void fc_free(float* p)
{
#ifdef _WIN32
    _aligned_free(p);
#else
    free(p);
#endif
}

/* The padding a border mode gives a kernel side: -1 is 'half', -2 'full'. */
static npy_intp fc_pad(npy_intp mode, npy_intp k)
{
    if (mode == -1)
        return k / 2;
    if (mode == -2)
        return k - 1;
    return mode;
}

/* GCC would turn the short copy loops below into memcpy / memset calls,
   which cost more than the copies. */
#if defined(__GNUC__) && !defined(__clang__)
# define FC_NO_LIBCALLS \
    __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
# define FC_NO_LIBCALLS
#endif

/* d[q] = s[q * stride] for 0 <= q < n. Reads below `end` only. */
static inline FC_NO_LIBCALLS void fc_gather_row(
    float* __restrict d, const float* __restrict s, npy_intp n, int stride,
    const float* end)
{
    npy_intp q = 0;
    if (stride == 1) {
        if (n >= FC_VL) {
            for (; q + FC_VL <= n; q += FC_VL)
                fc_store(d + q, fc_load(s + q));
            if (q < n)  /* the last, overlapping vector */
                fc_store(d + n - FC_VL, fc_load(s + n - FC_VL));
            return;
        }
    }
#if defined(__GNUC__) && !defined(__clang__)
    else if (stride == 2) {
        typedef int fc_iv __attribute__((vector_size(FC_VL * 4)));
        union { fc_iv v; int i[FC_VL]; } even;
        for (int l = 0; l < FC_VL; l++)
            even.i[l] = 2 * l;
        /* two vectors: 2 * FC_VL inputs, the last one unused */
        for (; q + FC_VL <= n && s + 2 * (q + FC_VL) <= end; q += FC_VL)
            fc_store(d + q, __builtin_shuffle(fc_load(s + 2 * q),
                                              fc_load(s + 2 * q + FC_VL), even.v));
    }
    else if (stride == 4) {  /* Winograd's 4x4 tiles: column phases */
        typedef int fc_iv __attribute__((vector_size(FC_VL * 4)));
        union { fc_iv v; int i[FC_VL]; } every4, halves;
        /* lanes 0, 4, 8, ... of two vectors in the first half, then the
           first halves of two such vectors side by side */
        for (int l = 0; l < FC_VL; l++) {
            every4.i[l] = l < FC_VL / 2 ? 4 * l : 0;
            halves.i[l] = l < FC_VL / 2 ? l : FC_VL + l - FC_VL / 2;
        }
        for (; q + FC_VL <= n && s + 4 * (q + FC_VL) <= end; q += FC_VL) {
            const float* p = s + 4 * q;
            fc_v a = __builtin_shuffle(fc_load(p), fc_load(p + FC_VL),
                                       every4.v);
            fc_v b = __builtin_shuffle(fc_load(p + 2 * FC_VL),
                                       fc_load(p + 3 * FC_VL), every4.v);
            fc_store(d + q, __builtin_shuffle(a, b, halves.v));
        }
    }
#endif
    for (; q < n; q++)
        d[q] = s[q * stride];
}

/* Q[c][py][px][r][q] = X[c][sh*r + py - pt][sw*q + px - pl], 0 outside X.
   The planes and their rows are written in memory order, and a row may end
   with zeros running up to FC_VL floats into what comes next (the caller
   leaves that much room after the last plane). */
static FC_NO_LIBCALLS void fc_planes(
    const float* __restrict X, npy_intp C, npy_intp H, npy_intp W, int sh,
    int sw, npy_intp pt, npy_intp pl, npy_intp Hq, npy_intp Wq,
    float* __restrict Q)
{
    const fc_v zero = fc_v{};
    const float* end = X + C * H * W;
    for (npy_intp c = 0; c < C; c++) {
        const float* Xc = X + c * H * W;
        for (int py = 0; py < sh; py++) {
            /* rows r with 0 <= sh*r + py - pt < H */
            npy_intp r0 = fc_clip(-fc_floordiv(py - pt, sh), 0, Hq);
            npy_intp r1 = fc_clip(fc_floordiv(H - 1 + pt - py, sh) + 1, r0, Hq);
            for (int px = 0; px < sw; px++) {
                float* P = Q + ((c * sh + py) * sw + px) * Hq * Wq;
                /* columns q with 0 <= sw*q + px - pl < W */
                npy_intp q0 = fc_clip(-fc_floordiv(px - pl, sw), 0, Wq);
                npy_intp q1 = fc_clip(fc_floordiv(W - 1 + pl - px, sw) + 1, q0, Wq);
                memset(P, 0, sizeof(float) * r0 * Wq);
                for (npy_intp r = r0; r < r1; r++) {
                    const float* s = Xc + (sh * r + py - pt) * W;
                    float* d = P + r * Wq;
                    if (q0 <= FC_VL)
                        fc_store(d, zero);
                    else
                        memset(d, 0, sizeof(float) * q0);
                    fc_gather_row(d + q0, s + sw * q0 + px - pl, q1 - q0, sw, end);
                    for (npy_intp q = q1; q < Wq; q += FC_VL)
                        fc_store(d + q, zero);
                }
                memset(P + r1 * Wq, 0, sizeof(float) * (Hq - r1) * Wq);
            }
        }
    }
}

/* What an inference graph does right after a convolution (a batch norm
   folded into it, then its ReLU): y = y + bias[m], then max(y, 0), on one
   image's M planes of n pixels, while they are still in the cache. The
   same expression as fastbn's BiasAdd, so the same bits. */
struct fc_epi {
    const float* bias;  /* M floats, or NULL */
    int relu;
};

#if defined(FC_OP_FORWARD) || defined(FC_OP_GRADINPUTS)

/* One block of VL extended pixels x MR output channels:
   out[m * ldo + l] = sum_k w[k * MR + m] * x[off[k] + l]. */
template <int MR>
static void fc_fwd_tile(const float* __restrict x, const int* __restrict off,
                        int K, const float* __restrict w,
                        float* __restrict out, npy_intp ldo)
{
    fc_v acc[MR];
    for (int m = 0; m < MR; m++)
        acc[m] = fc_v{};
    for (int k = 0; k < K; k++) {
        const fc_v v = fc_load(x + off[k]);
        const float* __restrict wk = w + (npy_intp)k * MR;
        for (int m = 0; m < MR; m++)
            acc[m] += v * wk[m];
    }
    for (int m = 0; m < MR; m++)
        fc_store(out + m * ldo, acc[m]);
}

typedef void (*fc_fwd_fn)(const float*, const int*, int, const float*,
                          float*, npy_intp);

template <int MR>
struct fc_fwd_table_fill {
    static void fill(fc_fwd_fn* t)
    {
        t[MR] = fc_fwd_tile<MR>;
        fc_fwd_table_fill<MR - 1>::fill(t);
    }
};
template <>
struct fc_fwd_table_fill<0> {
    static void fill(fc_fwd_fn* t) { t[0] = NULL; }
};

static fc_fwd_fn fc_fwd_table[FC_MR + 1];

/* The M output channels are cut into ceil(M / FC_MR) tiles of nearly equal
   size; tile t holds channels [fc_tile_start(t), fc_tile_start(t + 1)). */
static inline int fc_tile_count(int M) { return (M + FC_MR - 1) / FC_MR; }
static inline int fc_tile_start(int t, int M)
{
    int n = fc_tile_count(M);
    return (int)(((npy_intp)t * M) / n);
}

/* Packs w(m, k) = src[m * sm + k * sk] into the tile layout fc_direct reads:
   tile t at dst + m0 * K, element (k, m - m0) at k * mr + (m - m0). */
static void fc_pack_weights(const float* src, npy_intp sm, const npy_intp* sk,
                            int M, int K, float* dst)
{
    int nt = fc_tile_count(M);
    for (int t = 0; t < nt; t++) {
        int m0 = fc_tile_start(t, M), mr = fc_tile_start(t + 1, M) - m0;
        float* d = dst + (npy_intp)m0 * K;
        for (int k = 0; k < K; k++)
            for (int m = 0; m < mr; m++)
                d[(npy_intp)k * mr + m] = src[(m0 + m) * sm + sk[k]];
    }
}

/* out[m][n] for all M channels and nblocks * VL extended pixels. */
static void fc_direct(const float* x, const int* off, int K, const float* wp,
                      int M, npy_intp nblocks, float* out, npy_intp ldo)
{
    int nt = fc_tile_count(M);
    for (npy_intp nb = 0; nb < nblocks; nb++)
        for (int t = 0; t < nt; t++) {
            int m0 = fc_tile_start(t, M), m1 = fc_tile_start(t + 1, M);
            fc_fwd_table[m1 - m0](x + nb * FC_VL, off, K, wp + (npy_intp)m0 * K,
                                  out + m0 * ldo + nb * FC_VL, ldo);
        }
}

/* The epilogue (fc_epi) of an image's M output planes of n pixels */
static void fc_epilogue(const fc_epi* e, float* y, npy_intp M, npy_intp n)
{
    if (!e || (!e->bias && !e->relu))
        return;
    for (npy_intp m = 0; m < M; m++) {
        const float b = e->bias ? e->bias[m] : 0.f;
        float* __restrict ym = y + m * n;
        if (e->relu)
            for (npy_intp i = 0; i < n; i++) {
                const float v = ym[i] + b;
                ym[i] = v > 0 ? v : 0;
            }
        else
            for (npy_intp i = 0; i < n; i++)
                ym[i] += b;
    }
}
#endif

#ifndef FC_WINOGRAD
# define FC_WINOGRAD 0
#endif
#if FC_WINOGRAD
/* c_code/winograd.c, which comes after this file: fc_wino_applies gives
   the tile size N for a layer, 0 where the direct code runs */
static int fc_wino_applies(npy_intp C, npy_intp M, npy_intp kh, npy_intp kw,
                           int sh, int sw, npy_intp Ho, npy_intp Wo);
static int fc_wino_correlate(int N, int K, const float* X, const float* w,
                             npy_intp sm, npy_intp sc, npy_intp si,
                             npy_intp sj, float* Y, npy_intp B, npy_intp C,
                             npy_intp H, npy_intp W, npy_intp M, npy_intp pt,
                             npy_intp pl, npy_intp Ho, npy_intp Wo,
                             const fc_epi* e);
static int fc_wino_gradweights(int N, int K, const float* X,
                               const float* dY, float* dW, npy_intp B,
                               npy_intp C, npy_intp H, npy_intp W, npy_intp M,
                               npy_intp pt, npy_intp pl, npy_intp Ho,
                               npy_intp Wo);
#endif

#ifdef FC_OP_FORWARD
/* Y (B, M, Ho, Wo) = correlation of X (B, C, H, W) with Wt (M, C, kh, kw). */
static int fc_forward_direct(const float* X, const float* Wt, float* Y,
                             npy_intp B, npy_intp C, npy_intp H, npy_intp W,
                             npy_intp M, npy_intp kh, npy_intp kw, int sh,
                             int sw, npy_intp pt, npy_intp pl, npy_intp Ho,
                             npy_intp Wo, const fc_epi* e)
{
    fc_fwd_table_fill<FC_MR>::fill(fc_fwd_table);
    const npy_intp Hq = Ho + (kh - 1) / sh, Wq = Wo + (kw - 1) / sw;
    const npy_intp plane_len = C * sh * sw * Hq * Wq + Wq + 2 * FC_VL;
    const npy_intp NB = (Ho * Wq + FC_VL - 1) / FC_VL, ldo = NB * FC_VL;
    const int K = (int)(C * kh * kw);
    int* off = (int*)malloc(sizeof(int) * K);
    npy_intp* sk = (npy_intp*)malloc(sizeof(npy_intp) * K);
    float* wp = fc_alloc(M * K);
    int failed = !off || !sk || !wp;
    if (!failed) {
        for (npy_intp c = 0; c < C; c++)
            for (npy_intp i = 0; i < kh; i++)
                for (npy_intp j = 0; j < kw; j++) {
                    npy_intp k = (c * kh + i) * kw + j;
                    npy_intp plane = (c * sh + i % sh) * sw + j % sw;
                    off[k] = (int)((plane * Hq + i / sh) * Wq + j / sw);
                    sk[k] = k;
                }
        fc_pack_weights(Wt, K, sk, (int)M, K, wp);
        #pragma omp parallel
        {
            float* Q = fc_alloc(plane_len);
            float* tmp = fc_alloc(M * ldo);
            if (!Q || !tmp) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (npy_intp b = 0; b < B; b++) {
                if (!Q || !tmp)
                    continue;
                fc_planes(X + b * C * H * W, C, H, W, sh, sw, pt, pl, Hq, Wq, Q);
                fc_direct(Q, off, K, wp, (int)M, NB, tmp, ldo);
                float* Yb = Y + b * M * Ho * Wo;
                for (npy_intp m = 0; m < M; m++)
                    for (npy_intp a = 0; a < Ho; a++)
                        memcpy(Yb + (m * Ho + a) * Wo, tmp + m * ldo + a * Wq,
                               sizeof(float) * Wo);
                fc_epilogue(e, Yb, M, Ho * Wo);
            }
            fc_free(Q);
            fc_free(tmp);
        }
    }
    free(off);
    free(sk);
    fc_free(wp);
    return failed ? -1 : 0;
}

static int fc_forward(const float* X, const float* Wt, float* Y, npy_intp B,
                      npy_intp C, npy_intp H, npy_intp W, npy_intp M,
                      npy_intp kh, npy_intp kw, int sh, int sw, npy_intp pt,
                      npy_intp pl, npy_intp Ho, npy_intp Wo, const fc_epi* e)
{
#if FC_WINOGRAD
    const int N = fc_wino_applies(C, M, kh, kw, sh, sw, Ho, Wo);
    if (N)
        return fc_wino_correlate(N, (int)kh, X, Wt, C * kh * kw, kh * kw, kw,
                                 1, Y, B, C, H, W, M, pt, pl, Ho, Wo, e);
#endif
    return fc_forward_direct(X, Wt, Y, B, C, H, W, M, kh, kw, sh, sw, pt, pl,
                             Ho, Wo, e);
}
#endif

#ifdef FC_OP_GRADINPUTS
/* dX (B, C, H, W) = gradient of the correlation wrt its input, given
   Wt (M, C, kh, kw) and dY (B, M, Ho, Wo). */
static int fc_gradinputs_direct(const float* Wt, const float* dY,
                                float* dX, npy_intp B, npy_intp C, npy_intp H,
                                npy_intp W, npy_intp M, npy_intp kh,
                                npy_intp kw, int sh, int sw, npy_intp pt,
                                npy_intp pl, npy_intp Ho, npy_intp Wo,
                                const fc_epi* e)
{
    fc_fwd_table_fill<FC_MR>::fill(fc_fwd_table);
    /* dX[c][y][x] gets
           w[m][c][i][j] * dY[m][(y + pt - i) / sh][(x + pl - j) / sw]
       for the taps where both divisions are exact. For y = sh * a + py the
       taps are i = (py + pt) mod sh, + sh, ..., and the dY row is a + di with
       di = (py + pt - i) / sh. dY is padded by PT rows above and PL columns
       left so that every row read is >= 0. */
    npy_intp di_min = 0, dj_min = 0, any = 0;
    npy_intp read_r = Ho, read_q = Wo;  /* rows / columns of dY read, + 1 */
    for (int py = 0; py < sh; py++)
        for (npy_intp i = 0; i < kh; i++) {
            if ((py + pt - i) % sh)
                continue;
            npy_intp di = (py + pt - i) / sh;
            npy_intp Ha = H > py ? (H - py + sh - 1) / sh : 0;
            if (!any || di < di_min) di_min = di;
            any = 1;
            if (Ha + di > read_r) read_r = Ha + di;
        }
    any = 0;
    for (int px = 0; px < sw; px++)
        for (npy_intp j = 0; j < kw; j++) {
            if ((px + pl - j) % sw)
                continue;
            npy_intp dj = (px + pl - j) / sw;
            npy_intp Wa = W > px ? (W - px + sw - 1) / sw : 0;
            if (!any || dj < dj_min) dj_min = dj;
            any = 1;
            if (Wa + dj > read_q) read_q = Wa + dj;
        }
    const npy_intp PT = di_min < 0 ? -di_min : 0, PL = dj_min < 0 ? -dj_min : 0;
    const npy_intp Hq = PT + read_r, Wq = PL + read_q;
    const npy_intp plane_len = M * Hq * Wq + Wq + 2 * FC_VL;
    const npy_intp Ha0 = (H + sh - 1) / sh;
    const npy_intp ldo = ((Ha0 * Wq + FC_VL - 1) / FC_VL) * FC_VL;
    const int nphase = sh * sw;
    const npy_intp KK = M * kh * kw;
    /* per phase: its taps' offsets and its packed weights */
    int* off = (int*)malloc(sizeof(int) * (KK > 0 ? KK : 1));
    npy_intp* sk = (npy_intp*)malloc(sizeof(npy_intp) * (KK > 0 ? KK : 1));
    float* wp = fc_alloc(KK * C);
    int* kstart = (int*)malloc(sizeof(int) * (nphase + 1));
    int failed = !off || !sk || !wp || !kstart;
    if (!failed) {
        int k = 0;
        for (int py = 0; py < sh; py++)
            for (int px = 0; px < sw; px++) {
                int p = py * sw + px;
                kstart[p] = k;
                for (npy_intp m = 0; m < M; m++)
                    for (npy_intp i = 0; i < kh; i++) {
                        if ((py + pt - i) % sh)
                            continue;
                        npy_intp di = (py + pt - i) / sh;
                        for (npy_intp j = 0; j < kw; j++) {
                            if ((px + pl - j) % sw)
                                continue;
                            npy_intp dj = (px + pl - j) / sw;
                            off[k] = (int)((m * Hq + di + PT) * Wq + dj + PL);
                            /* w[m][c][i][j] as element (c, k) */
                            sk[k] = ((m * C) * kh + i) * kw + j;
                            k++;
                        }
                    }
                fc_pack_weights(Wt, kh * kw, sk + kstart[p], (int)C,
                                k - kstart[p], wp + (npy_intp)kstart[p] * C);
            }
        kstart[nphase] = k;
        #pragma omp parallel
        {
            float* Q = fc_alloc(plane_len);
            float* tmp = fc_alloc(C * ldo);
            if (!Q || !tmp) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (npy_intp b = 0; b < B; b++) {
                if (!Q || !tmp)
                    continue;
                fc_planes(dY + b * M * Ho * Wo, M, Ho, Wo, 1, 1, PT, PL, Hq, Wq, Q);
                float* dXb = dX + b * C * H * W;
                for (int py = 0; py < sh; py++)
                    for (int px = 0; px < sw; px++) {
                        int p = py * sw + px, Kp = kstart[p + 1] - kstart[p];
                        npy_intp Ha = H > py ? (H - py + sh - 1) / sh : 0;
                        npy_intp Wa = W > px ? (W - px + sw - 1) / sw : 0;
                        if (Ha == 0 || Wa == 0)
                            continue;
                        if (Kp == 0) {  /* no tap reaches this phase */
                            for (npy_intp c = 0; c < C; c++)
                                for (npy_intp a = 0; a < Ha; a++) {
                                    float* d = dXb + (c * H + sh * a + py) * W;
                                    for (npy_intp q = 0; q < Wa; q++)
                                        d[sw * q + px] = 0.f;
                                }
                            continue;
                        }
                        npy_intp nb = (Ha * Wq + FC_VL - 1) / FC_VL;
                        fc_direct(Q, off + kstart[p], Kp,
                                  wp + (npy_intp)kstart[p] * C, (int)C, nb,
                                  tmp, ldo);
                        for (npy_intp c = 0; c < C; c++)
                            for (npy_intp a = 0; a < Ha; a++) {
                                const float* __restrict s =
                                    tmp + c * ldo + a * Wq;
                                float* __restrict d =
                                    dXb + (c * H + sh * a + py) * W + px;
                                if (sw == 1)
                                    memcpy(d, s, sizeof(float) * Wa);
                                else
                                    for (npy_intp q = 0; q < Wa; q++)
                                        d[sw * q] = s[q];
                            }
                    }
                fc_epilogue(e, dXb, C, H * W);
            }
            fc_free(Q);
            fc_free(tmp);
        }
    }
    free(off);
    free(sk);
    fc_free(wp);
    free(kstart);
    return failed ? -1 : 0;
}

static int fc_gradinputs(const float* Wt, const float* dY, float* dX,
                         npy_intp B, npy_intp C, npy_intp H, npy_intp W,
                         npy_intp M, npy_intp kh, npy_intp kw, int sh, int sw,
                         npy_intp pt, npy_intp pl, npy_intp Ho, npy_intp Wo,
                         const fc_epi* e)
{
#if FC_WINOGRAD
    /* the stride-1 correlation of dY, padded by kh - 1 - pt and
       kw - 1 - pl, with the flipped filters, input and output channels
       swapped */
    const int N = fc_wino_applies(M, C, kh, kw, sh, sw, H, W);
    if (N && pt <= kh - 1 && pl <= kw - 1)
        return fc_wino_correlate(N, (int)kh, dY, Wt + kh * kw - 1, kh * kw,
                                 C * kh * kw, -kw, -1, dX, B, M, Ho, Wo, C,
                                 kh - 1 - pt, kw - 1 - pl, H, W, e);
#endif
    return fc_gradinputs_direct(Wt, dY, dX, B, C, H, W, M, kh, kw, sh, sw,
                                pt, pl, Ho, Wo, e);
}
#endif

#ifdef FC_OP_GRADWEIGHTS
/* dst[n][m] = src[m][n] for m < M, n < N; dst rows are Mp apart (Mp a
   multiple of FC_VL, >= M), and their lanes M..Mp are 0 or left alone. */
static void fc_transpose(const float* __restrict src, npy_intp M, npy_intp N,
                         npy_intp Mp, float* __restrict dst)
{
    npy_intp n0 = 0;
#if defined(__GNUC__) && !defined(__clang__)
    /* VL x VL blocks in registers: log2(VL) rounds of swapping the
       off-diagonal h x h blocks of every 2h x 2h block */
    typedef int fc_iv __attribute__((vector_size(FC_VL * 4)));
    union { fc_iv v; int i[FC_VL]; } lo[8], hi[8];
    int nstage = 0;
    for (int h = FC_VL / 2; h >= 1; h /= 2, nstage++)
        for (int l = 0; l < FC_VL; l++) {
            lo[nstage].i[l] = (l & h) ? FC_VL + l - h : l;
            hi[nstage].i[l] = (l & h) ? FC_VL + l : l + h;
        }
    {
        for (; n0 + FC_VL <= N; n0 += FC_VL)
            for (npy_intp m0 = 0; m0 < M; m0 += FC_VL) {
                fc_v r[FC_VL];
                for (int i = 0; i < FC_VL; i++)  /* zeros past M: Mp lanes */
                    r[i] = m0 + i < M ? fc_load(src + (m0 + i) * N + n0) : fc_v{};
                int stage = 0;
                for (int h = FC_VL / 2; h >= 1; h /= 2, stage++)
                    for (int i = 0; i < FC_VL; i++)
                        if (!(i & h)) {
                            fc_v a = r[i], b = r[i + h];
                            r[i] = __builtin_shuffle(a, b, lo[stage].v);
                            r[i + h] = __builtin_shuffle(a, b, hi[stage].v);
                        }
                for (int i = 0; i < FC_VL; i++)
                    fc_store(dst + (n0 + i) * Mp + m0, r[i]);
            }
    }
#endif
    for (npy_intp n = n0; n < N; n++)
        for (npy_intp m = 0; m < M; m++)
            dst[n * Mp + m] = src[m * N + n];
}

/* KR taps x MVT vectors of output channels, summed over one image:
   acc[k][m] += sum_{a < Ho, b < Wo}
                    x[off[k] + a * Wq + b] * dyt[(a * Wo + b) * Mp + m].
   U pixels a step, so that each tap's address is used U times. */
template <int KR, int MVT, int U>
static void fc_gw_tile(const float* __restrict x, const int* __restrict off,
                       const float* __restrict dyt, npy_intp Ho, npy_intp Wo,
                       npy_intp Wq, npy_intp Mp, float* __restrict acc_out)
{
    fc_v acc[KR][MVT];
    for (int k = 0; k < KR; k++)
        for (int v = 0; v < MVT; v++)
            acc[k][v] = fc_v{};
    for (npy_intp a = 0; a < Ho; a++) {
        const float* __restrict xr = x + a * Wq;
        const float* __restrict dr = dyt + a * Wo * Mp;
        npy_intp b = 0;
        for (; b + U <= Wo; b += U) {
            fc_v d[U][MVT];
            for (int u = 0; u < U; u++)
                for (int v = 0; v < MVT; v++)
                    d[u][v] = fc_load(dr + (b + u) * Mp + v * FC_VL);
            for (int k = 0; k < KR; k++) {
                const float* __restrict xk = xr + off[k] + b;
                for (int u = 0; u < U; u++) {
                    const float s = xk[u];
                    for (int v = 0; v < MVT; v++)
                        acc[k][v] += s * d[u][v];
                }
            }
        }
        for (; b < Wo; b++) {
            fc_v d[MVT];
            for (int v = 0; v < MVT; v++)
                d[v] = fc_load(dr + b * Mp + v * FC_VL);
            for (int k = 0; k < KR; k++) {
                const float s = xr[off[k] + b];
                for (int v = 0; v < MVT; v++)
                    acc[k][v] += s * d[v];
            }
        }
    }
    for (int k = 0; k < KR; k++)
        for (int v = 0; v < MVT; v++) {
            float* p = acc_out + k * Mp + v * FC_VL;
            fc_store(p, fc_load(p) + acc[k][v]);
        }
}

/* Per number of channel vectors MVT: at most FC_KR<MVT> taps a tile and
   FC_U<MVT> pixels a step, so that the KR * MVT accumulators, U * MVT
   loaded vectors and a broadcast fit in the vector registers. */
#if FC_VL >= 16
# define FC_KR1 16
# define FC_U1 4
# define FC_KR2 10
# define FC_U2 2
# define FC_KR3 8
# define FC_U3 1
# define FC_KR4 6
# define FC_U4 1
#else
# define FC_KR1 8
# define FC_U1 4
# define FC_KR2 4
# define FC_U2 2
# define FC_KR3 3
# define FC_U3 1
# define FC_KR4 2
# define FC_U4 1
#endif
#define FC_KRMAX 16

typedef void (*fc_gw_fn)(const float*, const int*, const float*, npy_intp,
                         npy_intp, npy_intp, npy_intp, float*);

template <int KR, int MVT, int U>
struct fc_gw_table_fill {
    static void fill(fc_gw_fn* t)
    {
        t[KR] = fc_gw_tile<KR, MVT, U>;
        fc_gw_table_fill<KR - 1, MVT, U>::fill(t);
    }
};
template <int MVT, int U>
struct fc_gw_table_fill<0, MVT, U> {
    static void fill(fc_gw_fn* t) { t[0] = NULL; }
};

/* fc_gw_table[mvt][kr] */
static fc_gw_fn fc_gw_table[5][FC_KRMAX + 1];
static const int fc_krmax[5] = {0, FC_KR1, FC_KR2, FC_KR3, FC_KR4};

static void fc_gw_table_init(void)
{
    fc_gw_table_fill<FC_KR1, 1, FC_U1>::fill(fc_gw_table[1]);
#if FC_MVT >= 2
    fc_gw_table_fill<FC_KR2, 2, FC_U2>::fill(fc_gw_table[2]);
#endif
#if FC_MVT >= 3
    fc_gw_table_fill<FC_KR3, 3, FC_U3>::fill(fc_gw_table[3]);
#endif
#if FC_MVT >= 4
    fc_gw_table_fill<FC_KR4, 4, FC_U4>::fill(fc_gw_table[4]);
#endif
}

/* The weight gradient for few output channels (M well below a multiple of
   VL, e.g. GCM's 10 class maps): vectorised over pixels instead. A tile
   keeps MR channels x KR taps of VL-pixel partial sums over the extended
   grid of an image, where dY is 0 in the extra columns:
   acc[m][k][l] += sum_nb dy[m][nb*VL + l] * x[off[k] + nb*VL + l]. */
template <int MR, int KR>
static void fc_gwp_tile(const float* __restrict x, const int* __restrict off,
                        const float* __restrict dy, npy_intp ldd,
                        npy_intp nblocks, float* __restrict acc_out,
                        npy_intp mstride)
{
    fc_v acc[MR][KR];
    for (int m = 0; m < MR; m++)
        for (int k = 0; k < KR; k++)
            acc[m][k] = fc_v{};
    for (npy_intp nb = 0; nb < nblocks; nb++) {
        const npy_intp n = nb * FC_VL;
        fc_v d[MR];
        for (int m = 0; m < MR; m++)
            d[m] = fc_load(dy + m * ldd + n);
        for (int k = 0; k < KR; k++) {
            const fc_v v = fc_load(x + off[k] + n);
            for (int m = 0; m < MR; m++)
                acc[m][k] += d[m] * v;
        }
    }
    for (int m = 0; m < MR; m++)
        for (int k = 0; k < KR; k++) {
            float* p = acc_out + m * mstride + k * FC_VL;
            fc_store(p, fc_load(p) + acc[m][k]);
        }
}

#ifndef FC_GW_PIXELS_MAX
# define FC_GW_PIXELS_MAX 4096
#endif

/* channels per tile, and taps per tile for MR channels */
#if FC_VL >= 16
# define FC_PMR 6
static const int fc_pkr[FC_PMR + 1] = {0, 12, 12, 8, 6, 5, 4};
#else
# define FC_PMR 4
static const int fc_pkr[FC_PMR + 1] = {0, 8, 6, 4, 3};
#endif
#define FC_PKRMAX 12

typedef void (*fc_gwp_fn)(const float*, const int*, const float*, npy_intp,
                          npy_intp, float*, npy_intp);

template <int MR, int KR>
struct fc_gwp_table_fill {
    static void fill(fc_gwp_fn* t)
    {
        t[KR] = fc_gwp_tile<MR, KR>;
        fc_gwp_table_fill<MR, KR - 1>::fill(t);
    }
};
template <int MR>
struct fc_gwp_table_fill<MR, 0> {
    static void fill(fc_gwp_fn* t) { t[0] = NULL; }
};

/* fc_gwp_table[mr][kr] for kr <= fc_pkr[mr] */
static fc_gwp_fn fc_gwp_table[FC_PMR + 1][FC_PKRMAX + 1];

static void fc_gwp_table_init(void)
{
#if FC_VL >= 16
    fc_gwp_table_fill<1, 12>::fill(fc_gwp_table[1]);
    fc_gwp_table_fill<2, 12>::fill(fc_gwp_table[2]);
    fc_gwp_table_fill<3, 8>::fill(fc_gwp_table[3]);
    fc_gwp_table_fill<4, 6>::fill(fc_gwp_table[4]);
    fc_gwp_table_fill<5, 5>::fill(fc_gwp_table[5]);
    fc_gwp_table_fill<6, 4>::fill(fc_gwp_table[6]);
#else
    fc_gwp_table_fill<1, 8>::fill(fc_gwp_table[1]);
    fc_gwp_table_fill<2, 6>::fill(fc_gwp_table[2]);
    fc_gwp_table_fill<3, 4>::fill(fc_gwp_table[3]);
    fc_gwp_table_fill<4, 3>::fill(fc_gwp_table[4]);
#endif
}

/* The pixel-vectorised weight gradient (see fc_gwp_tile). */
static int fc_gradweights_pixels(
    const float* X, const float* dY, float* dW, npy_intp B, npy_intp C,
    npy_intp H, npy_intp W, npy_intp M, npy_intp kh, npy_intp kw, int sh,
    int sw, npy_intp pt, npy_intp pl, npy_intp Ho, npy_intp Wo,
    npy_intp Hq, npy_intp Wq, const int* off)
{
    const npy_intp plane_len = C * sh * sw * Hq * Wq + Wq + 2 * FC_VL;
    const npy_intp K = C * kh * kw;
    const npy_intp NB = (Ho * Wq + FC_VL - 1) / FC_VL, ldd = NB * FC_VL;
    const npy_intp per_thread = M * K * FC_VL;
    const int nmt = (int)((M + FC_PMR - 1) / FC_PMR);
    fc_gwp_table_init();
    float* acc = fc_alloc(FC_CHUNKS * per_thread);
    int failed = !acc;
    if (!failed) {
        #pragma omp parallel
        {
            float* Q = fc_alloc(plane_len);
            float* dye = fc_alloc(M * ldd);  /* extra columns stay 0 */
            if (!Q || !dye) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (int j = 0; j < FC_CHUNKS; j++)
            for (npy_intp b = j * B / FC_CHUNKS; b < (j + 1) * B / FC_CHUNKS; b++) {
                float* my = acc + j * per_thread;
                if (!Q || !dye)
                    continue;
                fc_planes(X + b * C * H * W, C, H, W, sh, sw, pt, pl, Hq, Wq, Q);
                const float* dYb = dY + b * M * Ho * Wo;
                for (npy_intp m = 0; m < M; m++)
                    for (npy_intp a = 0; a < Ho; a++)
                        memcpy(dye + m * ldd + a * Wq, dYb + (m * Ho + a) * Wo,
                               sizeof(float) * Wo);
                for (int t = 0; t < nmt; t++) {
                    npy_intp m0 = t * M / nmt, m1 = (t + 1) * M / nmt;
                    int mr = (int)(m1 - m0), krmax = fc_pkr[mr];
                    npy_intp nk = (K + krmax - 1) / krmax;
                    for (npy_intp u = 0; u < nk; u++) {
                        npy_intp k0 = u * K / nk, k1 = (u + 1) * K / nk;
                        fc_gwp_table[mr][k1 - k0](
                            Q, off + k0, dye + m0 * ldd, ldd, NB,
                            my + (m0 * K + k0) * FC_VL, K * FC_VL);
                    }
                }
            }
            fc_free(Q);
            fc_free(dye);
        }
    }
    if (!failed) {
        #pragma omp parallel for schedule(static)
        for (npy_intp mk = 0; mk < M * K; mk++) {
            float s = 0.f;
            for (int t = 0; t < FC_CHUNKS; t++) {
                const float* p = acc + t * per_thread + mk * FC_VL;
                for (int l = 0; l < FC_VL; l++)
                    s += p[l];
            }
            dW[mk] = s;
        }
    }
    fc_free(acc);
    return failed ? -1 : 0;
}

/* dW (M, C, kh, kw) = gradient of the correlation wrt the filters, given
   X (B, C, H, W) and dY (B, M, Ho, Wo). */
static int fc_gradweights_direct(const float* X, const float* dY,
                                 float* dW, npy_intp B, npy_intp C,
                                 npy_intp H, npy_intp W, npy_intp M,
                                 npy_intp kh, npy_intp kw, int sh, int sw,
                                 npy_intp pt, npy_intp pl, npy_intp Ho,
                                 npy_intp Wo)
{
    const npy_intp Hq = Ho + (kh - 1) / sh, Wq = Wo + (kw - 1) / sw;
    const npy_intp plane_len = C * sh * sw * Hq * Wq + Wq + 2 * FC_VL;
    const npy_intp K = C * kh * kw;
    const npy_intp MV = (M + FC_VL - 1) / FC_VL, Mp = MV * FC_VL;
    const npy_intp N = Ho * Wo;
    int* off = (int*)malloc(sizeof(int) * (K > 0 ? K : 1));
    if (!off)
        return -1;
    for (npy_intp c = 0; c < C; c++)
        for (npy_intp i = 0; i < kh; i++)
            for (npy_intp j = 0; j < kw; j++) {
                npy_intp plane = (c * sh + i % sh) * sw + j % sw;
                off[(c * kh + i) * kw + j] =
                    (int)((plane * Hq + i / sh) * Wq + j / sw);
            }
    /* Vectorised over channels, MV * VL lanes carry the M channels; over
       pixels, NB * VL lanes carry the Ho * Wo pixels. The second when it
       wastes clearly less, and its per-thread sums (M * K * VL floats) stay
       in the L2 cache. */
    const double lanes_used = (double)M / Mp;
    const double pixels_used =
        (double)N / (((Ho * Wq + FC_VL - 1) / FC_VL) * FC_VL);
    if (pixels_used > 1.1 * lanes_used && M * K <= FC_GW_PIXELS_MAX) {
        int r = fc_gradweights_pixels(X, dY, dW, B, C, H, W, M, kh, kw, sh, sw,
                                      pt, pl, Ho, Wo, Hq, Wq, off);
        free(off);
        return r;
    }
    /* channel-vector groups of at most FC_MVT vectors, nearly equal */
    const int ng = (int)((MV + FC_MVT - 1) / FC_MVT);
    fc_gw_table_init();
    float* acc = fc_alloc(FC_CHUNKS * K * Mp);
    int failed = !acc;
    if (!failed) {
        #pragma omp parallel
        {
            float* Q = fc_alloc(plane_len);
            float* dyt = fc_alloc(N * Mp);  /* lanes >= M stay 0 */
            if (!Q || !dyt) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (int j = 0; j < FC_CHUNKS; j++)
            for (npy_intp b = j * B / FC_CHUNKS; b < (j + 1) * B / FC_CHUNKS; b++) {
                float* my = acc + j * K * Mp;
                if (!Q || !dyt)
                    continue;
                fc_planes(X + b * C * H * W, C, H, W, sh, sw, pt, pl, Hq, Wq, Q);
                fc_transpose(dY + b * M * N, M, N, Mp, dyt);
                for (int g = 0; g < ng; g++) {
                    npy_intp v0 = (g * MV) / ng, v1 = ((g + 1) * MV) / ng;
                    int mvt = (int)(v1 - v0);
                    /* taps in nearly equal tiles of at most fc_krmax[mvt] */
                    npy_intp nk = (K + fc_krmax[mvt] - 1) / fc_krmax[mvt];
                    for (npy_intp t = 0; t < nk; t++) {
                        npy_intp k0 = t * K / nk, k1 = (t + 1) * K / nk;
                        fc_gw_table[mvt][k1 - k0](
                            Q, off + k0, dyt + v0 * FC_VL, Ho, Wo, Wq, Mp,
                            my + k0 * Mp + v0 * FC_VL);
                    }
                }
            }
            fc_free(Q);
            fc_free(dyt);
        }
    }
    if (!failed) {
        #pragma omp parallel for schedule(static)
        for (npy_intp m = 0; m < M; m++)
            for (npy_intp k = 0; k < K; k++) {
                float s = 0.f;
                for (int t = 0; t < FC_CHUNKS; t++)
                    s += acc[(t * K + k) * Mp + m];
                dW[m * K + k] = s;
            }
    }
    free(off);
    fc_free(acc);
    return failed ? -1 : 0;
}

static int fc_gradweights(const float* X, const float* dY, float* dW,
                          npy_intp B, npy_intp C, npy_intp H, npy_intp W,
                          npy_intp M, npy_intp kh, npy_intp kw, int sh, int sw,
                          npy_intp pt, npy_intp pl, npy_intp Ho, npy_intp Wo)
{
#if FC_WINOGRAD
    const int N = fc_wino_applies(C, M, kh, kw, sh, sw, Ho, Wo);
    if (N)
        return fc_wino_gradweights(N, (int)kh, X, dY, dW, B, C, H, W, M, pt,
                                   pl, Ho, Wo);
#endif
    return fc_gradweights_direct(X, dY, dW, B, C, H, W, M, kh, kw, sh, sw,
                                 pt, pl, Ho, Wo);
}
#endif
