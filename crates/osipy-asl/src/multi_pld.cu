// The multi-PLD Buxton model (CBF, ATT[, aBV, aATT]) in CUDA C++:
// multi_pld.rs's `BuxtonModel::jac` through kinetics.rs's `tissue_curve`
// and `arterial`, on dual numbers (DUAL_GPU before it), with the same
// operations in the same order. Constants c: [0] 1 for (p)CASL, 0 for
// PASL; [1] T1 of blood; [2] T1 of tissue; [3] lambda; [4] alpha; then the
// PLDs (OSIPY_N) and the label durations (OSIPY_N), s.

typedef OsipyDual<OSIPY_P> OsipyD;

__device__ inline OsipyD osipy_k(double v) { return osipy_dual_c<OSIPY_P>(v); }

// (e^(k x) - 1) / k, and x (1 + k x / 2) where k x is too small to divide.
__device__ inline OsipyD osipy_expm1_over(const OsipyD& k, const OsipyD& x) {
    if (fabs(k.v * x.v) < 1e-9) return x * (osipy_k(1.0) + k * x / osipy_k(2.0));
    return osipy_dual_expm1(k * x) / k;
}

__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const bool continuous = c[0] != 0.0;
    const double t1b = c[1], t1t = c[2], lambda = c[3], alpha = c[4];
    const double* pld = c + 5;
    const double* tau = c + 5 + OSIPY_N;
    OsipyD cbf = osipy_dual_var<OSIPY_P>(x[0], 0), att = osipy_dual_var<OSIPY_P>(x[1], 1);
    OsipyD f = cbf / osipy_k(6000.0);
    OsipyD u = osipy_k(1.0 / t1t) + f / osipy_k(lambda);
    OsipyD scale = osipy_k(2.0 * alpha / lambda) * f;
    OsipyD one = osipy_k(1.0);
    // The (p)CASL amplitude and the PASL rate, as tissue_curve has them.
    OsipyD a = scale / u * osipy_dual_exp(-att / osipy_k(t1b));
    OsipyD k = osipy_k(1.0 / t1b) - u;
    for (int i = 0; i < OSIPY_N; i++) {
        OsipyD y;
        if (continuous) {
            double t = tau[i] + pld[i];
            if (t < att.v) {
                y = osipy_k(0.0);
            } else if (t < att.v + tau[i]) {
                y = a * (one - osipy_dual_exp(-(osipy_k(t) - att) * u));
            } else {
                OsipyD fill = one - osipy_dual_exp(-(osipy_k(tau[i]) * u));
                y = a * osipy_dual_exp(-(osipy_k(t - tau[i]) - att) * u) * fill;
            }
        } else {
            double t = pld[i];
            if (t < att.v) {
                y = osipy_k(0.0);
            } else {
                OsipyD pre = scale * osipy_k(exp(-t / t1b));
                OsipyD dt = osipy_k(t) - att;
                if (t < att.v + tau[i]) {
                    y = pre * osipy_expm1_over(k, dt);
                } else {
                    y = pre * osipy_dual_exp(k * dt) * osipy_expm1_over(-k, osipy_k(tau[i]));
                }
            }
        }
        pred[i] = y.v;
        for (int j = 0; j < OSIPY_P; j++) jac[j * OSIPY_N + i] = y.d[j];
    }
#if OSIPY_P == 4
    OsipyD abv = osipy_dual_var<OSIPY_P>(x[2], 2), aatt = osipy_dual_var<OSIPY_P>(x[3], 3);
    for (int i = 0; i < OSIPY_N; i++) {
        double t = continuous ? tau[i] + pld[i] : pld[i];
        OsipyD w = osipy_k(0.70710678118654752440084436210484903 / 0.1);
        OsipyD window = osipy_k(0.5) * (osipy_dual_erf((osipy_k(t) - aatt) * w) -
                                        osipy_dual_erf((osipy_k(t - tau[i]) - aatt) * w));
        OsipyD decay = continuous ? osipy_dual_exp(-aatt / osipy_k(t1b)) : osipy_k(exp(-t / t1b));
        OsipyD y = osipy_k(2.0 * alpha / lambda) * abv * window * decay;
        pred[i] += y.v;
        for (int j = 0; j < OSIPY_P; j++) jac[j * OSIPY_N + i] += y.d[j];
    }
#endif
}
