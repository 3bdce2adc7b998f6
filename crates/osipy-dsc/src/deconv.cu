// Truncated-SVD deconvolution of one tissue curve (ssvd, csvd) in CUDA C:
// deconv.rs's `deconvolve` with `truncated`'s coefficients, the same
// operations in the same order: beta = U_k' b, c_q = beta_q / s_q,
// r = V_k c, then the peak of r (flow) and its time (Tmax). Constants c:
// [0] l (residue length), [1] k (components kept), [2] dt (s), then the l
// singular values, U by rows (OSIPY_N rows of l) and V by columns (l
// columns of l). Record: flow, Tmax, quality code.

__device__ void osipy_row(const double* c, const double* b, double* rec) {
    const int l = (int)c[0], k = (int)c[1];
    const double dt = c[2];
    const double* s = c + 3;
    const double* u = s + l;
    const double* v = u + OSIPY_N * l;
    double beta[2 * OSIPY_N], r[2 * OSIPY_N];
    for (int q = 0; q < k; q++) beta[q] = 0.0;
    for (int t = 0; t < OSIPY_N; t++) {
        const double* row = u + t * l;
        for (int q = 0; q < k; q++) beta[q] += b[t] * row[q];
    }
    for (int q = 0; q < k; q++) beta[q] /= s[q];
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
