// The CPU generator of cyber0.common.perturbation in one pass (see native.py): the same hash and
// the same float32 operations (+, -, *, a correctly rounded sqrt, no fused multiply-add), so the
// values are bitwise the eager generator's on any CPU (checked when the module loads, and by
// tests/test_perturbation.py). Also the in-place path's two elementwise passes, w + s z and
// w - c z, each in one pass with the roundings of the two torch ops it replaces (the update also
// with its z generated in the same pass: sub_generated_), and logistic
// regression's batched ZO scalars in one call (logreg_scalars: the formula of
// LogisticRegression.directional_differences, its own order of sums).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
// One copy of the pair loop per instruction set, picked at load time: the same bits from each
// (every operation is IEEE-rounded and -ffp-contract=off keeps them unfused).
#define CYBER0_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CYBER0_CLONES
#endif

namespace {
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr int64_t kChunk = 1024;  // pairs per pass: the pair buffer stays in L1
// The constants of perturbation.py, each the float32 nearest its double: ln on [sqrt(1/2),
// sqrt(2)), sin and cos on [-pi/4, pi/4] (Cephes' single-precision polynomials).
constexpr float kLogP[9] = {7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                            -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                            2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1};
constexpr float kLn2Lo = -2.12194440e-4, kLn2Hi = 0.693359375;
constexpr float kSinP[3] = {-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1};
constexpr float kCosP[3] = {2.443315711809948e-5, -1.388731625493765e-3,
                            4.166664568298827e-2};
constexpr float kHalfPi = 1.5707963267948966;
constexpr int32_t kSqrtHalfBits = 0x3F3504F3;  // float32 sqrt(1/2)

inline uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

// sqrt(-2 ln v) for v = (2^24 - h) 2^-24: v = m 2^e with m in [sqrt(1/2), sqrt(2)), f = m - 1,
// ln v = f + (f^3 P(f) - e 2.12194440e-4 - f^2 / 2) + e 0.693359375.
inline float radius(int32_t h) {
  const float v = static_cast<float>(16777216 - h) * 0x1p-24f;
  int32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const int32_t e = (bits - kSqrtHalfBits) >> 23;
  const int32_t mantissa = bits - e * (1 << 23);
  float m;
  std::memcpy(&m, &mantissa, sizeof m);
  const float f = m - 1.0f;
  const float z = f * f;
  float y = f * kLogP[0];
  for (int i = 1; i < 9; ++i) y = (y + kLogP[i]) * f;
  y = y * z;
  const float ef = static_cast<float>(e);
  y = y + ef * kLn2Lo;
  y = y - z * 0.5f;
  const float ln = (f + y) + ef * kLn2Hi;
  return std::sqrt(ln * -2.0f);
}

// cos and sin of 2 pi low 2^-24 = (q + t) pi / 2 with q = round(low 2^-22), t in [-1/2, 1/2).
inline void turn(int32_t low, float& cos_out, float& sin_out) {
  const int32_t q = (low + (1 << 21)) >> 22;
  const float x = static_cast<float>(low - q * (1 << 22)) * 0x1p-22f * kHalfPi;
  const float z = x * x;
  float s = z * kSinP[0];
  s = (s + kSinP[1]) * z;
  s = (s + kSinP[2]) * z;
  s = s * x + x;
  float c = z * kCosP[0];
  c = (c + kCosP[1]) * z;
  c = (c + kCosP[2]) * z;
  c = c * z;
  c = c - z * 0.5f;
  c = c + 1.0f;
  const float co = (q & 1) ? s : c, si = (q & 1) ? c : s;
  cos_out = ((q + 1) & 2) ? -co : co;
  sin_out = (q & 2) ? -si : si;
}

// Pairs a .. a + m - 1 of the Gaussian stream under key into out (2m floats): counter c gives
// x_c = mix64(key + GAMMA (c + 1)), h = x_c >> 40, low = (x_c >> 8) & 0xFFFFFF (24 bits each),
// and the pair (radius(h) cos, radius(h) sin) of turn(low).
CYBER0_CLONES void gaussian_pairs(float* out, uint64_t key, int64_t a, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    const uint64_t x = mix64(key + kGamma * static_cast<uint64_t>(a + i + 1));
    const float r = radius(static_cast<int32_t>(x >> 40));
    float c, s;
    turn(static_cast<int32_t>((x >> 8) & 0xFFFFFF), c, s);
    out[2 * i] = r * c;
    out[2 * i + 1] = r * s;
  }
}

// Elements [first, first + count) of the Gaussian stream under key: element e is pair e / 2's
// cosine (even e) or sine (odd e).
void gaussian_span(float* out, uint64_t key, int64_t first, int64_t count) {
  float pairs[2 * kChunk];
  const int64_t end = first + count;
  for (int64_t a = first >> 1; 2 * a < end; a += kChunk) {
    const int64_t m = std::min<int64_t>(kChunk, (end + 1) / 2 - a);
    gaussian_pairs(pairs, key, a, m);
    const int64_t lo = std::max<int64_t>(first, 2 * a), hi = std::min<int64_t>(end, 2 * (a + m));
    std::memcpy(out + (lo - first), pairs + (lo - 2 * a), sizeof(float) * (hi - lo));
  }
}

// Elements [first, first + count) of the Rademacher stream: 1 - 2 * bit 32 of x_c, c = e.
void rademacher_span(float* out, uint64_t key, int64_t first, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t x = mix64(key + kGamma * static_cast<uint64_t>(first + i + 1));
    out[i] = static_cast<float>((x >> 32) & 1) * -2.0f + 1.0f;
  }
}

// Row i of the R rows of W floats at base (rows stride floats apart) becomes elements [starts[i],
// starts[i] + W) of the stream under keys[i]. Rows and pieces of 16K elements run in parallel, at
// least 64K elements to a thread.
void fill_rows(float* base, int64_t rows, int64_t width, int64_t stride, const int64_t* keys,
               const int64_t* starts, bool gaussian) {
  auto span = gaussian ? gaussian_span : rademacher_span;
  const int64_t piece = 16 * kChunk;  // elements per task (even: pairs stay whole)
  const int64_t pieces = (width + piece - 1) / piece;
  // Tasks of fewer than 64K elements in all run on the calling thread: waking the pool costs
  // more than they do (a logistic-regression direction is 7,850 elements).
  const int64_t task = std::max<int64_t>(1, std::min(piece, width));
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / task);
  at::parallel_for(0, rows * pieces, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t row = t / pieces, p = (t % pieces) * piece;
      span(base + row * stride + p, static_cast<uint64_t>(keys[row]), starts[row] + p,
           std::min(piece, width - p));
    }
  });
}
}  // namespace

// Row i of out (R, W), float32 with contiguous rows, becomes elements [starts[i], starts[i] + W)
// of the stream under keys[i] (int64 holding the uint64 key).
void fill(torch::Tensor out, torch::Tensor keys, torch::Tensor starts, bool gaussian) {
  TORCH_CHECK(out.dim() == 2 && out.scalar_type() == torch::kFloat32 && out.stride(1) == 1,
              "fill needs a float32 (R, W) tensor with contiguous rows");
  TORCH_CHECK(out.device().is_cpu() && keys.numel() == out.size(0) && starts.numel() == out.size(0),
              "fill needs a CPU tensor and one key and one start per row");
  auto k = keys.contiguous();
  auto s = starts.contiguous();
  fill_rows(out.data_ptr<float>(), out.size(0), out.size(1), out.stride(0), k.data_ptr<int64_t>(),
            s.data_ptr<int64_t>(), gaussian);
}

// Tensor i of outs (float32, contiguous, on the CPU) becomes the stream under keys[i] (the int64
// holding the uint64 key) from its element 0: fill for many small tensors in one call, one
// tensor after another.
void fill_many(const std::vector<torch::Tensor>& outs, const std::vector<int64_t>& keys,
               bool gaussian) {
  TORCH_CHECK(keys.size() == outs.size(), "fill_many needs one key per tensor");
  const int64_t* kp = keys.data();
  const int64_t start = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    const auto& out = outs[i];
    TORCH_CHECK(
        out.device().is_cpu() && out.scalar_type() == torch::kFloat32 && out.is_contiguous(),
        "fill_many needs contiguous float32 CPU tensors");
    fill_rows(out.data_ptr<float>(), 1, out.numel(), out.numel(), kp + i, &start, gaussian);
  }
}

namespace {
// out = (z * s) + w and w = w - (z * c), element by element, each product and sum rounded to
// float32 on its own (the two torch ops they replace, without the temporary between them).
CYBER0_CLONES void shift_span(float* out, const float* w, const float* z, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = z[i] * s + w[i];
}

CYBER0_CLONES void sub_scaled_span(float* w, const float* z, float c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) w[i] = w[i] - z[i] * c;
}

void check_elementwise(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == torch::kFloat32 &&
                  b.scalar_type() == torch::kFloat32 && a.is_contiguous() && b.is_contiguous() &&
                  a.numel() == b.numel(),
              "needs contiguous float32 CPU tensors of the same size");
}
}  // namespace

// out = fl(fl(z * scale) + w) with scale rounded to float32: torch.mul(z, scale).add_(w).
void shift(torch::Tensor out, torch::Tensor w, torch::Tensor z, double scale) {
  check_elementwise(out, w);
  check_elementwise(out, z);
  float* o = out.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* zp = z.data_ptr<float>();
  const float s = static_cast<float>(scale);
  at::parallel_for(0, out.numel(), 1 << 16, [&](int64_t lo, int64_t hi) {
    shift_span(o + lo, wp + lo, zp + lo, s, hi - lo);
  });
}

// w = fl(w - fl(zs[j] * coefficients[j])) in place for j = 0, 1, ... in order, element by
// element: w.sub_(torch.mul(z, c)) term after term, in one pass over w (pieces of 4K elements
// take every term while they are in cache).
void sub_scaled_(torch::Tensor w, const std::vector<torch::Tensor>& zs,
                 const std::vector<double>& coefficients) {
  TORCH_CHECK(zs.size() == coefficients.size(), "sub_scaled_ needs one coefficient per tensor");
  std::vector<const float*> zp;
  std::vector<float> cs;
  for (size_t j = 0; j < zs.size(); ++j) {
    check_elementwise(w, zs[j]);
    zp.push_back(zs[j].data_ptr<float>());
    cs.push_back(static_cast<float>(coefficients[j]));
  }
  float* wp = w.data_ptr<float>();
  const int64_t piece = 4 * kChunk;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, zs.size()));
  at::parallel_for(0, w.numel(), grain, [&](int64_t lo, int64_t hi) {
    for (int64_t a = lo; a < hi; a += piece) {
      const int64_t n = std::min(piece, hi - a);
      for (size_t j = 0; j < zp.size(); ++j) sub_scaled_span(wp + a, zp[j] + a, cs[j], n);
    }
  });
  torch::autograd::impl::bump_version(w);  // as an in-place torch op does
}

// w = fl(w - fl(z_j * coefficients[j])) in place for j = 0, 1, ... in order, z_j the stream
// under keys[j] from element 0: sub_scaled_ with z_j generated in pieces of 4K elements (even:
// Gaussian pairs stay whole) while they are in cache, never stored.
void sub_generated_(torch::Tensor w, const std::vector<int64_t>& keys,
                    const std::vector<double>& coefficients, bool gaussian) {
  TORCH_CHECK(keys.size() == coefficients.size(), "sub_generated_ needs one coefficient per key");
  check_elementwise(w, w);
  auto span = gaussian ? gaussian_span : rademacher_span;
  float* wp = w.data_ptr<float>();
  const int64_t n = w.numel(), piece = 4 * kChunk, pieces = (n + piece - 1) / piece;
  at::parallel_for(0, pieces, (1 << 16) / piece, [&](int64_t lo, int64_t hi) {
    float z[4 * kChunk];
    for (int64_t p = lo; p < hi; ++p) {
      const int64_t a = p * piece, m = std::min(piece, n - a);
      for (size_t j = 0; j < keys.size(); ++j) {
        span(z, static_cast<uint64_t>(keys[j]), a, m);
        sub_scaled_span(wp + a, z, static_cast<float>(coefficients[j]), m);
      }
    }
  });
  torch::autograd::impl::bump_version(w);  // as an in-place torch op does
}

namespace {
constexpr int64_t kLanes = 16;  // float accumulators per dot product: one AVX-512 register
constexpr int64_t kTile = 4;    // rows by samples per tile: 16 accumulators in registers
// Most multiply-adds of one group's logit parts taken in tiles (tiled_products); more go to
// ATen's matrix product, faster there (ν = 1 at a batch of 32 is 501,760).
constexpr int64_t kTiledProducts = 1 << 20;
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

// kLanes floats from p (any alignment); with n < kLanes, the first n and zeros after them.
inline Lanes load(const float* p, int64_t n = kLanes) {
  Lanes v = {};
  std::memcpy(&v, p, sizeof(float) * n);
  return v;
}

// dots[i][k] = sum_f rows[i][f] x[k][f] for a 4 x 4 tile, f < width: products and sums rounded
// to float32 one by one into 16 lanes (element f goes to lane f mod 16, in order of f), the lanes
// then summed in double in lane order. The order depends on nothing but width, so every tile,
// thread and instruction set gives the same bits.
CYBER0_CLONES void dot_tile(const float* const* rows, const float* const* x, int64_t width,
                            double dots[kTile][kTile]) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
  const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
  Lanes acc[kTile][kTile] = {};
  int64_t f = 0;
  const auto step = [&](const Lanes a[kTile], const Lanes b[kTile]) {
    for (int i = 0; i < kTile; ++i)
      for (int k = 0; k < kTile; ++k) acc[i][k] += a[i] * b[k];
  };
  for (; f + kLanes <= width; f += kLanes) {
    const Lanes a[kTile] = {load(r0 + f), load(r1 + f), load(r2 + f), load(r3 + f)};
    const Lanes b[kTile] = {load(x0 + f), load(x1 + f), load(x2 + f), load(x3 + f)};
    step(a, b);
  }
  if (f < width) {
    const int64_t n = width - f;
    const Lanes a[kTile] = {load(r0 + f, n), load(r1 + f, n), load(r2 + f, n), load(r3 + f, n)};
    const Lanes b[kTile] = {load(x0 + f, n), load(x1 + f, n), load(x2 + f, n), load(x3 + f, n)};
    step(a, b);
  }
  for (int i = 0; i < kTile; ++i)
    for (int k = 0; k < kTile; ++k) {
      double sum = 0.0;
      for (int l = 0; l < kLanes; ++l) sum += acc[i][k][l];
      dots[i][k] = sum;
    }
}

// parts[g][r][s] = row r of group g (W_g's rows, then each Z_j's) times example s of x[g], in
// 4 x 4 tiles (dot_tile) rounded to float32, tiles split across threads (at least 2^18
// multiply-adds to a thread: waking the pool costs more than fewer do).
void tiled_products(const float* wp, int64_t ws, const float* zp, int64_t zs, const float* xp,
                    int64_t groups, int64_t classes, int64_t rows, int64_t size,
                    int64_t features, float* parts) {
  const int64_t row_tiles = (rows + kTile - 1) / kTile, sample_tiles = (size + kTile - 1) / kTile;
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / (kTile * kTile * features));
  at::parallel_for(0, groups * row_tiles * sample_tiles, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t g = t / (row_tiles * sample_tiles);
      const int64_t r0 = (t / sample_tiles) % row_tiles * kTile, s0 = t % sample_tiles * kTile;
      const float* row[kTile];
      const float* sample[kTile];
      for (int i = 0; i < kTile; ++i) {
        const int64_t r = std::min(r0 + i, rows - 1);  // an edge tile repeats its last row
        row[i] = r < classes ? wp + g * ws + r * features
                             : zp + (r / classes - 1) * zs + classes + (r % classes) * features;
        sample[i] = xp + (g * size + std::min(s0 + i, size - 1)) * features;
      }
      double dots[kTile][kTile];
      dot_tile(row, sample, features, dots);
      for (int i = 0; i < kTile && r0 + i < rows; ++i)
        for (int k = 0; k < kTile && s0 + k < size; ++k)
          parts[(g * rows + r0 + i) * size + s0 + k] = static_cast<float>(dots[i][k]);
    }
  });
}

// log sum_c exp(a[c] + sign u[c]) - (a[label] + sign u[label]), in double.
double cross_entropy(const double* a, const double* u, double sign, int64_t classes,
                     int64_t label) {
  double top = -INFINITY;
  for (int64_t c = 0; c < classes; ++c) top = std::max(top, a[c] + sign * u[c]);
  double sum = 0.0;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(a[c] + sign * u[c] - top);
  return top + std::log(sum) - (a[label] + sign * u[label]);
}

constexpr int64_t kExamples = 8;  // examples per vector of doubles
typedef double Doubles __attribute__((vector_size(kExamples * sizeof(double))));
typedef int64_t Longs __attribute__((vector_size(kExamples * sizeof(int64_t))));
// 1 / n! for n = 0 .. 13.
constexpr double kTaylor[14] = {1.0,
                                1.0,
                                0.5,
                                1.6666666666666666e-01,
                                4.1666666666666664e-02,
                                8.3333333333333332e-03,
                                1.3888888888888889e-03,
                                1.9841269841269841e-04,
                                2.4801587301587302e-05,
                                2.7557319223985893e-06,
                                2.7557319223985888e-07,
                                2.5052108385441720e-08,
                                2.0876756987868100e-09,
                                1.6059043836821613e-10};

// n doubles from p, zeros after them (a whole vector in one move).
inline Doubles load(const double* p, int64_t n) {
  Doubles v = {};
  if (n == kExamples)
    std::memcpy(&v, p, sizeof v);
  else
    std::memcpy(&v, p, sizeof(double) * n);
  return v;
}

// n floats from p as doubles, zeros after them.
inline Doubles load_floats(const float* p, int64_t n) {
  typedef float Floats __attribute__((vector_size(kExamples * sizeof(float))));
  Floats v = {};
  if (n == kExamples)
    std::memcpy(&v, p, sizeof v);
  else
    std::memcpy(&v, p, sizeof(float) * n);
  return __builtin_convertvector(v, Doubles);
}

// e^x lane by lane, x clamped to [-708, 709]: x = k ln2 + r with k rounded to nearest (through
// the 1.5 2^52 shift) and |r| <= ~ln2 / 2 (ln2 in two parts, the first exact times k), e^r by
// its Taylor polynomial of degree 13 (truncation under 1e-17 relative), times 2^k made in the
// exponent bits. IEEE operations only, unfused: the same bits in every copy of the code.
inline Doubles exp_lanes(Doubles x) {
  const Doubles low = Doubles{} - 708.0, high = Doubles{} + 709.0, shift = Doubles{} + 0x1.8p52;
  x = x < low ? low : x;
  x = x > high ? high : x;
  Doubles k = x * 1.4426950408889634 + shift;
  Longs bits;
  std::memcpy(&bits, &k, sizeof bits);
  bits = (bits - 0x4338000000000000LL + 1023) << 52;
  k -= shift;
  const Doubles r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
  Doubles p = Doubles{} + kTaylor[13];
  for (int i = 12; i >= 0; --i) p = p * r + kTaylor[i];
  Doubles scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// p[c size + s] = softmax over c of a_s, a_s[c] = b[c] + parts[c size + s] in double, for the
// examples s < size, 8 at a time (exp_lanes).
CYBER0_CLONES void softmax_lanes(const float* parts, const float* b, int64_t classes,
                                 int64_t size, double* p) {
  const auto a_lanes = [&](int64_t c, int64_t s0, int64_t n) {
    return load_floats(parts + c * size + s0, n) + static_cast<double>(b[c]);
  };
  for (int64_t s0 = 0; s0 < size; s0 += kExamples) {
    const int64_t n = std::min(kExamples, size - s0);
    Doubles top = Doubles{} - INFINITY, sum = {};
    for (int64_t c = 0; c < classes; ++c) {
      const Doubles a = a_lanes(c, s0, n);
      top = a > top ? a : top;
    }
    for (int64_t c = 0; c < classes; ++c) {
      const Doubles t = exp_lanes(a_lanes(c, s0, n) - top);
      std::memcpy(p + c * size + s0, &t, sizeof(double) * n);
      sum += t;
    }
    for (int64_t c = 0; c < classes; ++c) {
      const Doubles t = load(p + c * size + s0, n) / sum;
      std::memcpy(p + c * size + s0, &t, sizeof(double) * n);
    }
  }
}

// sum_s [CE(a_s + u_s) - CE(a_s - u_s)] over one group's examples along one direction, in
// double, examples in order: u_s[c] = mu (zb[c] + e[c size + s]), a_s[c] = b[c] +
// w[c size + s] and p = softmax(a) laid out [c size + s]. sum_c exp(a_c +- u_c) =
// e^{lse(a)} sum_c p_c e^{+-u_c}, so with h = max_c u_c and t_c = e^{u_c - h} an example's
// difference is 2 h + log(sum_c p_c t_c / sum_c p_c / t_c) - 2 u_label: one exp per class, 8
// examples at a time (exp_lanes). An example whose u spans 600 or more (1 / t_c could
// overflow) is taken directly (cross_entropy). Each example's term depends on that example alone.
CYBER0_CLONES double difference_sum(const float* w, const float* b, const double* p,
                                    const float* e, const float* zb, double mu,
                                    const int64_t* labels, int64_t classes, int64_t size) {
  // u_s[c], computed where needed (the same operations in a lane and alone, so the same bits).
  const auto u_lanes = [&](int64_t c, int64_t s0, int64_t n) {
    return (load_floats(e + c * size + s0, n) + static_cast<double>(zb[c])) * mu;
  };
  const auto u_one = [&](int64_t c, int64_t s) {
    return (static_cast<double>(e[c * size + s]) + static_cast<double>(zb[c])) * mu;
  };
  std::vector<double> a_s(classes), u_s(classes);
  double sum = 0.0;
  for (int64_t s0 = 0; s0 < size; s0 += kExamples) {
    const int64_t n = std::min(kExamples, size - s0);
    Doubles high = Doubles{} - INFINITY, low = Doubles{} + INFINITY;
    for (int64_t c = 0; c < classes; ++c) {
      const Doubles u = u_lanes(c, s0, n);
      high = u > high ? u : high;
      low = u < low ? u : low;
    }
    Doubles plus = {}, minus = {};
    for (int64_t c = 0; c < classes; ++c) {
      const Doubles t = exp_lanes(u_lanes(c, s0, n) - high), pc = load(p + c * size + s0, n);
      plus += pc * t;
      minus += pc / t;
    }
    for (int64_t l = 0; l < n; ++l) {
      const int64_t s = s0 + l, label = labels[s];
      if (high[l] - low[l] < 600.0) {
        sum += 2.0 * high[l] + std::log(plus[l] / minus[l]) - 2.0 * u_one(label, s);
        continue;
      }
      for (int64_t c = 0; c < classes; ++c) {
        a_s[c] = static_cast<double>(w[c * size + s]) + static_cast<double>(b[c]);
        u_s[c] = u_one(c, s);
      }
      sum += cross_entropy(a_s.data(), u_s.data(), 1.0, classes, label) -
             cross_entropy(a_s.data(), u_s.data(), -1.0, classes, label);
    }
  }
  return sum;
}
}  // namespace

// g (G, nu) in float64 for logistic regression's G groups at bias (G, C) and weight (G, C D),
// group g on its batch x[g] (B, D...), y[g] (B,), along the step's directions z (nu, C + C D):
// g_j = (L(w + mu z_j) - L(w - mu z_j)) / (2 mu), L the batch's mean cross-entropy. The logits
// are linear in the weights, so at w +- mu z_j they are a +- mu e_j with a = b + W x and
// e_j = z_j's bias + Z_j x: the dot products are taken once per row of W and of each Z_j (not
// once per perturbed row, and w +- mu z is never rounded to float32), in 4 x 4 tiles
// (tiled_products) or, for a group of more than kTiledProducts, as one ATen matrix product per
// group, and the losses in double (difference_sum). Row g depends only on group g's inputs and
// on its shapes, so a client gets the same bits alone and grouped.
torch::Tensor logreg_scalars(const torch::Tensor& bias, const torch::Tensor& weight,
                             const torch::Tensor& z, const torch::Tensor& x_in,
                             const torch::Tensor& y_in, double mu) {
  TORCH_CHECK(bias.dim() == 2 && weight.dim() == 2 && z.dim() == 2 && y_in.dim() == 2 &&
                  x_in.dim() >= 2,
              "logreg_scalars needs bias (G, C), weight (G, C D), z (nu, C + C D), x (G, B, ...) "
              "and y (G, B)");
  const int64_t groups = bias.size(0), classes = bias.size(1), nu = z.size(0);
  const int64_t size = y_in.size(1);
  TORCH_CHECK(classes > 0 && weight.size(0) == groups && weight.size(1) % classes == 0 &&
                  z.size(1) == classes + weight.size(1) && y_in.size(0) == groups &&
                  x_in.size(0) == groups && x_in.size(1) == size,
              "logreg_scalars: shapes do not match");
  const int64_t features = weight.size(1) / classes;
  for (const auto* t : {&bias, &weight, &z})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat32 && t->stride(1) == 1,
                "logreg_scalars needs float32 CPU bias, weight and z with contiguous rows");
  const auto x = x_in.contiguous();
  const auto y = y_in.to(torch::kInt64).contiguous();
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.numel() == groups * size * features,
              "logreg_scalars needs float32 x of ", features, " features per example");
  const int64_t* labels = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < y.numel(); ++i)
    TORCH_CHECK(labels[i] >= 0 && labels[i] < classes, "label ", labels[i], " is not in [0, ",
                classes, ")");
  auto out = torch::empty({groups, nu}, torch::dtype(torch::kFloat64));
  if (groups == 0 || nu == 0) return out;
  TORCH_CHECK(size > 0, "logreg_scalars needs at least one example per group");
  // Rows r < C: W's; r = C (1 + j) + c: row c of Z_j. Logit parts: parts[g][r][s].
  const int64_t rows = classes * (1 + nu);
  const float* bp = bias.data_ptr<float>();
  const float* zp = z.data_ptr<float>();
  const int64_t bs = bias.stride(0), zs = z.stride(0);
  auto parts_t = torch::empty({groups, rows, size}, weight.options());
  float* parts = parts_t.data_ptr<float>();
  if (rows * size * features <= kTiledProducts) {
    tiled_products(weight.data_ptr<float>(), weight.stride(0), zp, zs, x.data_ptr<float>(),
                   groups, classes, rows, size, features, parts);
  } else {  // each group's one matrix product (a group of one's shapes: the same bits alone)
    auto stacked = torch::empty({rows, features}, weight.options());
    stacked.slice(0, classes).view({nu, classes, features})
        .copy_(z.slice(1, classes).view({nu, classes, features}));
    const auto examples = x.view({groups, size, features});
    for (int64_t g = 0; g < groups; ++g) {
      stacked.slice(0, 0, classes).copy_(weight[g].view({classes, features}));
      auto out_g = parts_t[g];
      torch::mm_out(out_g, stacked, examples[g].t());
    }
  }
  // p = softmax(b + W x) of every example (softmax_lanes, laid out (G, C, B)), then each
  // (group, direction)'s examples (difference_sum).
  std::vector<double> probabilities(groups * classes * size);
  at::parallel_for(0, groups, std::max<int64_t>(1, 4096 / (size * classes)), [&](int64_t lo,
                                                                                 int64_t hi) {
    for (int64_t g = lo; g < hi; ++g)
      softmax_lanes(parts + g * rows * size, bp + g * bs, classes, size,
                    probabilities.data() + g * classes * size);
  });
  double* op = out.data_ptr<double>();
  at::parallel_for(0, groups * nu, std::max<int64_t>(1, 8192 / (size * classes)),
                   [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t g = t / nu, j = t % nu;
      const float* w = parts + g * rows * size;
      const double sum = difference_sum(w, bp + g * bs, probabilities.data() + g * classes * size,
                                        w + classes * (1 + j) * size, zp + j * zs, mu,
                                        labels + g * size, classes, size);
      op[t] = sum / static_cast<double>(size) / (2.0 * mu);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fill", &fill);
  m.def("fill_many", &fill_many);
  m.def("shift", &shift);
  m.def("sub_scaled_", &sub_scaled_);
  m.def("sub_generated_", &sub_generated_);
  m.def("logreg_scalars", &logreg_scalars);
}
