/* Winograd's minimal filtering F(2x2, 3x3) for the stride-1 3x3
 * correlations of gcm_lasagne/fastconv.py; appended to fastconv.c, whose
 * planes, vector type and register tiles it uses.
 *
 * Written for this project from Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks" (2016). A 2x2 block of outputs ("tile")
 * is A^T [(G g G^T) . (B^T d B)] A, d the 4x4 input window of the tile, g
 * the 3x3 filter, . the elementwise product:
 *
 *   B^T = 1  0 -1  0     G = 1    0    0     A^T = 1  1  1  0
 *         0  1  1  0         1/2  1/2  1/2         0  1 -1 -1
 *         0 -1  1  0         1/2 -1/2  1/2
 *         0  1  0 -1         0    0    1
 *
 * Summed over input channels, each of the 16 positions p of the 4x4
 * products is a matrix product: Z[p][m][t] = sum_c U[p][m][c] V[p][c][t]
 * over the tiles t, 16 multiply-adds per tile and channel pair where the
 * direct correlation does 36. The products run on fastconv's forward
 * register tile (out channels x VL tiles); the transforms are additions
 * (and the filter's halves), computed on contiguous rows of tiles.
 */

#if FC_WINOGRAD

/* Where Winograd is used: 3x3, stride 1, enough channels in and out
   and a large enough output. The transforms cost in proportion to the
   channels in (input) or out (output) alone, the products to both, so
   with few channels the transforms eat the gain; and small images waste
   much of each vector of tiles. benchmarks/winograd_layers.py measured
   these thresholds (docs/performance.md). */
#ifndef FC_WINO_MIN_CHANNELS
# define FC_WINO_MIN_CHANNELS 12
#endif
#ifndef FC_WINO_MIN_SIZE
# define FC_WINO_MIN_SIZE 8
#endif
static int fc_wino_applies(npy_intp C, npy_intp M, npy_intp kh, npy_intp kw,
                           int sh, int sw, npy_intp Ho, npy_intp Wo)
{
    return kh == 3 && kw == 3 && sh == 1 && sw == 1
           && C >= FC_WINO_MIN_CHANNELS && M >= FC_WINO_MIN_CHANNELS
           && Ho >= FC_WINO_MIN_SIZE && Wo >= FC_WINO_MIN_SIZE;
}

/* The transforms work on L tiles at once (L = FC_VL, or 4 for rows of
   fewer tiles); GCC vectors of L floats. */
template <int L>
struct fc_wv {
    typedef float v __attribute__((vector_size(L * 4)));
    typedef float vu __attribute__((vector_size(L * 4), aligned(4), may_alias));
    static inline v load(const float* p) { return *(const vu*)p; }
    static inline void store(float* p, v x) { *(vu*)p = x; }
};

/* V[p][c][t] for the tiles of tile rows [r0, r0 + nr), t counted from the
   block's first tile (tile rows of TW tiles, ldv apart per channel and
   ps per position p). Q: the even / odd columns of the zero-padded
   image per channel, planes of Hq rows of Wq >= TW + 1 floats. */
template <int L>
static void fc_wino_input(const float* __restrict Q, npy_intp C,
                          npy_intp Hq, npy_intp Wq, npy_intp r0, npy_intp nr,
                          npy_intp TW, float* __restrict V, npy_intp ldv,
                          npy_intp ps)
{
    typedef fc_wv<L> X;
    typedef typename X::v vec;
    for (npy_intp c = 0; c < C; c++) {
        const float* E = Q + (2 * c) * Hq * Wq;
        const float* O = E + Hq * Wq;
        for (npy_intp r = 0; r < nr; r++) {
            const npy_intp y = 2 * (r0 + r);
            float* __restrict v = V + c * ldv + r * TW;
            npy_intp q = 0;
            for (; q + L <= TW; q += L) {
                vec h[4][4];
                for (int i = 0; i < 4; i++) {  /* d B along each row */
                    const float* e = E + (y + i) * Wq + q;
                    const float* o = O + (y + i) * Wq + q;
                    vec a = X::load(e), b = X::load(o), cc = X::load(e + 1),
                        d = X::load(o + 1);
                    h[i][0] = a - cc;
                    h[i][1] = b + cc;
                    h[i][2] = cc - b;
                    h[i][3] = b - d;
                }
                for (int j = 0; j < 4; j++) {  /* B^T (d B) */
                    X::store(v + (0 + j) * ps + q, h[0][j] - h[2][j]);
                    X::store(v + (4 + j) * ps + q, h[1][j] + h[2][j]);
                    X::store(v + (8 + j) * ps + q, h[2][j] - h[1][j]);
                    X::store(v + (12 + j) * ps + q, h[1][j] - h[3][j]);
                }
            }
            for (; q < TW; q++) {
                float h[4][4];
                for (int i = 0; i < 4; i++) {
                    const float* e = E + (y + i) * Wq + q;
                    const float* o = O + (y + i) * Wq + q;
                    h[i][0] = e[0] - e[1];
                    h[i][1] = o[0] + e[1];
                    h[i][2] = e[1] - o[0];
                    h[i][3] = o[0] - o[1];
                }
                for (int j = 0; j < 4; j++) {
                    v[(0 + j) * ps + q] = h[0][j] - h[2][j];
                    v[(4 + j) * ps + q] = h[1][j] + h[2][j];
                    v[(8 + j) * ps + q] = h[2][j] - h[1][j];
                    v[(12 + j) * ps + q] = h[1][j] - h[3][j];
                }
            }
        }
    }
}

/* Tile rows a block: as few blocks as keep a block's V and Z within
   FC_WINO_BLOCK_FLOATS (in the L2 cache together), of nearly equal size,
   since the products run on whole vectors of tiles. */
#ifndef FC_WINO_BLOCK_FLOATS
# define FC_WINO_BLOCK_FLOATS 65536
#endif
static npy_intp fc_wino_block_rows(npy_intp C, npy_intp M, npy_intp TW,
                                   npy_intp TH)
{
    npy_intp per_row = 16 * (C + M) * TW;
    npy_intp most = FC_WINO_BLOCK_FLOATS / (per_row > 0 ? per_row : 1);
    if (most < 1) most = 1;
    npy_intp nblocks = (TH + most - 1) / most;
    return nblocks > 0 ? (TH + nblocks - 1) / nblocks : 1;
}

#endif

#if FC_WINOGRAD && (defined(FC_OP_FORWARD) || defined(FC_OP_GRADINPUTS))
/* U[p][m][c] = (G g G^T)[p], g(i, j) = w[m sm + c sc + i si + j sj] (the
   strides let the input gradient pass the flipped, transposed filters),
   packed per position p for fc_direct: M x C per p, at wp + p * M * C. */
static void fc_wino_filters(const float* w, npy_intp sm, npy_intp sc,
                            npy_intp si, npy_intp sj, int M, int C,
                            float* wp, float* scratch)
{
    npy_intp* sk = (npy_intp*)malloc(sizeof(npy_intp) * (C > 0 ? C : 1));
    for (int c = 0; c < C; c++)
        sk[c] = c;
    for (int m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            const float* g = w + m * sm + c * sc;
            float t[4][3], u[4][4];
            for (int j = 0; j < 3; j++) {  /* G g: rows */
                float g0 = g[0 * si + j * sj], g1 = g[1 * si + j * sj],
                      g2 = g[2 * si + j * sj];
                t[0][j] = g0;
                t[1][j] = 0.5f * (g0 + g1 + g2);
                t[2][j] = 0.5f * (g0 - g1 + g2);
                t[3][j] = g2;
            }
            for (int i = 0; i < 4; i++) {  /* (G g) G^T: columns */
                u[i][0] = t[i][0];
                u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                u[i][3] = t[i][2];
            }
            for (int p = 0; p < 16; p++)
                scratch[((npy_intp)p * M + m) * C + c] = u[p / 4][p % 4];
        }
    for (int p = 0; p < 16; p++)
        fc_pack_weights(scratch + (npy_intp)p * M * C, C, sk, M, C,
                        wp + (npy_intp)p * M * C);
    free(sk);
}

/* The 2x2 outputs A^T s A of one tile's 4x4 products s[p] (p = 4i + j). */
template <typename vec>
static inline void fc_wino_tile_out(const vec* s, vec* v00, vec* v01,
                                    vec* v10, vec* v11)
{
    vec a[2][4];
    for (int j = 0; j < 4; j++) {  /* A^T s */
        a[0][j] = s[j] + s[4 + j] + s[8 + j];
        a[1][j] = s[4 + j] - s[8 + j] - s[12 + j];
    }
    *v00 = a[0][0] + a[0][1] + a[0][2];
    *v01 = a[0][1] - a[0][2] - a[0][3];
    *v10 = a[1][0] + a[1][1] + a[1][2];
    *v11 = a[1][1] - a[1][2] - a[1][3];
}

/* Y rows [2 r0, ...) of M channels (Ho x Wo each) from Z[p][m][t] (ldz
   apart per channel, ps per position p). */
template <int L>
static void fc_wino_output(const float* __restrict Z, npy_intp M,
                           npy_intp ldz, npy_intp ps, npy_intp r0,
                           npy_intp nr, npy_intp TW, float* __restrict Y,
                           npy_intp Ho, npy_intp Wo)
{
    typedef fc_wv<L> X;
    typedef typename X::v vec;
    typedef int ivec __attribute__((vector_size(L * 4)));
    union { ivec v; int i[L]; } lo, hi;  /* interleave two vectors */
    for (int l = 0; l < L; l++) {
        lo.i[l] = (l % 2) * L + l / 2;
        hi.i[l] = (l % 2) * L + L / 2 + l / 2;
    }
    const npy_intp full = Wo / 2;  /* tiles whose two columns are kept */
    for (npy_intp m = 0; m < M; m++)
        for (npy_intp r = 0; r < nr; r++) {
            const float* __restrict z = Z + m * ldz + r * TW;
            const npy_intp y = 2 * (r0 + r);
            float* __restrict y0 = Y + (m * Ho + y) * Wo;
            float* __restrict y1 = y0 + Wo;
            const int two_rows = y + 1 < Ho;
            npy_intp q = 0;
            if (two_rows)
                for (; q + L <= full; q += L) {
                    vec t[16], v00, v01, v10, v11;
                    for (int p = 0; p < 16; p++)
                        t[p] = X::load(z + p * ps + q);
                    fc_wino_tile_out(t, &v00, &v01, &v10, &v11);
                    X::store(y0 + 2 * q, __builtin_shuffle(v00, v01, lo.v));
                    X::store(y0 + 2 * q + L, __builtin_shuffle(v00, v01, hi.v));
                    X::store(y1 + 2 * q, __builtin_shuffle(v10, v11, lo.v));
                    X::store(y1 + 2 * q + L, __builtin_shuffle(v10, v11, hi.v));
                }
            for (; q < TW; q++) {
                float t[16], v00, v01, v10, v11;
                for (int p = 0; p < 16; p++)
                    t[p] = z[p * ps + q];
                fc_wino_tile_out(t, &v00, &v01, &v10, &v11);
                y0[2 * q] = v00;
                if (2 * q + 1 < Wo) y0[2 * q + 1] = v01;
                if (two_rows) {
                    y1[2 * q] = v10;
                    if (2 * q + 1 < Wo) y1[2 * q + 1] = v11;
                }
            }
        }
}

/* Y (B, M, Ho, Wo) = stride-1 correlation of X (B, C, H, W), padded by
   pt rows above and pl columns left (zeros), with the 3x3 filters w
   (strides sm, sc, si, sj for m, c, i, j). */
static int fc_wino_correlate(const float* X, const float* w, npy_intp sm,
                             npy_intp sc, npy_intp si, npy_intp sj, float* Y,
                             npy_intp B, npy_intp C, npy_intp H, npy_intp W,
                             npy_intp M, npy_intp pt, npy_intp pl,
                             npy_intp Ho, npy_intp Wo)
{
    fc_fwd_table_fill<FC_MR>::fill(fc_fwd_table);
    const npy_intp TH = (Ho + 1) / 2, TW = (Wo + 1) / 2;
    /* even / odd column planes of the padded image: rows 0 .. 2 TH + 1,
       columns 0 .. 2 TW + 1 */
    const npy_intp Hq = 2 * TH + 2, Wq = TW + 1;
    const npy_intp plane_len = C * 2 * Hq * Wq + Wq + 2 * FC_VL;
    const npy_intp R = fc_wino_block_rows(C, M, TW, TH);
    const npy_intp ldv = ((R * TW + FC_VL - 1) / FC_VL) * FC_VL;
    const npy_intp nblocks = ldv / FC_VL;
    /* One position's block to the next: a cache line more than the block,
       so that the 16 positions of a tile, read or written together, do not
       fall on one set of the L1 cache (as 4 KB apart would). */
    const npy_intp psv = C * ldv + 16, psz = M * ldv + 16;
    float* wp = fc_alloc(16 * M * C);
    float* scratch = fc_alloc(16 * M * C);
    int* off = (int*)malloc(sizeof(int) * (C > 0 ? C : 1));
    int failed = !wp || !scratch || !off;
    if (!failed) {
        fc_wino_filters(w, sm, sc, si, sj, (int)M, (int)C, wp, scratch);
        for (npy_intp c = 0; c < C; c++)
            off[c] = (int)(c * ldv);
        #pragma omp parallel
        {
            float* Q = fc_alloc(plane_len);
            float* V = fc_alloc(16 * psv);  /* tiles past a block: 0 */
            float* Z = fc_alloc(16 * psz);
            if (!Q || !V || !Z) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (npy_intp b = 0; b < B; b++) {
                if (!Q || !V || !Z)
                    continue;
                fc_planes(X + b * C * H * W, C, H, W, 1, 2, pt, pl, Hq, Wq, Q);
                for (npy_intp r0 = 0; r0 < TH; r0 += R) {
                    npy_intp nr = TH - r0 < R ? TH - r0 : R;
                    if (nr < R)  /* a shorter last block: clear what the
                                    longer ones left past its end */
                        for (int p = 0; p < 16; p++)
                            for (npy_intp c = 0; c < C; c++)
                                memset(V + p * psv + c * ldv + nr * TW, 0,
                                       sizeof(float) * (ldv - nr * TW));
                    if (TW >= FC_VL)
                        fc_wino_input<FC_VL>(Q, C, Hq, Wq, r0, nr, TW, V, ldv, psv);
                    else
                        fc_wino_input<4>(Q, C, Hq, Wq, r0, nr, TW, V, ldv, psv);
                    for (int p = 0; p < 16; p++)
                        fc_direct(V + p * psv, off, (int)C,
                                  wp + (npy_intp)p * M * C, (int)M, nblocks,
                                  Z + p * psz, ldv);
                    float* Yb = Y + b * M * Ho * Wo;
                    if (Wo / 2 >= FC_VL)
                        fc_wino_output<FC_VL>(Z, M, ldv, psz, r0, nr, TW, Yb, Ho, Wo);
                    else
                        fc_wino_output<4>(Z, M, ldv, psz, r0, nr, TW, Yb, Ho, Wo);
                }
            }
            fc_free(Q);
            fc_free(V);
            fc_free(Z);
        }
    }
    fc_free(wp);
    fc_free(scratch);
    free(off);
    return failed ? -1 : 0;
}
#endif

#if FC_WINOGRAD && defined(FC_OP_GRADWEIGHTS)
/* The filter gradient through the same transforms: with U = G g G^T and
   V_t = B^T d_t B, tile t gives A^T (U . V_t) A, so
       dL/dU = sum_t V_t . (A dY_t A^T),    dL/dg = G^T (dL/dU) G,
   16 products over the tiles, one per position p, each an M x C matrix
   summed over every tile of every image. */

/* Z[p][m][t] = (A dY_t A^T)[p] for the tiles of tile rows [r0, r0 + nr);
   D: the even / odd columns of dY per channel, planes of Hd rows of Wd
   >= TW floats (0 outside dY). Layout as fc_wino_input's. */
template <int L>
static void fc_wino_dy(const float* __restrict D, npy_intp M, npy_intp Hd,
                       npy_intp Wd, npy_intp r0, npy_intp nr, npy_intp TW,
                       float* __restrict Z, npy_intp ldz, npy_intp ps)
{
    typedef fc_wv<L> X;
    typedef typename X::v vec;
    for (npy_intp m = 0; m < M; m++) {
        const float* E = D + (2 * m) * Hd * Wd;
        const float* O = E + Hd * Wd;
        for (npy_intp r = 0; r < nr; r++) {
            const npy_intp y = 2 * (r0 + r);
            float* __restrict z = Z + m * ldz + r * TW;
            npy_intp q = 0;
            for (; q + L <= TW; q += L) {
                vec h[2][4];
                for (int i = 0; i < 2; i++) {  /* g A^T along each row */
                    vec a = X::load(E + (y + i) * Wd + q),
                        b = X::load(O + (y + i) * Wd + q);
                    h[i][0] = a;
                    h[i][1] = a + b;
                    h[i][2] = a - b;
                    h[i][3] = -b;
                }
                for (int j = 0; j < 4; j++) {  /* A (g A^T) */
                    X::store(z + (0 + j) * ps + q, h[0][j]);
                    X::store(z + (4 + j) * ps + q, h[0][j] + h[1][j]);
                    X::store(z + (8 + j) * ps + q, h[0][j] - h[1][j]);
                    X::store(z + (12 + j) * ps + q, -h[1][j]);
                }
            }
            for (; q < TW; q++) {
                float h[2][4];
                for (int i = 0; i < 2; i++) {
                    float a = E[(y + i) * Wd + q], b = O[(y + i) * Wd + q];
                    h[i][0] = a;
                    h[i][1] = a + b;
                    h[i][2] = a - b;
                    h[i][3] = -b;
                }
                for (int j = 0; j < 4; j++) {
                    z[(0 + j) * ps + q] = h[0][j];
                    z[(4 + j) * ps + q] = h[0][j] + h[1][j];
                    z[(8 + j) * ps + q] = h[0][j] - h[1][j];
                    z[(12 + j) * ps + q] = -h[1][j];
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
   by pt, pl, with output gradient dY (B, M, Ho, Wo). */
static int fc_wino_gradweights(const float* X, const float* dY, float* dW,
                               npy_intp B, npy_intp C, npy_intp H, npy_intp W,
                               npy_intp M, npy_intp pt, npy_intp pl,
                               npy_intp Ho, npy_intp Wo)
{
    fc_gw_table_init();
    const npy_intp TH = (Ho + 1) / 2, TW = (Wo + 1) / 2, Timg = TH * TW;
    const npy_intp Hq = 2 * TH + 2, Wq = TW + 1, Hd = 2 * TH, Wd = TW;
    const npy_intp qlen = C * 2 * Hq * Wq + Wq + 2 * FC_VL;
    const npy_intp dlen = M * 2 * Hd * Wd + Wd + 2 * FC_VL;
    const npy_intp R = fc_wino_block_rows(C, M, TW, TH);
    npy_intp G = 1;  /* images a block */
    if (R == TH) {
        G = FC_WINO_GW_TILES / Timg;
        npy_intp fit = FC_WINO_BLOCK_FLOATS / (16 * (C + M) * Timg);
        if (G > fit) G = fit;
        if (G < 1) G = 1;
    }
    const npy_intp ldv = ((G * R * TW + FC_VL - 1) / FC_VL) * FC_VL;
    const npy_intp psv = C * ldv + 16, psz = M * ldv + 16;
    /* the products run vectorised over output channels, MV vectors of
       them in groups of at most FC_MVT (fc_gw_tile), from dL/dY's
       transform transposed to tile-major */
    const npy_intp MV = (M + FC_VL - 1) / FC_VL, Mp = MV * FC_VL;
    const int ng = (int)((MV + FC_MVT - 1) / FC_MVT);
    const npy_intp per_chunk = 16 * C * Mp;
    float* acc = fc_alloc(FC_CHUNKS * per_chunk);
    int* off = (int*)malloc(sizeof(int) * (C > 0 ? C : 1));
    int failed = !acc || !off;
    if (!failed) {
        for (npy_intp c = 0; c < C; c++)
            off[c] = (int)(c * ldv);
        #pragma omp parallel
        {
            float* Q = fc_alloc(qlen);
            float* D = fc_alloc(dlen);
            float* V = fc_alloc(16 * psv);
            float* Z = fc_alloc(16 * psz);
            float* Zt = fc_alloc(ldv * Mp);  /* lanes >= M stay 0 */
            if (!Q || !D || !V || !Z || !Zt) {
                #pragma omp atomic write
                failed = 1;
            }
            #pragma omp for schedule(dynamic, 1)
            for (int j = 0; j < FC_CHUNKS; j++) {
                const npy_intp b1 = (j + 1) * B / FC_CHUNKS;
                float* my = acc + j * per_chunk;
                if (!Q || !D || !V || !Z || !Zt)
                    continue;
                for (npy_intp b = j * B / FC_CHUNKS; b < b1; b += G) {
                    const npy_intp gn = b1 - b < G ? b1 - b : G;
                    for (npy_intp r0 = 0; r0 < TH; r0 += R) {
                        const npy_intp nr = TH - r0 < R ? TH - r0 : R;
                        const npy_intp n = gn * nr * TW;
                        for (int p = 0; p < 16; p++) {  /* tiles past n: 0 */
                            for (npy_intp c = 0; c < C; c++)
                                memset(V + p * psv + c * ldv + n, 0,
                                       sizeof(float) * (ldv - n));
                            for (npy_intp m = 0; m < M; m++)
                                memset(Z + p * psz + m * ldv + n, 0,
                                       sizeof(float) * (ldv - n));
                        }
                        for (npy_intp g = 0; g < gn; g++) {
                            const npy_intp bg = b + g, t0 = g * nr * TW;
                            if (r0 == 0) {  /* a new image: its planes */
                                fc_planes(X + bg * C * H * W, C, H, W, 1, 2,
                                          pt, pl, Hq, Wq, Q);
                                fc_planes(dY + bg * M * Ho * Wo, M, Ho, Wo, 1,
                                          2, 0, 0, Hd, Wd, D);
                            }
                            if (TW >= FC_VL) {
                                fc_wino_input<FC_VL>(Q, C, Hq, Wq, r0, nr, TW,
                                                     V + t0, ldv, psv);
                                fc_wino_dy<FC_VL>(D, M, Hd, Wd, r0, nr, TW,
                                                  Z + t0, ldv, psz);
                            } else {
                                fc_wino_input<4>(Q, C, Hq, Wq, r0, nr, TW,
                                                 V + t0, ldv, psv);
                                fc_wino_dy<4>(D, M, Hd, Wd, r0, nr, TW,
                                              Z + t0, ldv, psz);
                            }
                        }
                        for (int p = 0; p < 16; p++) {
                            fc_transpose(Z + p * psz, M, ldv, Mp, Zt);
                            for (int g = 0; g < ng; g++) {
                                npy_intp v0 = g * MV / ng;
                                int mvt = (int)((g + 1) * MV / ng - v0);
                                npy_intp nk = (C + fc_krmax[mvt] - 1)
                                              / fc_krmax[mvt];
                                for (npy_intp u = 0; u < nk; u++) {
                                    npy_intp c0 = u * C / nk;
                                    npy_intp c1 = (u + 1) * C / nk;
                                    fc_gw_table[mvt][c1 - c0](
                                        V + p * psv, off + c0,
                                        Zt + v0 * FC_VL, 1, n, ldv, Mp,
                                        my + (p * C + c0) * Mp + v0 * FC_VL);
                                }
                            }
                        }
                    }
                }
            }
            fc_free(Q);
            fc_free(D);
            fc_free(V);
            fc_free(Z);
            fc_free(Zt);
        }
    }
    if (!failed) {
        /* the chunks' sums in a fixed order, then G^T (dL/dU) G */
        #pragma omp parallel for schedule(static)
        for (npy_intp mc = 0; mc < M * C; mc++) {
            const npy_intp m = mc / C, c = mc % C;
            float du[4][4], t[3][4];
            for (int p = 0; p < 16; p++) {
                float s = 0.f;
                for (int j = 0; j < FC_CHUNKS; j++)
                    s += acc[j * per_chunk + (p * C + c) * Mp + m];
                du[p / 4][p % 4] = s;
            }
            for (int b = 0; b < 4; b++) {  /* G^T du: rows */
                t[0][b] = du[0][b] + 0.5f * (du[1][b] + du[2][b]);
                t[1][b] = 0.5f * (du[1][b] - du[2][b]);
                t[2][b] = 0.5f * (du[1][b] + du[2][b]) + du[3][b];
            }
            float* w = dW + mc * 9;
            for (int i = 0; i < 3; i++) {  /* (G^T du) G: columns */
                w[3 * i + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
                w[3 * i + 1] = 0.5f * (t[i][1] - t[i][2]);
                w[3 * i + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
            }
        }
    }
    fc_free(acc);
    free(off);
    return failed ? -1 : 0;
}
#endif
