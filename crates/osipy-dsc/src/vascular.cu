// The vascular (gamma transit-time) model of DSC model-based deconvolution
// (flow, MTT, delay) in CUDA C: vascular.rs's `evaluate` with the Jacobian,
// with the same order of floating-point operations. Constants c: [0] the
// time step dt (s), [1] the shape a (a whole number), then the AIF
// (OSIPY_N).

__device__ static void osipy_antiderivatives(int shape, double theta, double x, double* g, double* g2) {
    if (x <= 0.0) {
        *g = 0.0;
        *g2 = 0.0;
        return;
    }
    double z = x / theta;
    double e = exp(-z);
    double term = 1.0, sum = 0.0;
    for (int k = 0; k < shape; k++) {
        sum += term;
        term *= z / (double)(k + 1);
    }
    double q_a = e * sum;
    double sum1 = sum + term;
    double p_a1 = 1.0 - e * sum1;
    double p_a2 = 1.0 - e * (sum1 + term * z / (double)(shape + 1));
    double a = (double)shape;
    *g = x * q_a + a * theta * p_a1;
    *g2 = 0.5 * x * x * q_a + a * theta * x * p_a1 - 0.5 * a * (a + 1.0) * theta * theta * p_a2;
}

__device__ void osipy_model(const double* c, const double* x, double* pred, double* jac) {
    const int n = OSIPY_N, m = 2 * OSIPY_N + 1;
    const double dt = c[0];
    const int shape = (int)c[1];
    const double* aif = c + 2;
    double flow = x[0], mtt = x[1], delay = x[2];
    double theta = mtt / (double)shape;
    double g2[2 * OSIPY_N + 1], g[2 * OSIPY_N + 1], h[2 * OSIPY_N + 1];
    double w[2 * OSIPY_N + 1], wg[2 * OSIPY_N + 1], wh[2 * OSIPY_N + 1];
    for (int idx = 0; idx < m; idx++) {
        double xx = ((double)idx - (double)n) * dt - delay;
        double gv, g2v;
        osipy_antiderivatives(shape, theta, xx, &gv, &g2v);
        g2[idx] = g2v;
        g[idx] = gv;
        h[idx] = (2.0 * g2v - xx * gv) / mtt;
    }
    for (int idx = 1; idx < m - 1; idx++) {
        w[idx] = (g2[idx + 1] - 2.0 * g2[idx] + g2[idx - 1]) / dt;
        wg[idx] = (g[idx + 1] - 2.0 * g[idx] + g[idx - 1]) / dt;
        wh[idx] = (h[idx + 1] - 2.0 * h[idx] + h[idx - 1]) / dt;
    }
    for (int i = 0; i < n; i++) {
        double cc = 0.0, cg = 0.0, ch = 0.0;
        for (int k = 0; k < n; k++) {
            int idx = i + n - k;
            cc += aif[k] * w[idx];
            cg += aif[k] * wg[idx];
            ch += aif[k] * wh[idx];
        }
        pred[i] = flow * cc;
        jac[i] = cc;
        jac[n + i] = flow * ch;
        jac[2 * n + i] = -flow * cg;
    }
}
