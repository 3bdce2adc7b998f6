// A per-row map kernel (not least squares): thread k of n_fit runs
// osipy_row on batch row v = which[k] (OSIPY_N samples) and writes its
// OSIPY_R values at out[v * OSIPY_R]. The program defines
//   __device__ void osipy_row(const double* c, const double* row, double* rec);
#define OSIPY_MAP_KERNEL                                                                          \
    extern "C" __global__ void osipy_map(const double* c, const double* data, const int* which,  \
                                         int n_fit, double* out) {                               \
        int k = blockIdx.x * blockDim.x + threadIdx.x;                                           \
        if (k >= n_fit) return;                                                                  \
        long long v = which[k];                                                                  \
        osipy_row(c, data + v * OSIPY_N, out + v * OSIPY_R);                                     \
    }
