// The VFA signal model (M0, T1, B1) in CUDA C: t1.rs's
// `VfaModel::predict_with_jacobian` with the same order of floating-point
// operations. Constants c: TR (s), then the nominal flip angles (OSIPY_N,
// radians), their sines and their cosines (used when B1 is exactly 1).

__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const double tr = c[0];
    const double* angles = c + 1;
    double e1 = exp(-tr / x[1]);
    double de1 = e1 * tr / (x[1] * x[1]);
    for (int i = 0; i < OSIPY_N; i++) {
        double s, cs;
        if (x[2] == 1.0) {
            s = c[1 + OSIPY_N + i];
            cs = c[1 + 2 * OSIPY_N + i];
        } else {
            double a = x[2] * angles[i];
            s = sin(a);
            cs = cos(a);
        }
        double den = 1.0 - cs * e1;
        double f = s * (1.0 - e1) / den;
        pred[i] = x[0] * f;
        jac[i] = f;
        jac[OSIPY_N + i] = x[0] * s * (cs - 1.0) / (den * den) * de1;
        jac[2 * OSIPY_N + i] = x[0] * (1.0 - e1) * (cs - e1) / (den * den) * angles[i];
    }
}
