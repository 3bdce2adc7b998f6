// The Look-Locker inversion-recovery model |A - B exp(-TI / T1*)| in CUDA
// C: t1.rs's `LookLockerModel::predict_with_jacobian`, with the same order
// of floating-point operations. Constants c: the inversion times
// (OSIPY_N, s).

__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    for (int i = 0; i < OSIPY_N; i++) {
        double e = exp(-c[i] / x[2]);
        double f = x[0] - x[1] * e;
        double sg = f < 0.0 ? -1.0 : 1.0;
        pred[i] = fabs(f);
        jac[i] = sg;
        jac[OSIPY_N + i] = -sg * e;
        jac[2 * OSIPY_N + i] = -sg * x[1] * e * c[i] / (x[2] * x[2]);
    }
}
