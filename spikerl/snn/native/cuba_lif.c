/* The multi-step CUBA-LIF recurrence and its analytic backward, for spikerl's `native` backend.
 *
 * Compiled on first use by spikerl/snn/native/__init__.py with -ffp-contract=off and without
 * -ffast-math, so every product and sum is rounded as torch rounds it: the spikes are identical to
 * the reference path. Arrays are float32, C-contiguous, [T, B, n] (inputs may be [B, n] with
 * x_step = 0: the same current at every step). Parameters are per neuron, [n] (scalars are
 * expanded by the caller). Each batch row is simulated with its state in two n-long scratch rows,
 * the inner loop running over neurons so the compiler vectorizes it.
 *
 *   forward:  I = alpha I + x[t];  V = beta V + I;  S = (V - theta > 0);  V = V (1 - S)  or  V - theta S
 *   backward: see spikerl/snn/fused.py, which computes the same gradients with torch operations.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { FAST_SIGMOID = 0, ATAN = 1, RECTANGULAR = 2 };

static inline float surrogate(float x, int kind, float scale) {
    if (kind == FAST_SIGMOID) {
        float d = scale * fabsf(x) + 1.0f;
        return 1.0f / (d * d);
    }
    if (kind == ATAN) {
        float y = 1.57079632679489661923f * scale * x;
        return (scale / 2.0f) / (1.0f + y * y);
    }
    return fabsf(x) < scale / 2.0f ? 1.0f / scale : 0.0f;
}

/* A parameter given as one value (per_neuron 0) is spread over n neurons in `into`. */
static const float *per_neuron(const float *p, int per_neuron, int64_t n, float *into) {
    if (per_neuron) return p;
    for (int64_t j = 0; j < n; ++j) into[j] = p[0];
    return into;
}

/* Scratch for one layer: two n-long state rows, then alpha, beta, theta spread per neuron. */
typedef struct { float *state; const float *alpha, *beta, *theta; } Layer;

static int layer_open(Layer *layer, int64_t n, const float *alpha_p, int alpha_n, const float *beta_p, int beta_n,
                      const float *theta_p, int theta_n) {
    layer->state = malloc(sizeof(float) * 5 * n);
    if (!layer->state) return -1;
    layer->alpha = per_neuron(alpha_p, alpha_n, n, layer->state + 2 * n);
    layer->beta = per_neuron(beta_p, beta_n, n, layer->state + 3 * n);
    layer->theta = per_neuron(theta_p, theta_n, n, layer->state + 4 * n);
    return 0;
}

/* Returns 0, or -1 when scratch memory cannot be had. vpre, cur, vpost may be NULL (not kept).
 * alpha_n, beta_n, theta_n: 1 when the parameter has one value per neuron, 0 when it is one value. */
int cuba_lif_forward(const float *x, int64_t x_step, int64_t steps, int64_t batch, int64_t n,
                     const float *alpha_p, int alpha_n, const float *beta_p, int beta_n,
                     const float *theta_p, int theta_n, int hard,
                     float *spikes, float *vpre, float *cur, float *vpost) {
    Layer layer;
    if (layer_open(&layer, n, alpha_p, alpha_n, beta_p, beta_n, theta_p, theta_n)) return -1;
    float *state = layer.state, *ci = state, *vi = state + n;
    const float *alpha = layer.alpha, *beta = layer.beta, *theta = layer.theta;
    const int64_t plane = batch * n;
    for (int64_t b = 0; b < batch; ++b) {
        memset(state, 0, sizeof(float) * 2 * n);  /* ci, vi: every row starts at rest */
        const int64_t row = b * n;
        for (int64_t t = 0; t < steps; ++t) {
            const float *xt = x + t * x_step + row;
            const int64_t o = t * plane + row;
            for (int64_t j = 0; j < n; ++j) {
                float i = alpha[j] * ci[j];
                i = i + xt[j];
                float v = beta[j] * vi[j];
                v = v + i;
                if (vpre) vpre[o + j] = v;
                float s = (v - theta[j]) > 0.0f ? 1.0f : 0.0f;
                spikes[o + j] = s;
                v = hard ? v * (1.0f - s) : v - theta[j] * s;
                ci[j] = i;
                vi[j] = v;
                if (cur) cur[o + j] = i;
                if (vpost) vpost[o + j] = v;
            }
        }
    }
    free(state);
    return 0;
}

/* grad_x: [T, B, n], or [B, n] summed over steps when x_step was 0. g_alpha, g_beta, g_theta: [n]
 * sums over the batch (NULL when not needed; g_alpha needs cur, g_beta needs vpost). */
int cuba_lif_backward(const float *grad_spikes, const float *vpre, const float *cur, const float *vpost,
                      int64_t steps, int64_t batch, int64_t n,
                      const float *alpha_p, int alpha_n, const float *beta_p, int beta_n,
                      const float *theta_p, int theta_n, int hard, int detach,
                      int kind, float scale, int sum_over_steps,
                      float *grad_x, float *g_alpha, float *g_beta, float *g_theta) {
    Layer layer;
    if (layer_open(&layer, n, alpha_p, alpha_n, beta_p, beta_n, theta_p, theta_n)) return -1;
    float *state = layer.state, *gi_next = state, *gv = state + n;
    const float *alpha = layer.alpha, *beta = layer.beta, *theta = layer.theta;
    const int64_t plane = batch * n;
    if (g_alpha) memset(g_alpha, 0, sizeof(float) * n);
    if (g_beta) memset(g_beta, 0, sizeof(float) * n);
    if (g_theta) memset(g_theta, 0, sizeof(float) * n);
    if (sum_over_steps) memset(grad_x, 0, sizeof(float) * plane);
    for (int64_t b = 0; b < batch; ++b) {
        memset(state, 0, sizeof(float) * 2 * n);
        const int64_t row = b * n;
        for (int64_t t = steps - 1; t >= 0; --t) {
            const int64_t o = t * plane + row;
            float *gx = sum_over_steps ? grad_x + row : grad_x + o;
            for (int64_t j = 0; j < n; ++j) {
                float vp = vpre[o + j];
                float xs = vp - theta[j];
                float sg = surrogate(xs, kind, scale);
                float s = xs > 0.0f ? 1.0f : 0.0f;
                float g_spike = grad_spikes[o + j] * sg;
                float dv_dvpre, dv_dtheta;
                int has_dtheta = 1;
                if (hard) {
                    dv_dvpre = detach ? 1.0f - s : 1.0f - s - vp * sg;
                    dv_dtheta = vp * sg;
                    has_dtheta = !detach;
                } else {
                    dv_dvpre = detach ? 1.0f : 1.0f - theta[j] * sg;
                    dv_dtheta = detach ? -s : theta[j] * sg - s;
                }
                float g_vpre = g_spike + gv[j] * dv_dvpre;
                if (g_theta) g_theta[j] += has_dtheta ? gv[j] * dv_dtheta - g_spike : -g_spike;
                float g_i = g_vpre + alpha[j] * gi_next[j];
                if (sum_over_steps) gx[j] += g_i; else gx[j] = g_i;
                if (t > 0 && g_alpha) g_alpha[j] += g_i * cur[o - plane + j];
                if (t > 0 && g_beta) g_beta[j] += g_vpre * vpost[o - plane + j];
                gv[j] = beta[j] * g_vpre;
                gi_next[j] = g_i;
            }
        }
    }
    free(state);
    return 0;
}

/* The non-spiking readout (spikerl.snn.neuron.leaky_readout): V[T] of I = alpha I + x[t]; V = beta V + I,
 * from rest, for x [T, B, n]; out [B, n]. The integrator (alpha 0, beta 1) gives x + ... exactly. */
int leaky_readout_forward(const float *x, int64_t steps, int64_t batch, int64_t n,
                          const float *alpha_p, int alpha_n, const float *beta_p, int beta_n, float *out) {
    float *state = malloc(sizeof(float) * 3 * n);
    if (!state) return -1;
    float *ci = state;
    const float *alpha = per_neuron(alpha_p, alpha_n, n, state + n);
    const float *beta = per_neuron(beta_p, beta_n, n, state + 2 * n);
    for (int64_t b = 0; b < batch; ++b) {
        float *vi = out + b * n;
        memset(ci, 0, sizeof(float) * n);
        memset(vi, 0, sizeof(float) * n);
        for (int64_t t = 0; t < steps; ++t) {
            const float *xt = x + (t * batch + b) * n;
            for (int64_t j = 0; j < n; ++j) {
                float i = alpha[j] * ci[j];
                i = i + xt[j];
                float v = beta[j] * vi[j];
                vi[j] = v + i;
                ci[j] = i;
            }
        }
    }
    free(state);
    return 0;
}
