// DCE pharmacokinetic models in CUDA C: models.rs's model kernels
// (`tofts_kernel`, `etofts_kernel`, `patlak_kernel`, `tcum_kernel`,
// `tcxm_kernel`), with and without the Jacobian (jac == 0: the
// prediction-only path, which the Rust kernels compute differently), with
// the same order of floating-point operations; and `DelayedPkModel` (the
// AIF shifted by a fitted delay, its Jacobian column a forward difference)
// when OSIPY_DCE_DELAYED is defined. Constants c: the 64 Taylor values of
// the convolution kernels, the times t (OSIPY_N, s), the plasma AIF cp
// (OSIPY_N, mM). Needs EXP_CONV_GPU before it; one of OSIPY_DCE_TOFTS,
// _EXTENDED_TOFTS, _PATLAK, _2CUM, _2CXM is defined.

#define OSIPY_PER_MIN (1.0 / 60.0)
#define OSIPY_FLOW (1.0 / 6000.0)

__device__ static void osipy_tofts_into(const double* tab, const double* t, const double* cp, double ktrans,
                                        double ve, double* out, double* dk, double* dve) {
    double k = ktrans * OSIPY_PER_MIN;
    double kep = k / ve;
    if (!dk) {
        osipy_exp_conv(tab, t, cp, kep, out, OSIPY_N);
        #pragma unroll 1
        for (int i = 0; i < OSIPY_N; i++) out[i] *= k;
        return;
    }
    osipy_exp_conv_d(tab, t, cp, kep, out, dve, OSIPY_N);
    double k_ve = k / ve, kkep_ve = k * kep / ve;
    #pragma unroll 1
    for (int i = 0; i < OSIPY_N; i++) {
        double conv = out[i], dconv = dve[i];
        out[i] = k * conv;
        dk[i] = (conv + k_ve * dconv) * OSIPY_PER_MIN;
        dve[i] = -kkep_ve * dconv;
    }
}

// One interval of the exponential-convolution recursion (models.rs `step`).
__device__ static double osipy_step(const double* tab, double dt, double a0, double a1, double k, double c) {
    double f1, f2, d1, d2;
    double x = k * dt;
    osipy_conv_kernels(tab, x, &f1, &f2, &d1, &d2);
    double e = exp(-x);
    double g1 = dt * f1, g2 = dt * f2;
    double end = e * 0.0 + a0 * g1 + (a1 - a0) * g2;
    return exp(-k * dt) * c + end;
}

// The model at parameters x with AIF cp: prediction, and the Jacobian
// when jac is not 0.
__device__ static void osipy_dce(const double* tab, const double* t, const double* cp, const double* x,
                                 double* pred, double* jac) {
#if defined(OSIPY_DCE_TOFTS)
    osipy_tofts_into(tab, t, cp, x[0], x[1], pred, jac, jac ? jac + OSIPY_N : 0);
#elif defined(OSIPY_DCE_EXTENDED_TOFTS)
    osipy_tofts_into(tab, t, cp, x[0], x[1], pred, jac, jac ? jac + OSIPY_N : 0);
    if (jac)
        #pragma unroll 1
        for (int i = 0; i < OSIPY_N; i++) jac[2 * OSIPY_N + i] = cp[i];
    #pragma unroll 1
    for (int i = 0; i < OSIPY_N; i++) pred[i] += x[2] * cp[i];
#elif defined(OSIPY_DCE_PATLAK)
    osipy_exp_conv(tab, t, cp, 0.0, pred, OSIPY_N);
    if (jac) {
        #pragma unroll 1
        for (int i = 0; i < OSIPY_N; i++) jac[i] = pred[i] * OSIPY_PER_MIN;
        #pragma unroll 1
        for (int i = 0; i < OSIPY_N; i++) jac[OSIPY_N + i] = cp[i];
    }
    #pragma unroll 1
    for (int i = 0; i < OSIPY_N; i++) pred[i] = x[0] * OSIPY_PER_MIN * pred[i] + x[1] * cp[i];
#elif defined(OSIPY_DCE_2CUM)
    double f = x[0] * OSIPY_FLOW, ps = x[1] * OSIPY_PER_MIN, vp = x[2];
    double s = f + ps;
    double a = f * f / s, b = f * ps / s;
    if (!jac) {
        osipy_exp_conv(tab, t, cp, s / vp, pred, OSIPY_N);
        double icp = 0.0;
        #pragma unroll 1
        for (int i = 0; i < OSIPY_N; i++) {
            if (i > 0) icp += 0.5 * (t[i] - t[i - 1]) * (cp[i] + cp[i - 1]);
            pred[i] = a * pred[i] + b * icp;
        }
        return;
    }
    double* df = jac;
    double* dps = jac + OSIPY_N;
    double* dvp = jac + 2 * OSIPY_N;
    osipy_exp_conv_d(tab, t, cp, s / vp, pred, dvp, OSIPY_N);
    double icp = 0.0;
    #pragma unroll 1
    for (int i = 0; i < OSIPY_N; i++) {
        if (i > 0) icp += 0.5 * (t[i] - t[i - 1]) * (cp[i] + cp[i - 1]);
        double e = pred[i], d = dvp[i];
        pred[i] = a * e + b * icp;
        df[i] = (f * (f + 2.0 * ps) / (s * s) * e + a * d / vp + ps * ps / (s * s) * icp) * OSIPY_FLOW;
        dps[i] = (-(f * f) / (s * s) * e + a * d / vp + f * f / (s * s) * icp) * OSIPY_PER_MIN;
        dvp[i] = -a * d * s / (vp * vp);
    }
#elif defined(OSIPY_DCE_2CXM)
    // tcxm_irf
    double f = x[0] * OSIPY_FLOW, ps = x[1] * OSIPY_PER_MIN, ve = x[2], vp = x[3];
    double s = (f + ps) / vp + ps / ve;
    double q = f * ps / (vp * ve);
    double disc = sqrt(fmax(s * s - 4.0 * q, 0.0));
    double alpha = 0.5 * (s + disc);
    double beta = alpha > 0.0 ? q / alpha : 0.0;
    double a1 = alpha > beta ? f * (f / vp - beta) / (alpha - beta) : f;
    double a2 = f - a1;
    if (!jac) {
        pred[0] = 0.0;
        double c1 = 0.0, c2 = 0.0;
        #pragma unroll 1
        for (int i = 0; i < OSIPY_N - 1; i++) {
            c1 = osipy_step(tab, t[i + 1] - t[i], cp[i], cp[i + 1], alpha, c1);
            c2 = osipy_step(tab, t[i + 1] - t[i], cp[i], cp[i + 1], beta, c2);
            pred[i + 1] = a1 * c1 + a2 * c2;
        }
        return;
    }
    // TcxmCoefficients::new (recomputes the irf's inputs as the Rust does)
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
    osipy_exp_conv_d(tab, t, cp, alpha, jac, jac + OSIPY_N, OSIPY_N);
    osipy_exp_conv_d(tab, t, cp, beta, jac + 2 * OSIPY_N, jac + 3 * OSIPY_N, OSIPY_N);
    #pragma unroll 1
    for (int i = 0; i < OSIPY_N; i++) {
        double ea = jac[i], dea = jac[OSIPY_N + i], eb = jac[2 * OSIPY_N + i], deb = jac[3 * OSIPY_N + i];
        pred[i] = a1 * ea + a2 * eb;
        for (int j = 0; j < 4; j++)
            jac[j * OSIPY_N + i] = (da1[j] * ea + a1 * dea * da[j] + da2[j] * eb + a2 * deb * db[j]) * unit[j];
    }
#endif
}

#if !defined(OSIPY_DCE_DELAYED)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    osipy_dce(c, c + 64, c + 64 + OSIPY_N, x, pred, jac);
}
#else
// out[i] = cp(t_i - tau): linear interpolation, zero before the first
// sample and held after the last (models.rs `shift_into`).
__device__ static void osipy_shift(const double* t, const double* cp, double tau, double* out) {
    const int n = OSIPY_N;
    int k = 0;
    #pragma unroll 1
    for (int i = 0; i < n; i++) {
        double xx = t[i] - tau;
        if (xx < t[0]) {
            out[i] = 0.0;
        } else if (xx >= t[n - 1]) {
            out[i] = cp[n - 1];
        } else {
            while (t[k + 1] <= xx) k++;
            while (t[k] > xx) k--;
            out[i] = cp[k] + (xx - t[k]) / (t[k + 1] - t[k]) * (cp[k + 1] - cp[k]);
        }
    }
}

// The last parameter is the delay (s); the model's own are before it.
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const int m = OSIPY_P - 1;
    const double* t = c + 64;
    const double* cp = c + 64 + OSIPY_N;
    double shifted[OSIPY_N], pred_h[OSIPY_N];
    osipy_shift(t, cp, x[m], shifted);
    osipy_dce(c, t, shifted, x, pred, jac);
    double h = 1e-3;
    osipy_shift(t, cp, x[m] + h, shifted);
    osipy_dce(c, t, shifted, x, pred_h, 0);
    #pragma unroll 1
    for (int i = 0; i < OSIPY_N; i++) jac[m * OSIPY_N + i] = (pred_h[i] - pred[i]) / h;
}
#endif
