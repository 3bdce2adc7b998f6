// The gamma-variate (y_max, t0, t_max, alpha) in CUDA C: gamma.rs's
// `predict` then `jacobian` (the default `predict_with_jacobian`), with the
// same order of floating-point operations. Constants c: the times
// (OSIPY_N, s).

__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double d = c[i] - x[1];
        if (d > 0.0) {
            double u = d / x[2];
            pred[i] = x[0] * exp(x[3] * (log(u) + 1.0 - u));
        } else {
            pred[i] = 0.0;
        }
    }
    for (int i = 0; i < OSIPY_N; i++) {
        double d = c[i] - x[1];
        if (d > 0.0) {
            double u = d / x[2];
            double l = log(u) + 1.0 - u;
            double v = x[0] * exp(x[3] * l);
            jac[i] = v / x[0];
            jac[OSIPY_N + i] = -v * x[3] * (1.0 / d - 1.0 / x[2]);
            jac[2 * OSIPY_N + i] = v * x[3] * (u - 1.0) / x[2];
            jac[3 * OSIPY_N + i] = v * l;
        } else {
            jac[i] = 0.0;
            jac[OSIPY_N + i] = 0.0;
            jac[2 * OSIPY_N + i] = 0.0;
            jac[3 * OSIPY_N + i] = 0.0;
        }
    }
}
