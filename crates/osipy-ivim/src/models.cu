// IVIM models in CUDA C: models.rs's `predict_with_jacobian` of the
// bi-exponential, simplified and mono-exponential models, with the same
// order of floating-point operations. Constants c: the b-values
// (OSIPY_N, s/mm^2).

#if defined(OSIPY_IVIM_BIEXPONENTIAL)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double b = c[i];
        double e1 = exp(-b * x[2]), e2 = exp(-b * x[3]);
        double shape = (1.0 - x[1]) * e1 + x[1] * e2;
        pred[i] = x[0] * shape;
        jac[i] = shape;
        jac[OSIPY_N + i] = x[0] * (e2 - e1);
        jac[2 * OSIPY_N + i] = -x[0] * (1.0 - x[1]) * b * e1;
        jac[3 * OSIPY_N + i] = -x[0] * x[1] * b * e2;
    }
}
#elif defined(OSIPY_IVIM_SIMPLIFIED)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double b = c[i];
        if (b == 0.0) {
            pred[i] = x[0];
            jac[i] = 1.0;
            jac[OSIPY_N + i] = 0.0;
            jac[2 * OSIPY_N + i] = 0.0;
        } else {
            double e = exp(-b * x[2]);
            pred[i] = x[0] * (1.0 - x[1]) * e;
            jac[i] = (1.0 - x[1]) * e;
            jac[OSIPY_N + i] = -x[0] * e;
            jac[2 * OSIPY_N + i] = -b * pred[i];
        }
    }
}
#elif defined(OSIPY_IVIM_MONO_EXPONENTIAL)
__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double e = exp(-c[i] * x[1]);
        pred[i] = x[0] * e;
        jac[i] = e;
        jac[OSIPY_N + i] = -c[i] * pred[i];
    }
}
#endif
