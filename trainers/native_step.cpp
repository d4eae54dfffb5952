// The per-point work of the integration step, compiled: the prior's score
// (trainers/prior.py, GaussianMixturePrior.score), the control network's forward pass
// (trainers/network.py, ControlNetwork.control), the integrator's arithmetic at one point and
// the draw of a step's noise (trainers/integrator.py, point_update and draw_noise). Each
// function calls the same ATen operators in the same order as its Python twin, so results and
// gradients are bitwise the same; autograd records them as it does from Python. What differs:
// one call per function instead of one per operator, made without Python's interpreter lock,
// so that the threads that integrate row blocks of a batch do not wait on each other between
// operators.
//
// Also here: the network's exact GELU on the CPU (`gelu`), which both the Python and the
// compiled step use where this file is built (trainers/native.py, gelu). Its forward pass
// computes the GELU's slope beside its value and keeps it for the backward pass, which is then
// one product, where torch's backward pass computes the normal CDF and density again.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

using at::Tensor;

namespace {

// The GELU's loops are vectorised (GCC's cheapest cost model, its default at -O2, leaves them
// scalar; clang vectorises them at -O2) and, with GCC on x86-64, built twice: for AVX2 with FMA
// and for the baseline, the first chosen at load time where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GMP_VECTOR_LOOP \
  __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("vect-cost-model=dynamic")))
#elif defined(__GNUC__) && !defined(__clang__)
#define GMP_VECTOR_LOOP __attribute__((optimize("vect-cost-model=dynamic")))
#else
#define GMP_VECTOR_LOOP
#endif

inline float bits_to_float(int32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline int32_t float_to_bits(float value) {
  int32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// exp(v) for v <= 0 as 2^n e^r, |r| <= ln 2 / 2 (Cephes' expf); 0 below 2^-126.
inline float exp_nonpositive(float v) {
  float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // rounded to an integer
  float r = v - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t biased_exponent = static_cast<int32_t>(n) + 127;
  biased_exponent = biased_exponent < 0 ? 0 : biased_exponent;
  return p * bits_to_float(biased_exponent << 23);
}

constexpr int32_t kLargestAbsZBits = 0x41280000;  // 10.5f: erfc(10.5) is below float's range

// Phi(s), the standard normal CDF, with erfc from Abramowitz and Stegun 7.1.26 (absolute error
// below 1.5e-7, as oneDNN's GELU, which torch's CPU GELU calls); `gauss` receives
// exp(-s^2 / 2). Branch-free, so that the loops over it vectorise.
inline float normal_cdf(float s, float& gauss) {
  float z = s * 0.70710678118654752f;
  int32_t abs_z_bits = float_to_bits(z) & 0x7fffffff;
  int32_t excess = abs_z_bits - kLargestAbsZBits;  // |z| capped, non-negative floats order as bits
  float abs_z = bits_to_float(abs_z_bits - (excess & ~(excess >> 31)));
  float t = 1.0f / (1.0f + 0.3275911f * abs_z);
  float poly = t * (0.254829592f +
                    t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  gauss = exp_nonpositive(-abs_z * abs_z);
  float lower_tail = 0.5f * poly * gauss;  // Phi(-|s|)
  float upper = 1.0f - lower_tail;
  int32_t negative = float_to_bits(z) >> 31;  // all ones where z < 0
  return bits_to_float((float_to_bits(upper) & ~negative) | (float_to_bits(lower_tail) & negative));
}

constexpr float kInvSqrt2Pi = 0.39894228040143268f;

GMP_VECTOR_LOOP
void gelu_values(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float gauss;
    y[i] = x[i] * normal_cdf(x[i], gauss);
  }
}

// `slope` may be `x` itself (each element is read before its slope is written).
GMP_VECTOR_LOOP
void gelu_values_and_slopes(const float* x, float* __restrict y, float* slope, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float gauss;
    float cdf = normal_cdf(x[i], gauss);
    y[i] = x[i] * cdf;
    slope[i] = cdf + x[i] * (gauss * kInvSqrt2Pi);
  }
}

// GELU(x) = x Phi(x) of a contiguous float32 CPU tensor, and where `slope` is defined (x
// itself or a tensor like it), Phi(x) + x phi(x) in it.
Tensor exact_gelu_sweep(const Tensor& x, const Tensor& slope) {
  RECORD_FUNCTION("gmp::gelu", std::vector<c10::IValue>({x}));
  Tensor y = at::empty_like(x);
  const float* in = x.const_data_ptr<float>();
  float* out = y.data_ptr<float>();
  float* slopes = slope.defined() ? slope.data_ptr<float>() : nullptr;
  at::parallel_for(0, x.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    if (slopes == nullptr) {
      gelu_values(in + begin, out + begin, end - begin);
    } else {
      gelu_values_and_slopes(in + begin, out + begin, slopes + begin, end - begin);
    }
  });
  return y;
}

// GELU(x) as autograd's node, keeping the slope Phi(x) + x phi(x) for its backward pass: in
// x's own memory where `overwrite_input` says that nothing reads x afterwards (one buffer less
// to write; x's version is bumped, so that autograd refuses a node that saved x).
struct ExactGelu : public torch::autograd::Function<ExactGelu> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                        bool overwrite_input) {
    Tensor input = x.contiguous();
    bool in_place = overwrite_input && input.is_same(x);
    Tensor slope = in_place ? input : at::empty_like(input);
    Tensor y = exact_gelu_sweep(input, slope);
    if (in_place) {
      input.unsafeGetTensorImpl()->bump_version();
    }
    ctx->save_for_backward({slope});
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    return {grads[0] * ctx->get_saved_variables()[0], Tensor()};
  }
};

// sum_i scale_i residual_i^2 per row, for a scalar or per-dimension scale.
Tensor scaled_sq_norm(const Tensor& residual, const Tensor& scale) {
  if (scale.dim() == 0) {
    return residual.square().sum(-1) * scale;
  }
  return at::matmul(residual.square(), scale);
}

// drift, or drift + control where there is a control.
Tensor with_control(const Tensor& drift, const std::optional<Tensor>& control) {
  return control.has_value() ? drift + *control : drift;
}

}  // namespace

// GELU(x) with torch's `approximate`: gmp's kernel for the exact GELU of float32 CPU tensors,
// torch's otherwise. `overwrite_input`: x is a temporary that nothing reads after this call
// (not a leaf), whose memory may then keep what the backward pass needs.
Tensor gelu(const Tensor& x, const std::string& approximate, bool overwrite_input) {
  if (approximate != "none" || !x.device().is_cpu() || x.scalar_type() != at::kFloat) {
    return at::gelu(x, approximate);
  }
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    return exact_gelu_sweep(x.contiguous(), Tensor());
  }
  TORCH_CHECK(!(overwrite_input && x.is_leaf()), "gelu cannot overwrite a leaf tensor");
  return ExactGelu::apply(x, overwrite_input);
}

// grad log p_phi(x) from the prior's score terms (ScoreTerms); `active` (the slots taking part)
// is absent for a single-slot prior.
Tensor prior_score(const Tensor& x, const Tensor& means, const Tensor& precision,
                   const Tensor& weighted_means, const Tensor& logit_offset,
                   const std::optional<Tensor>& active) {
  if (!active.has_value()) {
    return (means - x) * precision;
  }
  // One operator per statement: the order in which autograd records them sets the order in
  // which x's gradient contributions are added, and it must be Python's, left to right.
  Tensor square_term = x.square().matmul(precision.t());
  Tensor cross_term = (x * 2).matmul(weighted_means.t());
  Tensor quad = square_term - cross_term;
  Tensor logits = logit_offset - quad * 0.5;
  Tensor masked = at::where(*active, logits, -std::numeric_limits<double>::infinity());
  Tensor responsibilities = at::softmax(masked, -1);
  Tensor pull = responsibilities.matmul(weighted_means);
  Tensor stiffness = responsibilities.matmul(precision);
  return pull - x * stiffness;
}

// u(x) at one time: clip(f(x, t) + g(t) * clip(score, inner), outer), see ControlNetwork.
Tensor network_control(const Tensor& x, const Tensor& state_bias, const Tensor& x_weight_t,
                       const std::vector<Tensor>& weights_t, const std::vector<Tensor>& biases,
                       const std::string& approximate, const std::optional<Tensor>& score_scale,
                       const std::optional<Tensor>& score, double inner_clip, double outer_clip) {
  Tensor out = at::addmm(state_bias, x, x_weight_t);
  for (size_t i = 0; i < weights_t.size(); ++i) {
    out = at::addmm(biases[i], gelu(out, approximate, /*overwrite_input=*/true), weights_t[i]);
  }
  if (score_scale.has_value()) {
    TORCH_CHECK(score.has_value(), "this network scales the target score: pass `score`");
    out = out + *score_scale * score->clamp(-inner_clip, inner_clip);
  }
  return at::hardtanh(out, -outer_clip, outer_clip);
}

// x_next and the point's share of log w, see point_update in trainers/integrator.py; an
// undefined tensor (None in Python) where there is none.
std::tuple<Tensor, Tensor> point_update(
    const std::optional<Tensor>& x_prev, const Tensor& x, const Tensor& drift,
    const std::optional<Tensor>& u, const std::optional<Tensor>& v,
    const std::optional<Tensor>& eps, const std::optional<Tensor>& into_eta,
    const std::optional<Tensor>& minus_quarter_inv_eta, const std::optional<Tensor>& out_eta,
    const std::optional<Tensor>& noise_scale, const std::optional<Tensor>& quarter_inv_eta,
    bool detach) {
  Tensor log_backward;
  if (into_eta.has_value()) {
    Tensor mean_prev = at::addcmul(x, *into_eta, with_control(drift, v));
    log_backward = scaled_sq_norm(*x_prev - mean_prev, *minus_quarter_inv_eta);
  }
  if (!out_eta.has_value()) {
    return {Tensor(), log_backward};
  }
  Tensor mean_next = at::addcmul(x, *out_eta, with_control(drift, u));
  Tensor x_next = at::addcmul(mean_next, *noise_scale, *eps);
  if (!detach) {
    return {x_next, log_backward};
  }
  x_next = x_next.detach();
  Tensor minus_log_forward = scaled_sq_norm(x_next - mean_next, *quarter_inv_eta);
  if (!log_backward.defined()) {
    return {x_next, minus_log_forward};
  }
  return {x_next, log_backward + minus_log_forward};
}

// eps ~ N(0, I) shaped like `like`, adding each row's |eps|^2 to `energy` where given, see
// draw_noise in trainers/integrator.py.
Tensor draw_noise(const Tensor& like, const std::optional<at::Generator>& generator,
                  const std::optional<Tensor>& energy) {
  Tensor eps = at::randn(like.sizes(), generator, like.options());
  if (energy.has_value()) {
    Tensor square = eps.square();
    Tensor row_sums = square.sum(-1);
    energy->add_(row_sums);
  }
  return eps;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gelu", &gelu, py::arg("x"), py::arg("approximate"), py::arg("overwrite_input") = false,
        py::call_guard<py::gil_scoped_release>());
  m.def("prior_score", &prior_score, py::call_guard<py::gil_scoped_release>());
  m.def("network_control", &network_control, py::call_guard<py::gil_scoped_release>());
  m.def("point_update", &point_update, py::call_guard<py::gil_scoped_release>());
  m.def("draw_noise", &draw_noise, py::call_guard<py::gil_scoped_release>());
}
