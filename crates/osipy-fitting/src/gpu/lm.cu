// osipy bounded Levenberg-Marquardt, one voxel per GPU thread.
//
// The same method, decisions and order of floating-point operations as the
// CPU engine (crates/osipy-fitting/src/lm.rs: `fit_one` with an analytic
// Jacobian); see that file for the method and its references (Marquardt
// 1963; Nielsen 1999; Kanzow, Yamashita & Fukushima 2004; MINPACK's
// scaled-gradient test). Compiled with --fmad=false so that no product is
// fused into an addition the CPU code does not fuse. `#pragma unroll 1` on
// the loops over samples keeps programs small: on 80 samples NVRTC 12.9
// compiles a DCE model in 0.6-1.2 s instead of 2-3.5 s, into half the PTX
// (whether unrolling would pay on a GPU has not been measured).
//
// Before this file the program defines OSIPY_N (samples per voxel) and
// OSIPY_P (parameters), and after the model's source it instantiates the
// entry point with OSIPY_LM_KERNEL. The model source defines
//   __device__ void osipy_model(const double* c, const double* x,
//                               double* pred, double* jac);
// writing the prediction (OSIPY_N values) and the column-major Jacobian
// (jac[j * OSIPY_N + i]) at parameters x, from the model's constants c.

#define OSIPY_STATUS_CONVERGED 1
#define OSIPY_STATUS_AT_BOUND 2
#define OSIPY_STATUS_MAX_ITERATIONS 3
#define OSIPY_STATUS_NON_FINITE_INPUT 4
#define OSIPY_STATUS_SINGULAR 5
#define OSIPY_STATUS_MODEL_FAILURE 7
#define OSIPY_EVALUATE 0

__device__ static double osipy_dot(const double* a, const double* b, int n) {
    double acc0 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0;
    int chunks = n / 4;
    #pragma unroll 1
    for (int c = 0; c < chunks; c++) {
        acc0 += a[4 * c] * b[4 * c];
        acc1 += a[4 * c + 1] * b[4 * c + 1];
        acc2 += a[4 * c + 2] * b[4 * c + 2];
        acc3 += a[4 * c + 3] * b[4 * c + 3];
    }
    double tail = 0.0;
    #pragma unroll 1
    for (int i = 4 * chunks; i < n; i++) tail += a[i] * b[i];
    return (acc0 + acc1) + (acc2 + acc3) + tail;
}

__device__ static bool osipy_all_finite(const double* v, int n) {
    double acc0 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0;
    int chunks = n / 4;
    #pragma unroll 1
    for (int c = 0; c < chunks; c++) {
        acc0 += v[4 * c] * 0.0;
        acc1 += v[4 * c + 1] * 0.0;
        acc2 += v[4 * c + 2] * 0.0;
        acc3 += v[4 * c + 3] * 0.0;
    }
    double tail = 0.0;
    #pragma unroll 1
    for (int i = 4 * chunks; i < n; i++) tail += v[i] * 0.0;
    return (acc0 + acc1 + acc2 + acc3 + tail) == 0.0;
}

__device__ static double osipy_ssr(const double* y, const double* f, int n) {
    double acc0 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0;
    int chunks = n / 4;
    #pragma unroll 1
    for (int c = 0; c < chunks; c++) {
        double d0 = y[4 * c] - f[4 * c];
        double d1 = y[4 * c + 1] - f[4 * c + 1];
        double d2 = y[4 * c + 2] - f[4 * c + 2];
        double d3 = y[4 * c + 3] - f[4 * c + 3];
        acc0 += d0 * d0;
        acc1 += d1 * d1;
        acc2 += d2 * d2;
        acc3 += d3 * d3;
    }
    double tail = 0.0;
    #pragma unroll 1
    for (int i = 4 * chunks; i < n; i++) tail += (y[i] - f[i]) * (y[i] - f[i]);
    return (acc0 + acc1) + (acc2 + acc3) + tail;
}

__device__ static bool osipy_chol_factor(double* a, int m) {
    #pragma unroll 1
    for (int j = 0; j < m; j++) {
        double d = a[j * m + j];
        for (int k = 0; k < j; k++) d -= a[j * m + k] * a[j * m + k];
        if (!(d > 0.0) || !isfinite(d)) return false;
        d = sqrt(d);
        a[j * m + j] = d;
        #pragma unroll 1
        for (int i = j + 1; i < m; i++) {
            double s = a[i * m + j];
            for (int k = 0; k < j; k++) s -= a[i * m + k] * a[j * m + k];
            a[i * m + j] = s / d;
        }
    }
    return true;
}

__device__ static void osipy_chol_subst(const double* l, int m, double* b) {
    #pragma unroll 1
    for (int i = 0; i < m; i++) {
        double s = b[i];
        for (int k = 0; k < i; k++) s -= l[i * m + k] * b[k];
        b[i] = s / l[i * m + i];
    }
    for (int i = m - 1; i >= 0; i--) {
        double s = b[i];
        #pragma unroll 1
        for (int k = i + 1; k < m; k++) s -= l[k * m + i] * b[k];
        b[i] = s / l[i * m + i];
    }
}

__device__ static double osipy_clamp(double x, double lo, double hi) {
    // Rust's f64::clamp: max then min, NaN passes through.
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    return x;
}

// One voxel's fit state: the iterate, the bounds, the current and trial
// evaluations, the normal equations and the damping.
struct OsipyLm {
    const double* c;
    double data[OSIPY_N];
    double x[OSIPY_P], xt[OSIPY_P], lo[OSIPY_P], hi[OSIPY_P];
    int fr[OSIPY_P];
    double pred_a[OSIPY_N], pred_b[OSIPY_N];
    double jac_a[OSIPY_N * OSIPY_P], jac_b[OSIPY_N * OSIPY_P];
    double* pred;
    double* jac;
    double* tpred;
    double* tjac;
    double resid[OSIPY_N];
    double full[OSIPY_P * OSIPY_P], gall[OSIPY_P], g[OSIPY_P];
    double a[OSIPY_P * OSIPY_P], chol[OSIPY_P * OSIPY_P], step[OSIPY_P];
    int idx[OSIPY_P];
    double cov[OSIPY_P];
    double cost, lambda, nu, floor_, gscaled, pred_red;
    int iterations, m;
};

__device__ static void osipy_reductions(OsipyLm* w) {
    const int n = OSIPY_N, p = OSIPY_P;
    #pragma unroll 1
    for (int i = 0; i < n; i++) w->resid[i] = w->data[i] - w->pred[i];
    for (int a = 0; a < p; a++) {
        if (!w->fr[a]) continue;
        const double* ca = w->jac + a * n;
        for (int b = 0; b <= a; b++) {
            if (w->fr[b]) {
                double s = osipy_dot(ca, w->jac + b * n, n);
                w->full[a * p + b] = s;
                w->full[b * p + a] = s;
            }
        }
        w->gall[a] = osipy_dot(ca, w->resid, n);
    }
}

__device__ static double osipy_select(OsipyLm* w, double* max_diag_out) {
    const int p = OSIPY_P;
    double rnorm = sqrt(w->cost);
    int m = 0;
    double gscaled = 0.0;
    for (int j = 0; j < p; j++) {
        if (!w->fr[j]) continue;
        double gj = w->gall[j];
        double cn = w->full[j * p + j];
        bool at_lo = w->x[j] <= w->lo[j] && gj < 0.0;
        bool at_hi = w->x[j] >= w->hi[j] && gj > 0.0;
        if (at_lo || at_hi) continue;
        if (cn > 0.0) gscaled = fmax(gscaled, fabs(gj) / (sqrt(cn) * rnorm));
        w->idx[m] = j;
        w->g[m] = gj;
        m++;
    }
    double max_diag = 0.0;
    #pragma unroll 1
    for (int a = 0; a < m; a++) {
        #pragma unroll 1
        for (int b = 0; b < m; b++) w->a[a * m + b] = w->full[w->idx[a] * p + w->idx[b]];
        max_diag = fmax(max_diag, w->a[a * m + a]);
    }
    w->m = m;
    *max_diag_out = max_diag;
    return gscaled;
}

__device__ static bool osipy_reject(OsipyLm* w) {
    w->lambda *= w->nu;
    w->nu *= 2.0;
    return w->lambda <= 1e16;
}

__device__ static int osipy_exhausted(double gscaled) {
    return gscaled <= 1e-6 ? OSIPY_STATUS_CONVERGED : OSIPY_STATUS_SINGULAR;
}

// Returns OSIPY_EVALUATE with a trial point in xt, or a final status.
__device__ static int osipy_propose(OsipyLm* w, double xtol) {
    const int m = w->m;
    const double floor_ = w->floor_;
    for (;;) {
        for (int k = 0; k < m * m; k++) w->chol[k] = w->a[k];
        #pragma unroll 1
        for (int a = 0; a < m; a++) {
            w->chol[a * m + a] += w->lambda * fmax(w->a[a * m + a], floor_);
            w->step[a] = w->g[a];
        }
        if (!osipy_chol_factor(w->chol, m)) {
            if (!osipy_reject(w)) return osipy_exhausted(w->gscaled);
            continue;
        }
        osipy_chol_subst(w->chol, m, w->step);
        for (int j = 0; j < OSIPY_P; j++) w->xt[j] = w->x[j];
        #pragma unroll 1
        for (int a = 0; a < m; a++) {
            int j = w->idx[a];
            w->xt[j] = osipy_clamp(w->x[j] + w->step[a], w->lo[j], w->hi[j]);
        }
        double step_norm = 0.0, x_norm = 0.0, pred_red = 0.0;
        #pragma unroll 1
        for (int a = 0; a < m; a++) {
            int j = w->idx[a];
            double d = w->xt[j] - w->x[j];
            w->step[a] = d;
            step_norm += d * d;
            x_norm += w->x[j] * w->x[j];
            pred_red += 2.0 * d * w->g[a];
        }
        #pragma unroll 1
        for (int a = 0; a < m; a++) {
            double s = 0.0;
            #pragma unroll 1
            for (int b = 0; b < m; b++) s += w->a[a * m + b] * w->step[b];
            pred_red -= w->step[a] * s;
        }
        if (sqrt(step_norm) <= xtol * (sqrt(x_norm) + xtol)) return OSIPY_STATUS_CONVERGED;
        w->pred_red = pred_red;
        return OSIPY_EVALUATE;
    }
}

__device__ static int osipy_iterate(OsipyLm* w, int max_iterations, double xtol, double gtol) {
    if (w->iterations >= max_iterations) return OSIPY_STATUS_MAX_ITERATIONS;
    w->iterations++;
    if (w->cost == 0.0) return OSIPY_STATUS_CONVERGED;
    double max_diag;
    double gscaled = osipy_select(w, &max_diag);
    if (w->m == 0 || gscaled <= gtol) return OSIPY_STATUS_CONVERGED;
    w->floor_ = max_diag * 1e-12;
    w->gscaled = gscaled;
    return osipy_propose(w, xtol);
}

// Diagonal of (J'J)^-1 over the free parameters strictly inside their
// bounds, into cov; false when J'J is singular.
__device__ static bool osipy_covariance(OsipyLm* w) {
    const int n = OSIPY_N;
    int m = 0;
    for (int j = 0; j < OSIPY_P; j++) {
        if (w->fr[j] && w->x[j] > w->lo[j] && w->x[j] < w->hi[j]) {
            w->idx[m] = j;
            m++;
        }
    }
    #pragma unroll 1
    for (int a = 0; a < m; a++) {
        const double* ca = w->jac + w->idx[a] * n;
        for (int b = 0; b <= a; b++) {
            double s = osipy_dot(ca, w->jac + w->idx[b] * n, n);
            w->a[a * m + b] = s;
            w->a[b * m + a] = s;
        }
    }
    for (int k = 0; k < m * m; k++) w->chol[k] = w->a[k];
    if (!osipy_chol_factor(w->chol, m)) {
        for (int j = 0; j < OSIPY_P; j++) w->cov[j] = NAN;
        return false;
    }
    #pragma unroll 1
    for (int a = 0; a < m; a++) {
        #pragma unroll 1
        for (int k = 0; k < m; k++) w->step[k] = 0.0;
        w->step[a] = 1.0;
        osipy_chol_subst(w->chol, m, w->step);
        w->cov[w->idx[a]] = w->step[a];
    }
    return true;
}

__device__ static int osipy_finish(OsipyLm* w, int status) {
    if (status == OSIPY_STATUS_CONVERGED || status == OSIPY_STATUS_MAX_ITERATIONS) {
        bool identifiable = osipy_covariance(w);
        if (!identifiable && status == OSIPY_STATUS_CONVERGED) status = OSIPY_STATUS_SINGULAR;
    }
    if (status == OSIPY_STATUS_CONVERGED) {
        for (int j = 0; j < OSIPY_P; j++) {
            if (w->fr[j] && (w->x[j] <= w->lo[j] || w->x[j] >= w->hi[j])) {
                status = OSIPY_STATUS_AT_BOUND;
                break;
            }
        }
    }
    return status;
}

// The CPU engine's `fit_one` for a model with an analytic Jacobian.
__device__ static int osipy_fit_one(OsipyLm* w, int max_iterations, double ftol, double xtol, double gtol) {
    for (int j = 0; j < OSIPY_P; j++) w->cov[j] = NAN;
    w->iterations = 0;
    w->cost = NAN;
    if (!osipy_all_finite(w->data, OSIPY_N)) return OSIPY_STATUS_NON_FINITE_INPUT;
    for (int j = 0; j < OSIPY_P; j++) w->x[j] = osipy_clamp(w->x[j], w->lo[j], w->hi[j]);
    osipy_model(w->c, w->x, w->pred, w->jac);
    if (!(osipy_all_finite(w->pred, OSIPY_N) && osipy_all_finite(w->jac, OSIPY_N * OSIPY_P)))
        return OSIPY_STATUS_MODEL_FAILURE;
    w->cost = osipy_ssr(w->data, w->pred, OSIPY_N);
    w->lambda = 1e-3;
    w->nu = 2.0;
    w->m = 0;
    w->floor_ = 0.0;
    w->gscaled = 0.0;
    w->pred_red = 0.0;
    osipy_reductions(w);
    int next = osipy_iterate(w, max_iterations, xtol, gtol);
    for (;;) {
        if (next != OSIPY_EVALUATE) return osipy_finish(w, next);
        osipy_model(w->c, w->xt, w->tpred, w->tjac);
        bool ok = osipy_all_finite(w->tpred, OSIPY_N) && osipy_all_finite(w->tjac, OSIPY_N * OSIPY_P);
        double cost_trial = ok ? osipy_ssr(w->data, w->tpred, OSIPY_N) : INFINITY;
        if (cost_trial < w->cost) {
            double rho = w->pred_red > 0.0 ? (w->cost - cost_trial) / w->pred_red : 0.5;
            double q = 2.0 * rho - 1.0;
            w->lambda *= fmax(1.0 - q * q * q, 1.0 / 3.0);
            w->nu = 2.0;
            double rel = (w->cost - cost_trial) / w->cost;
            w->cost = cost_trial;
            for (int j = 0; j < OSIPY_P; j++) {
                double t = w->x[j];
                w->x[j] = w->xt[j];
                w->xt[j] = t;
            }
            double* t = w->pred;
            w->pred = w->tpred;
            w->tpred = t;
            t = w->jac;
            w->jac = w->tjac;
            w->tjac = t;
            if (rel <= ftol) {
                next = OSIPY_STATUS_CONVERGED;
            } else {
                osipy_reductions(w);
                next = osipy_iterate(w, max_iterations, xtol, gtol);
            }
        } else if (!osipy_reject(w)) {
            next = osipy_exhausted(w->gscaled);
        } else {
            next = osipy_propose(w, xtol);
        }
    }
}

// The entry point: thread k of n_fit fits batch row v = which[k]. Inputs
// are row-major (data: OSIPY_N a row, x0: OSIPY_P); lower/upper/free hold
// one value a parameter; settings = ftol, xtol, gtol. Outputs, written at
// row v: x and cov (OSIPY_P a row), ssr, iterations and status.
#define OSIPY_LM_KERNEL                                                                           \
    extern "C" __global__ void osipy_lm(const double* c, const double* data, const double* x0,   \
                                        const double* lower, const double* upper,                \
                                        const int* free_, const double* settings,                \
                                        int max_iterations, const int* which, int n_fit,         \
                                        double* x_out, double* cov_out, double* ssr_out,         \
                                        int* iterations_out, int* status_out) {                  \
        int k = blockIdx.x * blockDim.x + threadIdx.x;                                           \
        if (k >= n_fit) return;                                                                  \
        long long v = which[k];                                                                  \
        OsipyLm w;                                                                               \
        w.c = c;                                                                                 \
        w.pred = w.pred_a;                                                                       \
        w.tpred = w.pred_b;                                                                      \
        w.jac = w.jac_a;                                                                         \
        w.tjac = w.jac_b;                                                                        \
        for (int i = 0; i < OSIPY_N; i++) w.data[i] = data[v * OSIPY_N + i];                     \
        for (int j = 0; j < OSIPY_P; j++) {                                                      \
            w.x[j] = x0[v * OSIPY_P + j];                                                        \
            w.lo[j] = lower[j];                                                                  \
            w.hi[j] = upper[j];                                                                  \
            w.fr[j] = free_[j];                                                                  \
        }                                                                                        \
        int status = osipy_fit_one(&w, max_iterations, settings[0], settings[1], settings[2]);   \
        for (int j = 0; j < OSIPY_P; j++) {                                                      \
            x_out[v * OSIPY_P + j] = w.x[j];                                                     \
            cov_out[v * OSIPY_P + j] = w.cov[j];                                                 \
        }                                                                                        \
        ssr_out[v] = w.cost;                                                                     \
        iterations_out[v] = w.iterations;                                                        \
        status_out[v] = status;                                                                  \
    }
