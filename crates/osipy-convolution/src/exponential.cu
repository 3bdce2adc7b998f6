// Recursive exponential convolution in CUDA C: exponential.rs's
// `exp_conv` and `exp_conv_with_derivative` with the same branches and the
// same order of floating-point operations (see that file for the method).
// `tab` holds the four Taylor tables of `kernels`, 16 values each
// (`gpu_series_tables()` on the host).

__device__ static void osipy_conv_kernels(const double* tab, double x, double* f1, double* f2,
                                          double* d1, double* d2) {
    if (fabs(x) < 0.5) {
        double y = -x;
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        for (int n = 15; n >= 0; n--) {
            a0 = a0 * y + tab[n];
            a1 = a1 * y + tab[16 + n];
            a2 = a2 * y + tab[32 + n];
            a3 = a3 * y + tab[48 + n];
        }
        *f1 = a0;
        *f2 = a1;
        *d1 = a2;
        *d2 = a3;
    } else {
        double e = exp(-x);
        double om = -expm1(-x);
        double x2 = x * x;
        *f1 = om / x;
        *f2 = (x - om) / x2;
        *d1 = (x * e - om) / x2;
        *d2 = (om * x - 2.0 * (x - om)) / (x2 * x);
    }
}

// out[i] = int_{t0}^{t_i} a(s) exp(-k (t_i - s)) ds.
__device__ static void osipy_exp_conv(const double* tab, const double* t, const double* a, double k,
                                      double* out, int n) {
    if (n == 0) return;
    out[0] = 0.0;
    double c = 0.0;
    double last_dt = NAN;
    double e = 0.0, g1 = 0.0, g2 = 0.0;
    #pragma unroll 1
    for (int i = 0; i < n - 1; i++) {
        double dt = t[i + 1] - t[i];
        if (dt != last_dt) {
            double x = k * dt;
            double f1, f2, d1, d2;
            osipy_conv_kernels(tab, x, &f1, &f2, &d1, &d2);
            e = exp(-x);
            g1 = dt * f1;
            g2 = dt * f2;
            last_dt = dt;
        }
        c = e * c + a[i] * g1 + (a[i + 1] - a[i]) * g2;
        out[i + 1] = c;
    }
}

__device__ static bool osipy_is_uniform(const double* t, int n) {
    if (n < 3) return true;
    double dt = t[1] - t[0];
    #pragma unroll 1
    for (int i = 0; i + 1 < n; i++) {
        if (t[i + 1] - t[i] != dt) return false;
    }
    return true;
}

__device__ static void osipy_recur_pair(double e, double dte, double* c, double* d, int n) {
    double e2 = e * e, edte2 = 2.0 * e * dte;
    double cp = c[0], dp = d[0];
    int i = 1;
    while (i + 1 < n) {
        double u0 = c[i], u1 = c[i + 1], w0 = d[i], w1 = d[i + 1];
        c[i] = e * cp + u0;
        d[i] = e * dp - dte * cp + w0;
        double dn = e2 * dp - edte2 * cp + ((e * w0 + w1) - dte * u0);
        cp = e2 * cp + (e * u0 + u1);
        dp = dn;
        c[i + 1] = cp;
        d[i + 1] = dp;
        i += 2;
    }
    if (i < n) {
        double cn = e * cp + c[i];
        d[i] += e * dp - dte * cp;
        c[i] = cn;
    }
}

// As osipy_exp_conv, also writing dc/dk into dout.
__device__ static void osipy_exp_conv_d(const double* tab, const double* t, const double* a, double k,
                                        double* out, double* dout, int n) {
    if (n == 0) return;
    out[0] = 0.0;
    dout[0] = 0.0;
    if (n >= 2 && osipy_is_uniform(t, n)) {
        double dt = t[1] - t[0];
        double x = k * dt;
        double f1, f2, d1, d2;
        osipy_conv_kernels(tab, x, &f1, &f2, &d1, &d2);
        double e = exp(-x);
        double dte = dt * e, g1 = dt * f1, g2 = dt * f2, h1 = dt * dt * d1, h2 = dt * dt * d2;
        #pragma unroll 1
        for (int i = 0; i < n - 1; i++) {
            double da = a[i + 1] - a[i];
            out[i + 1] = a[i] * g1 + da * g2;
            dout[i + 1] = a[i] * h1 + da * h2;
        }
        osipy_recur_pair(e, dte, out, dout, n);
        return;
    }
    double c = 0.0, d = 0.0;
    double last_dt = NAN;
    double e = 0.0, dte = 0.0, g1 = 0.0, g2 = 0.0, h1 = 0.0, h2 = 0.0;
    #pragma unroll 1
    for (int i = 0; i < n - 1; i++) {
        double dt = t[i + 1] - t[i];
        if (dt != last_dt) {
            double x = k * dt;
            double f1, f2, d1, d2;
            osipy_conv_kernels(tab, x, &f1, &f2, &d1, &d2);
            e = exp(-x);
            dte = dt * e;
            g1 = dt * f1;
            g2 = dt * f2;
            h1 = dt * dt * d1;
            h2 = dt * dt * d2;
            last_dt = dt;
        }
        double da = a[i + 1] - a[i];
        d = e * d - dte * c + a[i] * h1 + da * h2;
        c = e * c + a[i] * g1 + da * g2;
        out[i + 1] = c;
        dout[i + 1] = d;
    }
}
