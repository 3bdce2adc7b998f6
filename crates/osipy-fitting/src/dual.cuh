// Forward-mode dual numbers in CUDA C++: dual.rs's `Dual<N>` with the same
// operations in the same order, for GPU kernels of models whose Rust
// Jacobian comes from `Dual` (osipy_fitting::dual::DUAL_GPU). `erf` is the
// CUDA (or C library) one where Rust uses puruspe's: they agree to about
// an ulp, not bit for bit.

template <int N>
struct OsipyDual {
    double v;
    double d[N];
};

template <int N>
__device__ inline OsipyDual<N> osipy_dual_c(double v) {
    OsipyDual<N> r;
    r.v = v;
    for (int j = 0; j < N; j++) r.d[j] = 0.0;
    return r;
}

template <int N>
__device__ inline OsipyDual<N> osipy_dual_var(double v, int k) {
    OsipyDual<N> r = osipy_dual_c<N>(v);
    r.d[k] = 1.0;
    return r;
}

template <int N>
__device__ inline OsipyDual<N> osipy_dual_chain(OsipyDual<N> a, double v, double dv) {
    for (int j = 0; j < N; j++) a.d[j] *= dv;
    a.v = v;
    return a;
}

template <int N>
__device__ inline OsipyDual<N> operator+(OsipyDual<N> a, const OsipyDual<N>& o) {
    a.v += o.v;
    for (int j = 0; j < N; j++) a.d[j] += o.d[j];
    return a;
}

template <int N>
__device__ inline OsipyDual<N> operator-(OsipyDual<N> a, const OsipyDual<N>& o) {
    a.v -= o.v;
    for (int j = 0; j < N; j++) a.d[j] -= o.d[j];
    return a;
}

template <int N>
__device__ inline OsipyDual<N> operator*(const OsipyDual<N>& a, const OsipyDual<N>& o) {
    OsipyDual<N> r;
    for (int j = 0; j < N; j++) r.d[j] = a.d[j] * o.v + a.v * o.d[j];
    r.v = a.v * o.v;
    return r;
}

template <int N>
__device__ inline OsipyDual<N> operator/(const OsipyDual<N>& a, const OsipyDual<N>& o) {
    OsipyDual<N> r;
    double q = a.v / o.v;
    for (int j = 0; j < N; j++) r.d[j] = (a.d[j] - q * o.d[j]) / o.v;
    r.v = q;
    return r;
}

template <int N>
__device__ inline OsipyDual<N> operator-(const OsipyDual<N>& a) {
    return osipy_dual_chain(a, -a.v, -1.0);
}

template <int N>
__device__ inline OsipyDual<N> osipy_dual_exp(const OsipyDual<N>& a) {
    double e = exp(a.v);
    return osipy_dual_chain(a, e, e);
}

template <int N>
__device__ inline OsipyDual<N> osipy_dual_expm1(const OsipyDual<N>& a) {
    return osipy_dual_chain(a, expm1(a.v), exp(a.v));
}

template <int N>
__device__ inline OsipyDual<N> osipy_dual_erf(const OsipyDual<N>& a) {
    double dv = 1.12837916709551257389615890312154517 * exp(-a.v * a.v);
    return osipy_dual_chain(a, erf(a.v), dv);
}
