// DCE pharmacokinetic models in CUDA C: models.rs's `tofts_kernel`,
// `etofts_kernel` and `patlak_kernel` (prediction and analytic Jacobian)
// with the same order of floating-point operations. Constants c: the 64
// Taylor values of the convolution kernels, then the times t (OSIPY_N, s),
// then the plasma AIF cp (OSIPY_N, mM). Needs EXP_CONV_GPU before it.

#define OSIPY_PER_MIN (1.0 / 60.0)

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
#endif
