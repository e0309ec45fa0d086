// The CPU generator of cyber0.common.perturbation in one pass (see native.py): the same hash and
// the same float32 operations, through the same MKL vector-math calls (vmsLn, vmsSqrt, vmsCos,
// vmsSin) that torch's eager log_, sqrt_, cos and sin make on CPU, so the values are bitwise the
// eager generator's (checked when the module loads, and by tests/test_perturbation.py).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>

extern "C" {
void vmsLn(int n, const float* a, float* r, long long mode);
void vmsCos(int n, const float* a, float* r, long long mode);
void vmsSin(int n, const float* a, float* r, long long mode);
void vmsSqrt(int n, const float* a, float* r, long long mode);
int MKL_Set_Num_Threads_Local(int nt);
}

namespace {
// VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE, the mode ATen's vml.h passes.
constexpr long long kMode = 0x00000002LL | 0x00140000LL | 0x00000100LL;  // HA, FTZDAZ off, ignore
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr int64_t kChunk = 1024;  // pairs per vector-math call: the temporaries stay in L1/L2
const float kTheta = static_cast<float>(2.0 * M_PI / 16777216.0);

inline uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

// x_c = mix64(key + GAMMA * (c + 1)); elements [first, first + count) of the Gaussian stream
// under key: element e comes from counter e / 2 by Box-Muller (cosine for even e, sine for odd).
void gaussian_span(float* out, uint64_t key, int64_t first, int64_t count) {
  float v[kChunk], theta[kChunk], r[kChunk], c[kChunk], s[kChunk];
  const int64_t end = first + count;
  for (int64_t a = first >> 1; 2 * a < end; a += kChunk) {
    const int64_t m = std::min<int64_t>(kChunk, (end + 1) / 2 - a);
    for (int64_t i = 0; i < m; ++i) {
      const uint64_t x = mix64(key + kGamma * static_cast<uint64_t>(a + i + 1));
      v[i] = static_cast<float>((x >> 40) & 0xFFFFFF) * -0x1p-24f + 1.0f;
      theta[i] = static_cast<float>((x >> 8) & 0xFFFFFF) * kTheta;
    }
    vmsLn(static_cast<int>(m), v, r, kMode);
    for (int64_t i = 0; i < m; ++i) v[i] = r[i] * -2.0f;
    vmsSqrt(static_cast<int>(m), v, r, kMode);
    vmsCos(static_cast<int>(m), theta, c, kMode);
    vmsSin(static_cast<int>(m), theta, s, kMode);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t e = 2 * (a + i);
      if (e >= first) out[e - first] = r[i] * c[i];
      if (e + 1 >= first && e + 1 < end) out[e + 1 - first] = r[i] * s[i];
    }
  }
}

// Elements [first, first + count) of the Rademacher stream: 1 - 2 * bit 32 of x_c, c = e.
void rademacher_span(float* out, uint64_t key, int64_t first, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t x = mix64(key + kGamma * static_cast<uint64_t>(first + i + 1));
    out[i] = static_cast<float>((x >> 32) & 1) * -2.0f + 1.0f;
  }
}
}  // namespace

// Row i of out (R, W), float32 with contiguous rows, becomes elements [starts[i], starts[i] + W)
// of the stream under keys[i] (int64 holding the uint64 key). Rows and pieces of 16K elements run
// in parallel, at least 64K elements to a thread; MKL's own threading is off inside them.
void fill(torch::Tensor out, torch::Tensor keys, torch::Tensor starts, bool gaussian) {
  TORCH_CHECK(out.dim() == 2 && out.scalar_type() == torch::kFloat32 && out.stride(1) == 1,
              "fill needs a float32 (R, W) tensor with contiguous rows");
  TORCH_CHECK(out.device().is_cpu() && keys.numel() == out.size(0) && starts.numel() == out.size(0),
              "fill needs a CPU tensor and one key and one start per row");
  const int64_t rows = out.size(0), width = out.size(1), stride = out.stride(0);
  auto k = keys.contiguous();
  auto s = starts.contiguous();
  const int64_t* kp = k.data_ptr<int64_t>();
  const int64_t* sp = s.data_ptr<int64_t>();
  float* base = out.data_ptr<float>();
  auto span = gaussian ? gaussian_span : rademacher_span;
  const int64_t piece = 16 * kChunk;  // elements per task (even: pairs stay whole)
  const int64_t pieces = (width + piece - 1) / piece;
  // Tasks of fewer than 64K elements in all run on the calling thread: waking the pool costs
  // more than they do (a logistic-regression direction is 7,850 elements).
  const int64_t task = std::max<int64_t>(1, std::min(piece, width));
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / task);
  at::parallel_for(0, rows * pieces, grain, [&](int64_t lo, int64_t hi) {
    const int previous = MKL_Set_Num_Threads_Local(1);
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t row = t / pieces, p = (t % pieces) * piece;
      span(base + row * stride + p, static_cast<uint64_t>(kp[row]), sp[row] + p,
           std::min(piece, width - p));
    }
    MKL_Set_Num_Threads_Local(previous);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fill", &fill); }
