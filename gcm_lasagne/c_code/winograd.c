/* Winograd's minimal filtering F(NxN, 3x3), N = 2 or 4, for the stride-1
 * 3x3 correlations of gcm_lasagne/fastconv.py; appended to fastconv.c,
 * whose planes, vector type and register tiles it uses.
 *
 * Written for this project from Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks" (2016). An N x N block of outputs (a
 * "tile") is A^T [(G g G^T) . (B^T d B)] A, d the (N+2) x (N+2) input
 * window of the tile, g the 3x3 filter, . the elementwise product. With
 * A = N + 2 the transform size and P = A * A positions, each position p
 * summed over the input channels is a matrix product,
 *     Z[p][m][t] = sum_c U[p][m][c] V[p][c][t]   over the tiles t,
 * P multiply-adds per tile and channel pair where the direct correlation
 * does 9 N^2: 16 for 36 (N = 2, 2.25x fewer), 36 for 144 (N = 4, 4x). The
 * products run on fastconv's register tiles; the transforms are additions
 * and small constant multiples, computed on contiguous rows of tiles (the
 * image split into N column phases, so that tile q's window starts at
 * index q of every phase). The matrices, points 0, +-1 (N = 2) and 0, +-1,
 * +-2 (N = 4), are in fc_wt<N> below.
 *
 * The weight gradient goes through the same transforms: tile t gives
 * A^T (U . V_t) A, so dL/dU = sum_t V_t . (A dY_t A^T) and
 * dL/dg = G^T (dL/dU) G.
 */

#if FC_WINOGRAD

/* Where Winograd is used, and with which tile: 3x3 or 5x5 filters,
   stride 1, enough channels in and out and a large enough output. The
   transforms cost in proportion to the channels in (input) or out
   (output) alone, the products to both, so with few channels the
   transforms eat the gain, and small images waste much of each vector of
   tiles. The thresholds and tile sizes were set by
   benchmarks/winograd_layers.py (measurements in docs/performance.md).
   Returns the tile side N, or 0 for the direct code. */
#ifndef FC_WINO_MIN_CHANNELS
# define FC_WINO_MIN_CHANNELS 12
#endif
#ifndef FC_WINO5_MIN_CHANNELS  /* 5x5: GCM's layer 15 has 10 out */
# define FC_WINO5_MIN_CHANNELS 8
#endif
#ifndef FC_WINO_MIN_SIZE
# define FC_WINO_MIN_SIZE 8
#endif
/* 3x3 outputs at least this wide take 4x4 tiles (0: never); 5x5 filters
   take 2x2 tiles */
#ifndef FC_WINO4_MIN_SIZE
# define FC_WINO4_MIN_SIZE 16
#endif
static int fc_wino_applies(npy_intp C, npy_intp M, npy_intp kh, npy_intp kw,
                           int sh, int sw, npy_intp Ho, npy_intp Wo)
{
    const npy_intp least = kh == 5 ? FC_WINO5_MIN_CHANNELS
                                   : FC_WINO_MIN_CHANNELS;
    if (!(kh == kw && (kh == 3 || kh == 5) && sh == 1 && sw == 1
          && C >= least && M >= least
          && Ho >= FC_WINO_MIN_SIZE && Wo >= FC_WINO_MIN_SIZE))
        return 0;
    if (kh == 3 && FC_WINO4_MIN_SIZE > 0 && Ho >= FC_WINO4_MIN_SIZE
            && Wo >= FC_WINO4_MIN_SIZE)
        return 4;
    return 2;
}

/* L floats at once (L = FC_VL, or 4 for rows of fewer tiles); GCC
   vectors. */
template <int L>
struct fc_wv {
    typedef float v __attribute__((vector_size(L * 4)));
    typedef float vu __attribute__((vector_size(L * 4), aligned(4), may_alias));
    static inline v load(const float* p) { return *(const vu*)p; }
    static inline void store(float* p, v x) { *(vu*)p = x; }
};

/* The one-dimensional transforms of F(N, 3), on floats or vectors:
   input  u = B^T d (A values), output o = A^T s (A to N),
   filter t = G g (3 to A), output gradient z = A y (N to A),
   filter gradient w = G^T du (A to 3). The 2-d transforms apply them to
   the rows, then to the columns. */
template <int N, int K> struct fc_wt;

template <>
struct fc_wt<2, 3> {
    enum { A = 4 };
    template <typename T>
    static inline void input(const T* d, T* u)
    {
        u[0] = d[0] - d[2];
        u[1] = d[1] + d[2];
        u[2] = d[2] - d[1];
        u[3] = d[1] - d[3];
    }
    template <typename T>
    static inline void output(const T* s, T* o)
    {
        o[0] = s[0] + s[1] + s[2];
        o[1] = s[1] - s[2] - s[3];
    }
    static inline void filter(const float* g, float* t)
    {
        t[0] = g[0];
        t[1] = 0.5f * (g[0] + g[1] + g[2]);
        t[2] = 0.5f * (g[0] - g[1] + g[2]);
        t[3] = g[2];
    }
    template <typename T>
    static inline void outgrad(const T* y, T* z)
    {
        z[0] = y[0];
        z[1] = y[0] + y[1];
        z[2] = y[0] - y[1];
        z[3] = -y[1];
    }
    static inline void filtergrad(const float* du, float* w)
    {
        w[0] = du[0] + 0.5f * (du[1] + du[2]);
        w[1] = 0.5f * (du[1] - du[2]);
        w[2] = 0.5f * (du[1] + du[2]) + du[3];
    }
};

template <>
struct fc_wt<4, 3> {
    enum { A = 6 };
    template <typename T>
    static inline void input(const T* d, T* u)
    {
        const T a = d[4] - 4.f * d[2], b = d[3] - 4.f * d[1];
        const T c = d[4] - d[2], e = 2.f * (d[3] - d[1]);
        u[0] = 4.f * d[0] - 5.f * d[2] + d[4];
        u[1] = a + b;
        u[2] = a - b;
        u[3] = c + e;
        u[4] = c - e;
        u[5] = 4.f * d[1] - 5.f * d[3] + d[5];
    }
    template <typename T>
    static inline void output(const T* s, T* o)
    {
        const T p12 = s[1] + s[2], m12 = s[1] - s[2];
        const T p34 = s[3] + s[4], m34 = s[3] - s[4];
        o[0] = s[0] + p12 + p34;
        o[1] = m12 + 2.f * m34;
        o[2] = p12 + 4.f * p34;
        o[3] = m12 + 8.f * m34 + s[5];
    }
    static inline void filter(const float* g, float* t)
    {
        t[0] = g[0] / 4.f;
        t[1] = -(g[0] + g[1] + g[2]) / 6.f;
        t[2] = -(g[0] - g[1] + g[2]) / 6.f;
        t[3] = g[0] / 24.f + g[1] / 12.f + g[2] / 6.f;
        t[4] = g[0] / 24.f - g[1] / 12.f + g[2] / 6.f;
        t[5] = g[2];
    }
    template <typename T>
    static inline void outgrad(const T* y, T* z)
    {
        const T p02 = y[0] + y[2], p13 = y[1] + y[3];
        const T q02 = y[0] + 4.f * y[2], q13 = 2.f * y[1] + 8.f * y[3];
        z[0] = y[0];
        z[1] = p02 + p13;
        z[2] = p02 - p13;
        z[3] = q02 + q13;
        z[4] = q02 - q13;
        z[5] = y[3];
    }
    static inline void filtergrad(const float* du, float* w)
    {
        w[0] = du[0] / 4.f - (du[1] + du[2]) / 6.f + (du[3] + du[4]) / 24.f;
        w[1] = (du[2] - du[1]) / 6.f + (du[3] - du[4]) / 12.f;
        w[2] = (du[3] + du[4] - du[1] - du[2]) / 6.f + du[5];
    }
};

/* F(2, 5): the points of F(4, 3), so the same B^T */
template <>
struct fc_wt<2, 5> {
    enum { A = 6 };
    template <typename T>
    static inline void input(const T* d, T* u) { fc_wt<4, 3>::input(d, u); }
    template <typename T>
    static inline void output(const T* s, T* o)
    {
        o[0] = s[0] + s[1] + s[2] + s[3] + s[4];
        o[1] = s[1] - s[2] + 2.f * (s[3] - s[4]) + s[5];
    }
    static inline void filter(const float* g, float* t)
    {
        const float even = g[0] + g[2] + g[4], odd = g[1] + g[3];
        const float even2 = g[0] + 4.f * g[2] + 16.f * g[4];
        const float odd2 = 2.f * g[1] + 8.f * g[3];
        t[0] = g[0] / 4.f;
        t[1] = -(even + odd) / 6.f;
        t[2] = -(even - odd) / 6.f;
        t[3] = (even2 + odd2) / 24.f;
        t[4] = (even2 - odd2) / 24.f;
        t[5] = g[4];
    }
    template <typename T>
    static inline void outgrad(const T* y, T* z)
    {
        z[0] = y[0];
        z[1] = y[0] + y[1];
        z[2] = y[0] - y[1];
        z[3] = y[0] + 2.f * y[1];
        z[4] = y[0] - 2.f * y[1];
        z[5] = y[1];
    }
    static inline void filtergrad(const float* du, float* w)
    {
        const float p12 = du[1] + du[2], m21 = du[2] - du[1];
        const float p34 = du[3] + du[4], m34 = du[3] - du[4];
        w[0] = du[0] / 4.f - p12 / 6.f + p34 / 24.f;
        w[1] = m21 / 6.f + m34 / 12.f;
        w[2] = (p34 - p12) / 6.f;
        w[3] = m21 / 6.f + m34 / 3.f;
        w[4] = -p12 / 6.f + 2.f * p34 / 3.f + du[5];
    }
};

/* The geometry of one layer: T tile rows of TW tiles; the image's N
   column phases as planes of Hq x Wq (fc_planes with column stride N);
   blocks of R tile rows (of G images when one image is a block), whose
   transforms are ld apart per channel and ps apart per position. */
struct fc_wgeo {
    npy_intp TH, TW, Hq, Wq, qlen, R, G, ld, psv, psz;
};

/* As few blocks as keep a block's V and Z within FC_WINO_BLOCK_FLOATS (in
   the L2 cache together), of nearly equal size, since the products run on
   whole vectors of tiles; with at least `group_tiles` tiles, several
   small images at once. */
#ifndef FC_WINO_BLOCK_FLOATS
# define FC_WINO_BLOCK_FLOATS 65536
#endif
static fc_wgeo fc_wino_geometry(int N, int K, npy_intp C, npy_intp M,
                                npy_intp Ho, npy_intp Wo, npy_intp group_tiles)
{
    fc_wgeo g;
    const int A = N + K - 1;
    const npy_intp P = A * A;
    g.TH = (Ho + N - 1) / N;
    g.TW = (Wo + N - 1) / N;
    g.Hq = N * g.TH + K - 1;
    g.Wq = g.TW + (A - 1) / N;
    g.qlen = C * N * g.Hq * g.Wq + g.Wq + 2 * FC_VL;
    npy_intp per_row = P * (C + M) * g.TW;
    npy_intp most = FC_WINO_BLOCK_FLOATS / per_row;
    if (most < 1) most = 1;
    npy_intp nblocks = (g.TH + most - 1) / most;
    g.R = (g.TH + nblocks - 1) / nblocks;
    g.G = 1;
    if (g.R == g.TH) {
        npy_intp fit = most / g.TH;
        g.G = group_tiles / (g.TH * g.TW);
        if (g.G > fit) g.G = fit;
        if (g.G < 1) g.G = 1;
    }
    g.ld = ((g.G * g.R * g.TW + FC_VL - 1) / FC_VL) * FC_VL;
    /* one position's block to the next: a cache line more than the block,
       so that the positions of a tile, read or written together, do not
       fall on one set of the L1 cache (as 4 KB apart would) */
    g.psv = C * g.ld + 16;
    g.psz = M * g.ld + 16;
    return g;
}

/* V[p][c][t] = (B^T d_t B)[p] for the tiles of tile rows [r0, r0 + nr)
   of one image (t from 0 at v), from its phase planes Q. */
template <int N, int K, int L>
static void fc_wino_input(const float* __restrict Q, npy_intp C,
                          const fc_wgeo& g, npy_intp r0, npy_intp nr,
                          float* __restrict V)
{
    typedef fc_wt<N, K> WT;
    typedef fc_wv<L> X;
    typedef typename X::v vec;
    const int A = WT::A;
    const npy_intp plane = g.Hq * g.Wq;
    for (npy_intp c = 0; c < C; c++) {
        const float* Qc = Q + c * N * plane;
        for (npy_intp r = 0; r < nr; r++) {
            /* row i, column j of tile q's window: phase j % N, q + j / N */
            const float* rows = Qc + N * (r0 + r) * g.Wq;
            float* __restrict v = V + c * g.ld + r * g.TW;
            npy_intp q = 0;
            for (; q + L <= g.TW; q += L) {
                vec h[A][A], d[A], u[A];
                for (int i = 0; i < A; i++) {
                    for (int j = 0; j < A; j++)
                        d[j] = X::load(rows + (j % N) * plane + i * g.Wq
                                       + j / N + q);
                    WT::input(d, h[i]);
                }
                for (int j = 0; j < A; j++) {
                    for (int i = 0; i < A; i++)
                        d[i] = h[i][j];
                    WT::input(d, u);
                    for (int i = 0; i < A; i++)
                        X::store(v + (i * A + j) * g.psv + q, u[i]);
                }
            }
            for (; q < g.TW; q++) {
                float h[A][A], d[A], u[A];
                for (int i = 0; i < A; i++) {
                    for (int j = 0; j < A; j++)
                        d[j] = rows[(j % N) * plane + i * g.Wq + j / N + q];
                    WT::input(d, h[i]);
                }
                for (int j = 0; j < A; j++) {
                    for (int i = 0; i < A; i++)
                        d[i] = h[i][j];
                    WT::input(d, u);
                    for (int i = 0; i < A; i++)
                        v[(i * A + j) * g.psv + q] = u[i];
                }
            }
        }
    }
}

/* The input transforms of a block: tile rows [r0, r0 + nr) of image b,
   or the whole of images b .. b + gn - 1; the tiles past the block's end
   are zero in V. `planes` fills Q with image b's phase planes. */
template <int N, int K, typename PLANES>
static void fc_wino_input_block(float* Q, npy_intp C, const fc_wgeo& g,
                                npy_intp b, npy_intp gn, npy_intp r0,
                                npy_intp nr, PLANES planes, float* V)
{
    const int P = (N + K - 1) * (N + K - 1);
    const npy_intp n = gn * nr * g.TW;
    for (int p = 0; p < P; p++)
        for (npy_intp c = 0; c < C; c++)
            memset(V + p * g.psv + c * g.ld + n, 0,
                   sizeof(float) * (g.ld - n));
    for (npy_intp k = 0; k < gn; k++) {
        if (r0 == 0)  /* a new image */
            planes(b + k, Q);
        float* v = V + k * nr * g.TW;
        if (g.TW >= FC_VL)
            fc_wino_input<N, K, FC_VL>(Q, C, g, r0, nr, v);
        else
            fc_wino_input<N, K, 4>(Q, C, g, r0, nr, v);
    }
}

#endif

#if FC_WINOGRAD && (defined(FC_OP_FORWARD) || defined(FC_OP_GRADINPUTS))

/* U[p][m][c] = (G g G^T)[p], g(i, j) = w[m sm + c sc + i si + j sj] (the
   strides let the input gradient pass the flipped, transposed filters),
   packed per position p for fc_direct: M x C per p, at wp + p * M * C. */
template <int N, int K>
static int fc_wino_filters(const float* w, npy_intp sm, npy_intp sc,
                           npy_intp si, npy_intp sj, int M, int C, float* wp)
{
    typedef fc_wt<N, K> WT;
    const int A = WT::A, P = A * A;
    npy_intp* sk = (npy_intp*)malloc(sizeof(npy_intp) * (C > 0 ? C : 1));
    float* u = fc_alloc((npy_intp)P * M * C);
    if (!sk || !u) {
        free(sk);
        fc_free(u);
        return -1;
    }
    for (int c = 0; c < C; c++)
        sk[c] = c;
    for (int m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            const float* gm = w + m * sm + c * sc;
            float gi[K], t[K][A], col[K], tt[A];
            for (int j = 0; j < K; j++) {  /* G g: each column of g */
                for (int i = 0; i < K; i++)
                    gi[i] = gm[i * si + j * sj];
                WT::filter(gi, tt);
                for (int i = 0; i < A; i++)
                    t[j][i] = tt[i];
            }
            for (int i = 0; i < A; i++) {  /* (G g) G^T: each row */
                for (int j = 0; j < K; j++)
                    col[j] = t[j][i];
                WT::filter(col, tt);
                for (int j = 0; j < A; j++)
                    u[((npy_intp)(i * A + j) * M + m) * C + c] = tt[j];
            }
        }
    for (int p = 0; p < P; p++)
        fc_pack_weights(u + (npy_intp)p * M * C, C, sk, M, C,
                        wp + (npy_intp)p * M * C);
    free(sk);
    fc_free(u);
    return 0;
}

/* Lanes of N vectors interleaved: out[N * l + k] = in[k][l]. */
template <int L, int N>
static inline void fc_wino_interleave(typename fc_wv<L>::v* in)
{
    typedef typename fc_wv<L>::v vec;
    typedef int ivec __attribute__((vector_size(L * 4)));
    union { ivec v; int i[L]; } lo, hi;
    for (int l = 0; l < L; l++) {
        lo.i[l] = (l % 2) * L + l / 2;
        hi.i[l] = (l % 2) * L + L / 2 + l / 2;
    }
    /* zip k with k + N/2: after log2(N) rounds, in[0..N) hold the lanes
       in the order out wants */
    for (int half = N / 2; half >= 1; half /= 2) {
        vec t[N];
        for (int k = 0; k < N / 2; k++) {
            t[2 * k] = __builtin_shuffle(in[k], in[k + N / 2], lo.v);
            t[2 * k + 1] = __builtin_shuffle(in[k], in[k + N / 2], hi.v);
        }
        for (int k = 0; k < N; k++)
            in[k] = t[k];
    }
}

/* Y rows of M channels (Ho x Wo each) from Z[p][m][t] (= A^T s A per
   tile), for tile rows [r0, r0 + nr). */
template <int N, int K, int L>
static void fc_wino_output(const float* __restrict Z, npy_intp M,
                           const fc_wgeo& g, npy_intp r0, npy_intp nr,
                           float* __restrict Y, npy_intp Ho, npy_intp Wo)
{
    typedef fc_wt<N, K> WT;
    typedef fc_wv<L> X;
    typedef typename X::v vec;
    const int A = WT::A;
    const npy_intp full = Wo / N;  /* tiles whose N columns are kept */
    for (npy_intp m = 0; m < M; m++)
        for (npy_intp r = 0; r < nr; r++) {
            const float* __restrict z = Z + m * g.ld + r * g.TW;
            const npy_intp y = N * (r0 + r);
            float* __restrict ym = Y + (m * Ho + y) * Wo;
            const npy_intp rows = Ho - y < N ? Ho - y : N;
            npy_intp q = 0;
            if (rows == N)
                for (; q + L <= full; q += L) {
                    vec h[N][A], s[A], o[N];
                    for (int j = 0; j < A; j++) {  /* A^T s: columns */
                        for (int i = 0; i < A; i++)
                            s[i] = X::load(z + (i * A + j) * g.psz + q);
                        WT::output(s, o);
                        for (int a = 0; a < N; a++)
                            h[a][j] = o[a];
                    }
                    for (int a = 0; a < N; a++) {  /* (A^T s) A: rows */
                        WT::output(h[a], o);
                        fc_wino_interleave<L, N>(o);
                        for (int k = 0; k < N; k++)
                            X::store(ym + a * Wo + N * q + k * L, o[k]);
                    }
                }
            for (; q < g.TW; q++) {
                float h[N][A], s[A], o[N];
                for (int j = 0; j < A; j++) {
                    for (int i = 0; i < A; i++)
                        s[i] = z[(i * A + j) * g.psz + q];
                    WT::output(s, o);
                    for (int a = 0; a < N; a++)
                        h[a][j] = o[a];
                }
                for (int a = 0; a < rows; a++) {
                    WT::output(h[a], o);
                    for (int k = 0; k < N && N * q + k < Wo; k++)
                        ym[a * Wo + N * q + k] = o[k];
                }
            }
        }
}

/* Y (B, M, Ho, Wo) = stride-1 correlation of X (B, C, H, W), padded by
   pt rows above and pl columns left (zeros), with the 3x3 filters w
   (strides sm, sc, si, sj for m, c, i, j), in N x N tiles. */
template <int N, int K>
static int fc_wino_correlate_n(const float* X, const float* w, npy_intp sm,
                               npy_intp sc, npy_intp si, npy_intp sj,
                               float* Y, npy_intp B, npy_intp C, npy_intp H,
                               npy_intp W, npy_intp M, npy_intp pt,
                               npy_intp pl, npy_intp Ho, npy_intp Wo,
                               const fc_epi* e)
{
    const int P = (N + K - 1) * (N + K - 1);
    fc_fwd_table_fill<FC_MR>::fill(fc_fwd_table);
    const fc_wgeo g = fc_wino_geometry(N, K, C, M, Ho, Wo, 1);
    float* wp = fc_alloc((npy_intp)P * M * C);
    int* off = (int*)malloc(sizeof(int) * (C > 0 ? C : 1));
    int failed = !wp || !off
                 || fc_wino_filters<N, K>(w, sm, sc, si, sj, (int)M, (int)C,
                                          wp);
    if (!failed) {
        for (npy_intp c = 0; c < C; c++)
            off[c] = (int)(c * g.ld);
        #pragma omp parallel
        {
            float* Q = fc_alloc(g.qlen);
            float* V = fc_alloc(P * g.psv);
            float* Z = fc_alloc(P * g.psz);
            if (!Q || !V || !Z) {
                #pragma omp atomic write
                failed = 1;
            }
            auto planes = [&](npy_intp b, float* q) {
                fc_planes(X + b * C * H * W, C, H, W, 1, N, pt, pl, g.Hq,
                          g.Wq, q);
            };
            #pragma omp for schedule(dynamic, 1)
            for (npy_intp b = 0; b < B; b++) {
                if (!Q || !V || !Z)
                    continue;
                for (npy_intp r0 = 0; r0 < g.TH; r0 += g.R) {
                    const npy_intp nr = g.TH - r0 < g.R ? g.TH - r0 : g.R;
                    fc_wino_input_block<N, K>(Q, C, g, b, 1, r0, nr, planes,
                                              V);
                    for (int p = 0; p < P; p++)
                        fc_direct(V + p * g.psv, off, (int)C,
                                  wp + (npy_intp)p * M * C, (int)M,
                                  g.ld / FC_VL, Z + p * g.psz, g.ld);
                    float* Yb = Y + b * M * Ho * Wo;
                    if (Wo / N >= FC_VL)
                        fc_wino_output<N, K, FC_VL>(Z, M, g, r0, nr, Yb, Ho,
                                                    Wo);
                    else
                        fc_wino_output<N, K, 4>(Z, M, g, r0, nr, Yb, Ho, Wo);
                }
                fc_epilogue(e, Y + b * M * Ho * Wo, M, Ho * Wo);
            }
            fc_free(Q);
            fc_free(V);
            fc_free(Z);
        }
    }
    fc_free(wp);
    free(off);
    return failed ? -1 : 0;
}

static int fc_wino_correlate(int N, int K, const float* X, const float* w,
                             npy_intp sm, npy_intp sc, npy_intp si,
                             npy_intp sj, float* Y, npy_intp B, npy_intp C,
                             npy_intp H, npy_intp W, npy_intp M, npy_intp pt,
                             npy_intp pl, npy_intp Ho, npy_intp Wo,
                             const fc_epi* e)
{
    if (K == 5)
        return fc_wino_correlate_n<2, 5>(X, w, sm, sc, si, sj, Y, B, C, H, W,
                                         M, pt, pl, Ho, Wo, e);
    if (N == 4)
        return fc_wino_correlate_n<4, 3>(X, w, sm, sc, si, sj, Y, B, C, H, W,
                                         M, pt, pl, Ho, Wo, e);
    return fc_wino_correlate_n<2, 3>(X, w, sm, sc, si, sj, Y, B, C, H, W, M,
                                     pt, pl, Ho, Wo, e);
}
#endif

#if FC_WINOGRAD && defined(FC_OP_GRADWEIGHTS)

/* Zt[p][t][m] = (A dY_t A^T)[p] for the tiles of tile rows [r0, r0 + nr)
   of one image (t from 0 at z, rows of Mp floats, ps apart per position),
   from dyt, the image's dY transposed to pixel-major (Ho * Wo rows of Mp
   floats): vectorised over output channels, so that the products read
   each tile's channels contiguously, as fc_gw_tile wants. */
template <int N, int K>
static void fc_wino_dy(const float* __restrict dyt, npy_intp Mp,
                       npy_intp Ho, npy_intp Wo, const fc_wgeo& g,
                       npy_intp r0, npy_intp nr, float* __restrict z,
                       npy_intp ps)
{
    typedef fc_wt<N, K> WT;
    const int A = WT::A;
    for (npy_intp r = 0; r < nr; r++) {
        const npy_intp y0 = N * (r0 + r);
        for (npy_intp q = 0; q < g.TW; q++) {
            const npy_intp x0 = N * q;
            const int inside = y0 + N <= Ho && x0 + N <= Wo;
            float* zt = z + (r * g.TW + q) * Mp;
            for (npy_intp v = 0; v < Mp; v += FC_VL) {
                fc_v h[N][A], y[N], u[A];
                for (int i = 0; i < N; i++) {  /* y A^T along each row */
                    for (int j = 0; j < N; j++)
                        y[j] = inside || (y0 + i < Ho && x0 + j < Wo)
                               ? fc_load(dyt + ((y0 + i) * Wo + x0 + j) * Mp
                                         + v)
                               : fc_v{};
                    WT::outgrad(y, h[i]);
                }
                for (int j = 0; j < A; j++) {  /* A (y A^T) */
                    for (int i = 0; i < N; i++)
                        y[i] = h[i][j];
                    WT::outgrad(y, u);
                    for (int i = 0; i < A; i++)
                        fc_store(zt + (i * A + j) * ps + v, u[i]);
                }
            }
        }
    }
}

/* Tiles a product should run over at least, so that the register tiles'
   sums, added to memory once a block, are amortised: small images are
   taken several at a time. */
#ifndef FC_WINO_GW_TILES
# define FC_WINO_GW_TILES 128
#endif

/* dW (M, C, 3, 3) of the stride-1 correlation of X (B, C, H, W), padded
   by pt, pl, with output gradient dY (B, M, Ho, Wo), in N x N tiles. The
   products run vectorised over output channels (fc_gw_tile, MV vectors
   in groups of at most FC_MVT) from dY's transform transposed to
   tile-major. */
template <int N, int K>
static int fc_wino_gradweights_n(const float* X, const float* dY, float* dW,
                                 npy_intp B, npy_intp C, npy_intp H,
                                 npy_intp W, npy_intp M, npy_intp pt,
                                 npy_intp pl, npy_intp Ho, npy_intp Wo)
{
    typedef fc_wt<N, K> WT;
    const int A = WT::A, P = A * A;
    fc_gw_table_init();
    const fc_wgeo g = fc_wino_geometry(N, K, C, M, Ho, Wo, FC_WINO_GW_TILES);
    const npy_intp MV = (M + FC_VL - 1) / FC_VL, Mp = MV * FC_VL;
    const int ng = (int)((MV + FC_MVT - 1) / FC_MVT);
    const npy_intp per_chunk = P * C * Mp;
    const npy_intp pst = g.ld * Mp + 16;  /* Zt's positions */
    float* acc = fc_alloc(FC_CHUNKS * per_chunk);
    int* off = (int*)malloc(sizeof(int) * (C > 0 ? C : 1));
    int failed = !acc || !off;
    if (!failed) {
        for (npy_intp c = 0; c < C; c++)
            off[c] = (int)(c * g.ld);
        #pragma omp parallel
        {
            float* Q = fc_alloc(g.qlen);
            float* dyt = fc_alloc(Ho * Wo * Mp);  /* lanes >= M stay 0 */
            float* V = fc_alloc(P * g.psv);
            float* Zt = fc_alloc(P * pst);  /* tiles past a block: 0 */
            if (!Q || !dyt || !V || !Zt) {
                #pragma omp atomic write
                failed = 1;
            }
            auto planes = [&](npy_intp b, float* q) {
                fc_planes(X + b * C * H * W, C, H, W, 1, N, pt, pl, g.Hq,
                          g.Wq, q);
            };
            #pragma omp for schedule(dynamic, 1)
            for (int j = 0; j < FC_CHUNKS; j++) {
                const npy_intp b1 = (j + 1) * B / FC_CHUNKS;
                float* my = acc + j * per_chunk;
                if (!Q || !dyt || !V || !Zt)
                    continue;
                for (npy_intp b = j * B / FC_CHUNKS; b < b1; b += g.G) {
                    const npy_intp gn = b1 - b < g.G ? b1 - b : g.G;
                    for (npy_intp r0 = 0; r0 < g.TH; r0 += g.R) {
                        const npy_intp nr = g.TH - r0 < g.R ? g.TH - r0 : g.R;
                        const npy_intp n = gn * nr * g.TW;
                        fc_wino_input_block<N, K>(Q, C, g, b, gn, r0, nr,
                                                  planes, V);
                        for (int p = 0; p < P; p++)
                            memset(Zt + p * pst + n * Mp, 0,
                                   sizeof(float) * (g.ld - n) * Mp);
                        for (npy_intp k = 0; k < gn; k++) {
                            if (r0 == 0)  /* a new image */
                                fc_transpose(dY + (b + k) * M * Ho * Wo, M,
                                             Ho * Wo, Mp, dyt);
                            fc_wino_dy<N, K>(dyt, Mp, Ho, Wo, g, r0, nr,
                                             Zt + k * nr * g.TW * Mp, pst);
                        }
                        for (int p = 0; p < P; p++) {
                            for (int k = 0; k < ng; k++) {
                                npy_intp v0 = k * MV / ng;
                                int mvt = (int)((k + 1) * MV / ng - v0);
                                npy_intp nk = (C + fc_krmax[mvt] - 1)
                                              / fc_krmax[mvt];
                                for (npy_intp u = 0; u < nk; u++) {
                                    npy_intp c0 = u * C / nk;
                                    npy_intp c1 = (u + 1) * C / nk;
                                    fc_gw_table[mvt][c1 - c0](
                                        V + p * g.psv, off + c0,
                                        Zt + p * pst + v0 * FC_VL, 1, n, g.ld,
                                        Mp,
                                        my + (p * C + c0) * Mp + v0 * FC_VL);
                                }
                            }
                        }
                    }
                }
            }
            fc_free(Q);
            fc_free(dyt);
            fc_free(V);
            fc_free(Zt);
        }
    }
    if (!failed) {
        /* the chunks' sums in a fixed order, then G^T (dL/dU) G */
        #pragma omp parallel for schedule(static)
        for (npy_intp mc = 0; mc < M * C; mc++) {
            const npy_intp m = mc / C, c = mc % C;
            float du[A][A], t[K][A], col[A], wk[K];
            for (int p = 0; p < P; p++) {
                float s = 0.f;
                for (int j = 0; j < FC_CHUNKS; j++)
                    s += acc[j * per_chunk + (p * C + c) * Mp + m];
                du[p / A][p % A] = s;
            }
            for (int b = 0; b < A; b++) {  /* G^T du: each column */
                for (int a = 0; a < A; a++)
                    col[a] = du[a][b];
                WT::filtergrad(col, wk);
                for (int i = 0; i < K; i++)
                    t[i][b] = wk[i];
            }
            for (int i = 0; i < K; i++)  /* (G^T du) G: each row */
                WT::filtergrad(t[i], dW + mc * K * K + K * i);
        }
    }
    fc_free(acc);
    free(off);
    return failed ? -1 : 0;
}

static int fc_wino_gradweights(int N, int K, const float* X,
                               const float* dY, float* dW, npy_intp B,
                               npy_intp C, npy_intp H, npy_intp W, npy_intp M,
                               npy_intp pt, npy_intp pl, npy_intp Ho,
                               npy_intp Wo)
{
    if (K == 5)
        return fc_wino_gradweights_n<2, 5>(X, dY, dW, B, C, H, W, M, pt, pl,
                                           Ho, Wo);
    if (N == 4)
        return fc_wino_gradweights_n<4, 3>(X, dY, dW, B, C, H, W, M, pt, pl,
                                           Ho, Wo);
    return fc_wino_gradweights_n<2, 3>(X, dY, dW, B, C, H, W, M, pt, pl, Ho,
                                       Wo);
}
#endif
