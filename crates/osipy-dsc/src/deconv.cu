// SVD deconvolution of one tissue curve in CUDA C: deconv.rs's
// `deconvolve` with the coefficients of `truncated` (ssvd, csvd), `osvd`
// or `tikhonov` (one of OSIPY_DSC_TRUNCATED, OSIPY_DSC_OSVD,
// OSIPY_DSC_TIKHONOV is defined before this), with the same operations in
// the same order: beta = U_k' b, the method's coefficients c, r = V_k c,
// then the peak of r (flow) and its time (Tmax).
// Constants c: [0] l (residue length), [1] k (components), [2] dt (s),
// [3] e (number of method constants), then the e method constants, the l
// singular values, U by rows (OSIPY_N rows of l) and V by columns (l
// columns of l). Method constants: osvd, the oscillation-index target;
// tikhonov, the number of lambdas G, the G lambdas, the G x l residual
// weights and the G GCV denominators. Record: flow, Tmax, quality code.

// Largest value, as deconv.rs's `lane_max` (four lanes, then the tail).
__device__ static double osipy_lane_max(const double* r, int n) {
    double m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int n4 = n / 4 * 4;
    for (int i = 0; i < n4; i += 4)
        for (int j = 0; j < 4; j++) m[j] = r[i + j] > m[j] ? r[i + j] : m[j];
    double a = fmax(fmax(m[0], m[1]), fmax(m[2], m[3]));
    for (int i = n4; i < n; i++) a = fmax(a, r[i]);
    return a;
}

// sum |r[i+2] - 2 r[i+1] + r[i]|, as `abs_second_difference_sum`.
__device__ static double osipy_asd(const double* r, int n) {
    if (n < 3) return 0.0;
    int m = n - 2, m4 = m / 4 * 4;
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    for (int i = 0; i < m4; i += 4)
        for (int j = 0; j < 4; j++) acc[j] += fabs(r[i + j + 2] - 2.0 * r[i + j + 1] + r[i + j]);
    double tail = 0.0;
    for (int i = m4; i < m; i++) tail += fabs(r[i + 2] - 2.0 * r[i + 1] + r[i]);
    return (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
}

__device__ void osipy_row(const double* c, const double* b, double* rec) {
    const int l = (int)c[0], k = (int)c[1];
    const double dt = c[2];
    const int e = (int)c[3];
    const double* extra = c + 4;
    const double* s = extra + e;
    const double* u = s + l;
    const double* v = u + OSIPY_N * l;
    double beta[2 * OSIPY_N], r[2 * OSIPY_N];
    for (int q = 0; q < k; q++) beta[q] = 0.0;
    for (int t = 0; t < OSIPY_N; t++) {
        const double* row = u + t * l;
        for (int q = 0; q < k; q++) beta[q] += b[t] * row[q];
    }
#if defined(OSIPY_DSC_TRUNCATED)
    for (int q = 0; q < k; q++) beta[q] /= s[q];
#elif defined(OSIPY_DSC_OSVD)
    {
        for (int i = 0; i < l; i++) r[i] = 0.0;
        int best = 1;
        double limit = extra[0] * (double)l;
        for (int q = 0; q < k; q++) {
            beta[q] /= s[q];
            const double* col = v + q * l;
            for (int i = 0; i < l; i++) r[i] += beta[q] * col[i];
            if (q == 0 || osipy_asd(r, l) <= limit * osipy_lane_max(r, l)) best = q + 1;
        }
        for (int q = best; q < k; q++) beta[q] = 0.0;
    }
#elif defined(OSIPY_DSC_TIKHONOV)
    {
        const int g = (int)extra[0];
        const double* grid = extra + 1;
        const double* weights = grid + g;
        const double* denominators = weights + g * l;
        double best_g = INFINITY, best_lam = grid[0];
        if (g > 1) {
            for (int q = 0; q < l; q++) r[q] = beta[q] * beta[q];
            for (int j = 0; j < g; j++) {
                const double* w = weights + j * l;
                double res = 0.0;
                for (int q = 0; q < l; q++) res += w[q] * r[q];
                double gv = res / denominators[j];
                if (gv < best_g) {
                    best_g = gv;
                    best_lam = grid[j];
                }
            }
        }
        double lam2 = best_lam * best_lam;
        for (int q = 0; q < k; q++) beta[q] *= s[q] / (s[q] * s[q] + lam2);
    }
#endif
    for (int i = 0; i < l; i++) r[i] = 0.0;
    for (int q = 0; q < k; q++) {
        if (beta[q] != 0.0) {
            const double* col = v + q * l;
            for (int i = 0; i < l; i++) r[i] += beta[q] * col[i];
        }
    }
    int at = 0;
    double m = -INFINITY;
    for (int i = 0; i < l; i++) {
        if (r[i] > m) {
            at = i;
            m = r[i];
        }
    }
    double ti = (l > OSIPY_N && at >= OSIPY_N) ? (double)at - (double)l : (double)at;
    rec[0] = m;
    rec[1] = ti * dt;
    rec[2] = (m > 0.0 && isfinite(m)) ? 1.0 : 7.0;
}
