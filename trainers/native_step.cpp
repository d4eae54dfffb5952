// The per-point work of the integration step, compiled: the prior's score
// (trainers/prior.py, GaussianMixturePrior.score), the control network's forward pass
// (trainers/network.py, ControlNetwork.control), the integrator's arithmetic at one point and
// the draw of a step's noise (trainers/integrator.py, point_update and draw_noise). Each
// function calls the same ATen operators in the same order as its Python twin, so results and
// gradients are bitwise the same; autograd records them as it does from Python. What differs:
// one call per function instead of one per operator, made without Python's interpreter lock,
// so that the threads that integrate row blocks of a batch do not wait on each other between
// operators.
#include <torch/extension.h>

#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

using at::Tensor;

namespace {

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
    out = at::addmm(biases[i], at::gelu(out, approximate), weights_t[i]);
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
  m.def("prior_score", &prior_score, py::call_guard<py::gil_scoped_release>());
  m.def("network_control", &network_control, py::call_guard<py::gil_scoped_release>());
  m.def("point_update", &point_update, py::call_guard<py::gil_scoped_release>());
  m.def("draw_noise", &draw_noise, py::call_guard<py::gil_scoped_release>());
}
