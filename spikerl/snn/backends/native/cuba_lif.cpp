// The multi-step CUBA-LIF recurrence, its analytic backward and the leaky readout as PyTorch custom
// operators (namespace `spikerl`), for the `native` backend. Built on first use by
// torch.utils.cpp_extension (see __init__.py) with -ffp-contract=off and without -ffast-math, so
// every product and sum is rounded as torch rounds it: the spikes are identical to the reference
// backend's. Autograd and fake (shape-only) implementations are registered from Python.
//
//   forward:  I = alpha I + x[t];  V = beta V + I;  S = (V - theta > 0);  V = V (1 - S)  or  V - theta S
//   backward: the same gradients as spikerl/snn/backends/fused.py computes with torch operations.
//
// Shapes: currents [T, R, n] (R batch rows, all leading batch dimensions flattened), or [R, n] given
// at every step (a constant input). alpha, beta, theta: [P, n] with P dividing R; row r uses parameter
// row r / (R / P) (one row for a whole layer, or one per agent when agents are stacked). float32,
// contiguous, CPU. Rows are independent: they are shared among torch's intra-op threads, each with its
// own scratch rows, and every inner loop runs over neurons with its choices fixed at compile time,
// so the compiler vectorizes it.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kRowsPerThreadMin = 8;  // below this many rows a second thread costs more than it saves
constexpr int64_t kStackFloats = 16384;   // scratch rows up to 64 KiB live on the stack

// Scratch memory: the stack for small layers, the heap for very wide ones. A malloc/free per call on
// the thread that runs PyTorch lets glibc trim its heap and costs page faults in the next update.
struct Scratch {
  float stack[kStackFloats];
  std::vector<float> heap;
  float* take(int64_t count) {
    if (count <= kStackFloats) return stack;
    heap.assign(count, 0.0f);
    return heap.data();
  }
};

enum Surrogate { FAST_SIGMOID = 0, ATAN = 1, RECTANGULAR = 2 };

template <int kind>
inline float surrogate(float x, float scale) {
  if (kind == FAST_SIGMOID) {
    float d = scale * std::fabs(x) + 1.0f;
    return 1.0f / (d * d);
  }
  if (kind == ATAN) {
    float y = 1.57079632679489661923f * scale * x;
    return (scale / 2.0f) / (1.0f + y * y);
  }
  return (float)(std::fabs(x) < scale / 2.0f) * (1.0f / scale);
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat,
              "spikerl native kernels run float32 on the CPU; ", name, " is ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.is_contiguous(), "spikerl native kernels need contiguous tensors; ", name, " is not");
}

struct Layout {
  int64_t steps, rows, n, x_step, group_rows;
};

Layout layout(const at::Tensor& x, int64_t steps, const at::Tensor& alpha) {
  check_input(x, "currents");
  check_input(alpha, "alpha");
  TORCH_CHECK(x.dim() == 2 || x.dim() == 3, "currents must be [T, R, n] or [R, n]");
  const bool constant = x.dim() == 2;
  const int64_t rows = x.size(-2), n = x.size(-1);
  TORCH_CHECK(constant || x.size(0) == steps, "currents hold ", x.size(0), " steps, ", steps, " asked for");
  TORCH_CHECK(alpha.dim() == 2 && alpha.size(1) == n && alpha.size(0) >= 1 && rows % alpha.size(0) == 0,
              "parameters must be [P, n] with P dividing the batch rows");
  return {steps, rows, n, constant ? 0 : rows * n, rows / alpha.size(0)};
}

// ---------------------------------------------------------------------------------- forward

template <bool hard>
inline void forward_step(int64_t n, const float* __restrict x, const float* __restrict alpha,
                         const float* __restrict beta, const float* __restrict theta, float* __restrict ci,
                         float* __restrict vi, float* __restrict spikes, float* __restrict vpre) {
  for (int64_t j = 0; j < n; ++j) {
    float i = alpha[j] * ci[j];
    i = i + x[j];
    float v = beta[j] * vi[j];
    v = v + i;
    vpre[j] = v;
    float s = (float)((v - theta[j]) > 0.0f);
    spikes[j] = s;
    vi[j] = hard ? v * (1.0f - s) : v - theta[j] * s;
    ci[j] = i;
  }
}

// Writes the spikes only: the backward recomputes the states from the same inputs, bit for bit,
// instead of reading them back.
at::Tensor cuba_lif_forward(const at::Tensor& x, int64_t steps, const at::Tensor& alpha, const at::Tensor& beta,
                            const at::Tensor& theta, bool hard, bool detach, int64_t kind, double scale) {
  const Layout L = layout(x, steps, alpha);
  check_input(beta, "beta");
  check_input(theta, "theta");
  at::Tensor spikes = at::empty({steps, L.rows, L.n}, x.options());
  const float *xp = x.data_ptr<float>(), *ap = alpha.data_ptr<float>(), *bp = beta.data_ptr<float>(),
              *tp = theta.data_ptr<float>();
  float* sp = spikes.data_ptr<float>();
  const int64_t n = L.n, plane = L.rows * n;
  at::parallel_for(0, L.rows, kRowsPerThreadMin, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    float* state = scratch.take(3 * n);  // current, voltage, and a row for the unkept voltages
    float *ci = state, *vi = state + n, *vpre = state + 2 * n;
    for (int64_t b = begin; b < end; ++b) {
      std::memset(state, 0, sizeof(float) * 2 * n);  // every row starts at rest
      const int64_t row = b * n, prow = (b / L.group_rows) * n;
      for (int64_t t = 0; t < steps; ++t) {
        const float* xt = xp + t * L.x_step + row;
        if (hard) forward_step<true>(n, xt, ap + prow, bp + prow, tp + prow, ci, vi, sp + t * plane + row, vpre);
        else forward_step<false>(n, xt, ap + prow, bp + prow, tp + prow, ci, vi, sp + t * plane + row, vpre);
      }
    }
  });
  return spikes;
}

// ---------------------------------------------------------------------------------- backward

// One step t of one row, reversed. gi_next, gv: carried from step t+1. cur_prev, vpost_prev: the state
// after step t-1 (a zero row at t = 0). With `sums`, the parameters' gradients are added to ga, gb, gth.
template <bool hard, bool detach, int kind, bool accumulate, bool sums>
inline void backward_step(int64_t n, const float* __restrict gs, const float* __restrict vpre,
                          const float* __restrict cur_prev, const float* __restrict vpost_prev,
                          const float* __restrict alpha, const float* __restrict beta,
                          const float* __restrict theta, float* __restrict gi_next, float* __restrict gv,
                          float* __restrict gx, float* __restrict ga, float* __restrict gb, float* __restrict gth,
                          float scale) {
  for (int64_t j = 0; j < n; ++j) {
    float vp = vpre[j];
    float xs = vp - theta[j];
    float sg = surrogate<kind>(xs, scale);
    float s = (float)(xs > 0.0f);
    float g_spike = gs[j] * sg;
    float dv_dvpre, g_th;
    if (hard) {
      dv_dvpre = detach ? 1.0f - s : 1.0f - s - vp * sg;
      g_th = detach ? -g_spike : gv[j] * (vp * sg) - g_spike;
    } else {
      dv_dvpre = detach ? 1.0f : 1.0f - theta[j] * sg;
      g_th = gv[j] * (detach ? -s : theta[j] * sg - s) - g_spike;
    }
    float g_vpre = g_spike + gv[j] * dv_dvpre;
    float g_i = g_vpre + alpha[j] * gi_next[j];
    gx[j] = accumulate ? gx[j] + g_i : g_i;
    if (sums) {
      gth[j] += g_th;
      ga[j] += g_i * cur_prev[j];
      gb[j] += g_vpre * vpost_prev[j];
    }
    gv[j] = beta[j] * g_vpre;
    gi_next[j] = g_i;
  }
}

struct BackwardArgs {
  int64_t n;
  const float *gs, *vp, *cp, *vq, *alpha, *beta, *theta;
  float *gi_next, *gv, *gx, *ga, *gb, *gth;
  float scale;
};

template <bool hard, bool detach, bool accumulate, bool sums>
inline void by_kind(int kind, const BackwardArgs& a) {
#define SPIKERL_STEP(K)                                                                                     \
  backward_step<hard, detach, K, accumulate, sums>(a.n, a.gs, a.vp, a.cp, a.vq, a.alpha, a.beta, a.theta, \
                                                   a.gi_next, a.gv, a.gx, a.ga, a.gb, a.gth, a.scale)
  if (kind == FAST_SIGMOID) SPIKERL_STEP(FAST_SIGMOID);
  else if (kind == ATAN) SPIKERL_STEP(ATAN);
  else SPIKERL_STEP(RECTANGULAR);
#undef SPIKERL_STEP
}

template <bool accumulate, bool sums>
inline void by_reset(bool hard, bool detach, int kind, const BackwardArgs& a) {
  if (hard && detach) by_kind<true, true, accumulate, sums>(kind, a);
  else if (hard) by_kind<true, false, accumulate, sums>(kind, a);
  else if (detach) by_kind<false, true, accumulate, sums>(kind, a);
  else by_kind<false, false, accumulate, sums>(kind, a);
}

// grad_spikes: [T, R, n], or one [R, n] gradient for every step (an integrator readout's). Each row's
// states are recomputed into scratch first (the forward's arithmetic, so the same bits), then walked
// back in time. Returns dL/dx (the shape of x: summed over steps for a constant input) and, for the
// parameters asked for, dL/dparameter per batch row [R, n] (empty tensors for the others).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cuba_lif_backward(
    const at::Tensor& grad_spikes, const at::Tensor& x, int64_t steps, const at::Tensor& alpha,
    const at::Tensor& beta, const at::Tensor& theta, bool hard, bool detach, int64_t kind, double scale,
    bool need_alpha, bool need_beta, bool need_theta) {
  const Layout L = layout(x, steps, alpha);
  check_input(grad_spikes, "grad_spikes");
  const int64_t n = L.n, plane = L.rows * n, history = steps * n;
  const int64_t gs_step = grad_spikes.dim() == 2 ? 0 : plane;
  const bool sum_over_steps = L.x_step == 0, sums = need_alpha || need_beta || need_theta;
  at::Tensor grad_x = at::empty_like(x);
  // Rows of parameters nobody learns are still written (the kernel adds all three together), then dropped.
  at::Tensor ga = at::zeros({sums ? L.rows : 0, n}, x.options());
  at::Tensor gb = at::zeros({sums ? L.rows : 0, n}, x.options());
  at::Tensor gth = at::zeros({sums ? L.rows : 0, n}, x.options());
  const float *xp = x.data_ptr<float>(), *gsp = grad_spikes.data_ptr<float>();
  const float *ap = alpha.data_ptr<float>(), *bp = beta.data_ptr<float>(), *tp = theta.data_ptr<float>();
  float* gxp = grad_x.data_ptr<float>();
  at::parallel_for(0, L.rows, kRowsPerThreadMin, [&](int64_t begin, int64_t end) {
    // gi_next, gv, a zero row, the recomputed current, voltage and spike rows, then one row's
    // pre-reset voltages over all steps, and its currents and post-reset voltages when alpha or beta are learned
    Scratch scratch;
    float* state = scratch.take(6 * n + history * (1 + need_alpha + need_beta));
    float *gi_next = state, *gv = state + n, *zero = state + 2 * n;
    float *ci = state + 3 * n, *vi = state + 4 * n, *spike_row = state + 5 * n;
    float *vpres = state + 6 * n, *curs = vpres + history;
    float* vposts = need_alpha ? curs + history : curs;
    std::memset(zero, 0, sizeof(float) * n);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t row = b * n, prow = (b / L.group_rows) * n;
      const float *pa = ap + prow, *pb = bp + prow, *pt = tp + prow;
      std::memset(ci, 0, sizeof(float) * 2 * n);
      for (int64_t t = 0; t < steps; ++t) {
        const float* xt = xp + t * L.x_step + row;
        if (hard) forward_step<true>(n, xt, pa, pb, pt, ci, vi, spike_row, vpres + t * n);
        else forward_step<false>(n, xt, pa, pb, pt, ci, vi, spike_row, vpres + t * n);
        if (need_alpha) std::memcpy(curs + t * n, ci, sizeof(float) * n);
        if (need_beta) std::memcpy(vposts + t * n, vi, sizeof(float) * n);
      }
      std::memset(state, 0, sizeof(float) * 2 * n);
      float* row_ga = sums ? ga.data_ptr<float>() + row : nullptr;
      float* row_gb = sums ? gb.data_ptr<float>() + row : nullptr;
      float* row_gth = sums ? gth.data_ptr<float>() + row : nullptr;
      for (int64_t t = steps - 1; t >= 0; --t) {
        BackwardArgs a{n, gsp + t * gs_step + row, vpres + t * n,
                       (t > 0 && need_alpha) ? curs + (t - 1) * n : zero,
                       (t > 0 && need_beta) ? vposts + (t - 1) * n : zero,
                       pa, pb, pt, gi_next, gv,
                       sum_over_steps ? gxp + row : gxp + t * plane + row,
                       row_ga, row_gb, row_gth, (float)scale};
        const bool accumulate = sum_over_steps && t < steps - 1;
        if (accumulate && sums) by_reset<true, true>(hard, detach, (int)kind, a);
        else if (accumulate) by_reset<true, false>(hard, detach, (int)kind, a);
        else if (sums) by_reset<false, true>(hard, detach, (int)kind, a);
        else by_reset<false, false>(hard, detach, (int)kind, a);
      }
    }
  });
  const at::Tensor none = at::empty({0}, x.options());
  return {grad_x, need_alpha ? ga : none, need_beta ? gb : none, need_theta ? gth : none};
}

// ---------------------------------------------------------------------------------- readout

// The non-spiking readout: V[T] of I = alpha I + x[t]; V = beta V + I from rest, for x [T, R, n]; out [R, n].
at::Tensor leaky_readout_forward(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta) {
  TORCH_CHECK(x.dim() == 3, "readout currents must be [T, R, n]");
  const Layout L = layout(x, x.size(0), alpha);
  check_input(beta, "beta");
  at::Tensor out = at::empty({L.rows, L.n}, x.options());
  const float *xp = x.data_ptr<float>(), *ap = alpha.data_ptr<float>(), *bp = beta.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t n = L.n;
  at::parallel_for(0, L.rows, kRowsPerThreadMin, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    float* ci = scratch.take(n);
    for (int64_t b = begin; b < end; ++b) {
      const float *pa = ap + (b / L.group_rows) * n, *pb = bp + (b / L.group_rows) * n;
      float* __restrict vi = op + b * n;
      std::memset(ci, 0, sizeof(float) * n);
      std::memset(vi, 0, sizeof(float) * n);
      for (int64_t t = 0; t < L.steps; ++t) {
        const float* __restrict xt = xp + t * L.x_step + b * n;
        for (int64_t j = 0; j < n; ++j) {
          float i = pa[j] * ci[j];
          i = i + xt[j];
          float v = pb[j] * vi[j];
          vi[j] = v + i;
          ci[j] = i;
        }
      }
    }
  });
  return out;
}

// Its backward: grad_out [R, n] -> grad_x [T, R, n]; gV[t] = beta gV[t+1], gI[t] = gV[t] + alpha gI[t+1].
at::Tensor leaky_readout_backward(const at::Tensor& grad_out, int64_t steps, const at::Tensor& alpha,
                                  const at::Tensor& beta) {
  check_input(grad_out, "grad_out");
  const Layout L = layout(grad_out, steps, alpha);
  at::Tensor grad_x = at::empty({steps, L.rows, L.n}, grad_out.options());
  const float *gp = grad_out.data_ptr<float>(), *ap = alpha.data_ptr<float>(), *bp = beta.data_ptr<float>();
  float* gxp = grad_x.data_ptr<float>();
  const int64_t n = L.n, plane = L.rows * n;
  at::parallel_for(0, L.rows, kRowsPerThreadMin, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    float* state = scratch.take(2 * n);
    float *__restrict gv = state, *__restrict gi = state + n;
    for (int64_t b = begin; b < end; ++b) {
      const float *pa = ap + (b / L.group_rows) * n, *pb = bp + (b / L.group_rows) * n;
      std::memcpy(gv, gp + b * n, sizeof(float) * n);
      std::memset(gi, 0, sizeof(float) * n);
      for (int64_t t = steps - 1; t >= 0; --t) {
        float* __restrict gx = gxp + t * plane + b * n;
        for (int64_t j = 0; j < n; ++j) {
          float g = gv[j] + pa[j] * gi[j];
          gx[j] = g;
          gi[j] = g;
          gv[j] = pb[j] * gv[j];
        }
      }
    }
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY(spikerl, m) {
  m.def("cuba_lif_forward(Tensor currents, int steps, Tensor alpha, Tensor beta, Tensor theta, bool hard, "
        "bool detach, int surrogate, float scale) -> Tensor");
  m.def("cuba_lif_backward(Tensor grad_spikes, Tensor currents, int steps, Tensor alpha, Tensor beta, "
        "Tensor theta, bool hard, bool detach, int surrogate, float scale, bool need_alpha, bool need_beta, "
        "bool need_theta) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("leaky_readout_forward(Tensor currents, Tensor alpha, Tensor beta) -> Tensor");
  m.def("leaky_readout_backward(Tensor grad_out, int steps, Tensor alpha, Tensor beta) -> Tensor");
}

TORCH_LIBRARY_IMPL(spikerl, CPU, m) {
  m.impl("cuba_lif_forward", &cuba_lif_forward);
  m.impl("cuba_lif_backward", &cuba_lif_backward);
  m.impl("leaky_readout_forward", &leaky_readout_forward);
  m.impl("leaky_readout_backward", &leaky_readout_backward);
}
