// DCE pharmacokinetic models in CUDA C: models.rs's `tofts_kernel`,
// `etofts_kernel` and `patlak_kernel` (prediction and analytic Jacobian)
// with the same order of floating-point operations. Constants c: the 64
// Taylor values of the convolution kernels, then the times t (OSIPY_N, s),
// then the plasma AIF cp (OSIPY_N, mM). Needs EXP_CONV_GPU before it.

#define OSIPY_PER_MIN (1.0 / 60.0)
#define OSIPY_FLOW (1.0 / 6000.0)

__device__ static void osipy_tofts_into(const double* c, double ktrans, double ve, double* out, double* dk,
                                        double* dve) {
    const double* t = c + 64;
    const double* cp = c + 64 + OSIPY_N;
    double k = ktrans * OSIPY_PER_MIN;
    double kep = k / ve;
    osipy_exp_conv_d(c, t, cp, kep, out, dve, OSIPY_N);
    double k_ve = k / ve, kkep_ve = k * kep / ve;
    for (int i = 0; i < OSIPY_N; i++) {
        double conv = out[i], dconv = dve[i];
        out[i] = k * conv;
        dk[i] = (conv + k_ve * dconv) * OSIPY_PER_MIN;
        dve[i] = -kkep_ve * dconv;
    }
}

#if defined(OSIPY_DCE_TOFTS)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    osipy_tofts_into(c, x[0], x[1], pred, jac, jac + OSIPY_N);
}
#elif defined(OSIPY_DCE_EXTENDED_TOFTS)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const double* cp = c + 64 + OSIPY_N;
    osipy_tofts_into(c, x[0], x[1], pred, jac, jac + OSIPY_N);
    for (int i = 0; i < OSIPY_N; i++) jac[2 * OSIPY_N + i] = cp[i];
    for (int i = 0; i < OSIPY_N; i++) pred[i] += x[2] * cp[i];
}
#elif defined(OSIPY_DCE_PATLAK)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const double* t = c + 64;
    const double* cp = c + 64 + OSIPY_N;
    osipy_exp_conv(c, t, cp, 0.0, pred, OSIPY_N);
    for (int i = 0; i < OSIPY_N; i++) jac[i] = pred[i] * OSIPY_PER_MIN;
    for (int i = 0; i < OSIPY_N; i++) jac[OSIPY_N + i] = cp[i];
    for (int i = 0; i < OSIPY_N; i++) pred[i] = x[0] * OSIPY_PER_MIN * pred[i] + x[1] * cp[i];
}
#elif defined(OSIPY_DCE_2CUM)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const double* t = c + 64;
    const double* cp = c + 64 + OSIPY_N;
    double f = x[0] * OSIPY_FLOW, ps = x[1] * OSIPY_PER_MIN, vp = x[2];
    double s = f + ps;
    double a = f * f / s, b = f * ps / s;
    double* df = jac;
    double* dps = jac + OSIPY_N;
    double* dvp = jac + 2 * OSIPY_N;
    osipy_exp_conv_d(c, t, cp, s / vp, pred, dvp, OSIPY_N);
    double icp = 0.0;
    for (int i = 0; i < OSIPY_N; i++) {
        if (i > 0) icp += 0.5 * (t[i] - t[i - 1]) * (cp[i] + cp[i - 1]);
        double e = pred[i], d = dvp[i];
        pred[i] = a * e + b * icp;
        df[i] = (f * (f + 2.0 * ps) / (s * s) * e + a * d / vp + ps * ps / (s * s) * icp) * OSIPY_FLOW;
        dps[i] = (-(f * f) / (s * s) * e + a * d / vp + f * f / (s * s) * icp) * OSIPY_PER_MIN;
        dvp[i] = -a * d * s / (vp * vp);
    }
}
#elif defined(OSIPY_DCE_2CXM)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const double* t = c + 64;
    const double* cp = c + 64 + OSIPY_N;
    // tcxm_irf
    double f = x[0] * OSIPY_FLOW, ps = x[1] * OSIPY_PER_MIN, ve = x[2], vp = x[3];
    double s = (f + ps) / vp + ps / ve;
    double q = f * ps / (vp * ve);
    double disc = sqrt(fmax(s * s - 4.0 * q, 0.0));
    double alpha = 0.5 * (s + disc);
    double beta = alpha > 0.0 ? q / alpha : 0.0;
    double a1 = alpha > beta ? f * (f / vp - beta) / (alpha - beta) : f;
    double a2 = f - a1;
    // TcxmCoefficients::new
    double gap = alpha - beta;
    double ds[4] = {1.0 / vp, 1.0 / vp + 1.0 / ve, -ps / (ve * ve), -(f + ps) / (vp * vp)};
    double dq[4] = {ps / (vp * ve), f / (vp * ve), -q / ve, -q / vp};
    double dfj[4] = {1.0, 0.0, 0.0, 0.0};
    double dfvp[4] = {1.0 / vp, 0.0, 0.0, -f / (vp * vp)};
    double num = f * (f / vp - beta);
    double da[4], db[4], da1[4], da2[4];
    for (int j = 0; j < 4; j++) {
        da[j] = (alpha * ds[j] - dq[j]) / gap;
        db[j] = (dq[j] - beta * ds[j]) / gap;
        double dnum = dfj[j] * (f / vp - beta) + f * (dfvp[j] - db[j]);
        da1[j] = (dnum * gap - num * (da[j] - db[j])) / (gap * gap);
        da2[j] = dfj[j] - da1[j];
    }
    const double unit[4] = {OSIPY_FLOW, OSIPY_PER_MIN, 1.0, 1.0};
    osipy_exp_conv_d(c, t, cp, alpha, jac, jac + OSIPY_N, OSIPY_N);
    osipy_exp_conv_d(c, t, cp, beta, jac + 2 * OSIPY_N, jac + 3 * OSIPY_N, OSIPY_N);
    for (int i = 0; i < OSIPY_N; i++) {
        double ea = jac[i], dea = jac[OSIPY_N + i], eb = jac[2 * OSIPY_N + i], deb = jac[3 * OSIPY_N + i];
        pred[i] = a1 * ea + a2 * eb;
        for (int j = 0; j < 4; j++)
            jac[j * OSIPY_N + i] = (da1[j] * ea + a1 * dea * da[j] + da2[j] * eb + a2 * deb * db[j]) * unit[j];
    }
}
#endif
