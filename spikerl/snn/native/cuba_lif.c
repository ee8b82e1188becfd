/* The multi-step CUBA-LIF recurrence and its analytic backward, for spikerl's `native` backend.
 *
 * Compiled on first use by spikerl/snn/native/__init__.py with -ffp-contract=off and without
 * -ffast-math, so every product and sum is rounded as torch rounds it: the spikes are identical to
 * the reference path. Arrays are float32, C-contiguous, [T, B, n] (inputs may be [B, n] with
 * x_step = 0: the same current at every step). Parameters come as one value or one per neuron.
 *
 *   forward:  I = alpha I + x[t];  V = beta V + I;  S = (V - theta > 0);  V = V (1 - S)  or  V - theta S
 *   backward: see spikerl/snn/fused.py, which computes the same gradients with torch operations.
 *
 * Batch rows are independent: they are shared among `threads` OpenMP threads, each with its own
 * scratch rows. The inner loops run over neurons with every choice (reset, surrogate, what is kept)
 * fixed at compile time, so the compiler vectorizes them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define ROWS_PER_THREAD_MIN 8 /* below this many rows a second thread costs more than it saves */

/* Scratch rows of up to STACK_FLOATS floats (64 KiB) live on the stack. A malloc/free here, on the
 * thread that runs PyTorch, lets glibc trim the top of its heap, and the next update's tensors then
 * fault their pages in again (measured on the paper's actor: ~500 page faults per update with
 * malloc'd scratch, ~120 with these). */
#define STACK_FLOATS 16384
INLINE float *scratch_take(float *stack, int64_t count) {
    return count <= STACK_FLOATS ? stack : malloc(sizeof(float) * count);
}
INLINE void scratch_give(float *stack, float *rows) {
    if (rows != stack) free(rows);
}

enum { FAST_SIGMOID = 0, ATAN = 1, RECTANGULAR = 2 };

INLINE float surrogate(float x, const int kind, float scale) {
    if (kind == FAST_SIGMOID) {
        float d = scale * fabsf(x) + 1.0f;
        return 1.0f / (d * d);
    }
    if (kind == ATAN) {
        float y = 1.57079632679489661923f * scale * x;
        return (scale / 2.0f) / (1.0f + y * y);
    }
    return (float)(fabsf(x) < scale / 2.0f) * (1.0f / scale);
}

/* alpha, beta, theta spread over n neurons (a parameter given as one value is repeated). */
typedef struct { float *alpha, *beta, *theta; } Params;

/* Fills p from `stack` (or the heap for very wide layers); close with scratch_give(stack, p.alpha). */
static int params_open(Params *p, float *stack, int64_t n, const float *alpha, int alpha_n, const float *beta,
                       int beta_n, const float *theta, int theta_n) {
    float *block = scratch_take(stack, 3 * n);
    if (!block) return -1;
    const float *src[3] = {alpha, beta, theta};
    const int per_neuron[3] = {alpha_n, beta_n, theta_n};
    for (int k = 0; k < 3; ++k)
        for (int64_t j = 0; j < n; ++j) block[k * n + j] = per_neuron[k] ? src[k][j] : src[k][0];
    p->alpha = block, p->beta = block + n, p->theta = block + 2 * n;
    return 0;
}

static int threads_for(int threads, int64_t batch) {
    int most = (int)(batch / ROWS_PER_THREAD_MIN);
    if (most < 1) most = 1;
    return threads < most ? threads : most;
}

/* ---------------------------------------------------------------------------------- forward */

INLINE void forward_step(int64_t n, const float *restrict x, const float *restrict alpha,
                         const float *restrict beta, const float *restrict theta, float *restrict ci,
                         float *restrict vi, float *restrict spikes, float *restrict vpre, const int hard) {
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

/* Returns 0, or -1 when scratch memory cannot be had. Writes the spikes only: the backward
 * recomputes the states from the same inputs, bit for bit, instead of reading them back. */
int cuba_lif_forward(const float *x, int64_t x_step, int64_t steps, int64_t batch, int64_t n,
                     const float *alpha_p, int alpha_n, const float *beta_p, int beta_n,
                     const float *theta_p, int theta_n, int hard, float *spikes, int threads) {
    Params p;
    float params_stack[STACK_FLOATS];
    if (params_open(&p, params_stack, n, alpha_p, alpha_n, beta_p, beta_n, theta_p, theta_n)) return -1;
    const int64_t plane = batch * n;
    int failed = 0;
#pragma omp parallel num_threads(threads_for(threads, batch)) reduction(|| : failed)
    {
        float stack[STACK_FLOATS];
        float *state = scratch_take(stack, 3 * n); /* current, voltage, and a row for the unkept voltages */
        if (!state) failed = 1;
        else {
            float *ci = state, *vi = state + n, *vpre = state + 2 * n;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < batch; ++b) {
                memset(state, 0, sizeof(float) * 2 * n); /* every row starts at rest */
                const int64_t row = b * n;
                for (int64_t t = 0; t < steps; ++t) {
                    const float *xt = x + t * x_step + row;
                    if (hard) forward_step(n, xt, p.alpha, p.beta, p.theta, ci, vi, spikes + t * plane + row, vpre, 1);
                    else forward_step(n, xt, p.alpha, p.beta, p.theta, ci, vi, spikes + t * plane + row, vpre, 0);
                }
            }
            scratch_give(stack, state);
        }
    }
    scratch_give(params_stack, p.alpha);
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------- backward */

/* One step t of one row, reversed. gi_next, gv: carried from step t+1. cur_prev, vpost_prev: the
 * state after step t-1 (a zero row at t = 0). With `sums`, the parameters' gradients go to ga, gb, gth
 * (scratch rows for those not needed); without, they are skipped: no parameter is learned. */
INLINE void backward_step(int64_t n, const float *restrict gs, const float *restrict vpre,
                          const float *restrict cur_prev, const float *restrict vpost_prev,
                          const float *restrict alpha, const float *restrict beta, const float *restrict theta,
                          float *restrict gi_next, float *restrict gv, float *restrict gx,
                          float *restrict ga, float *restrict gb, float *restrict gth,
                          const int hard, const int detach, const int kind, float scale, const int accumulate,
                          const int sums) {
    for (int64_t j = 0; j < n; ++j) {
        float vp = vpre[j];
        float xs = vp - theta[j];
        float sg = surrogate(xs, kind, scale);
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

#define BACKWARD_STEP(H, D, K, A, S) \
    backward_step(n, gs, vp, cp, vq, p.alpha, p.beta, p.theta, gi_next, gv, gx, ga, gb, gth, H, D, K, scale, A, S)
#define BY_KIND(H, D, A, S)                                                \
    do {                                                                   \
        if (kind == FAST_SIGMOID) BACKWARD_STEP(H, D, FAST_SIGMOID, A, S); \
        else if (kind == ATAN) BACKWARD_STEP(H, D, ATAN, A, S);            \
        else BACKWARD_STEP(H, D, RECTANGULAR, A, S);                       \
    } while (0)
#define BY_RESET(A, S)                                  \
    do {                                                \
        if (hard && detach) BY_KIND(1, 1, A, S);        \
        else if (hard) BY_KIND(1, 0, A, S);             \
        else if (detach) BY_KIND(0, 1, A, S);           \
        else BY_KIND(0, 0, A, S);                       \
    } while (0)

/* grad_spikes: [T, B, n] with gs_step = B n, or one [B, n] gradient for every step with gs_step = 0
 * (an integrator readout's). x, x_step: the forward's input, as cuba_lif_forward took it. Each row's states are recomputed
 * into scratch first (the forward's arithmetic, so the same bits), then walked back in time.
 * grad_x: [T, B, n], or [B, n] summed over steps when the input was constant (x_step 0).
 * g_alpha, g_beta, g_theta: [n] sums over the batch, or NULL when not needed. */
int cuba_lif_backward(const float *grad_spikes, int64_t gs_step, const float *x, int64_t x_step,
                      int64_t steps, int64_t batch, int64_t n,
                      const float *alpha_p, int alpha_n, const float *beta_p, int beta_n,
                      const float *theta_p, int theta_n, int hard, int detach, int kind, float scale,
                      float *grad_x, float *g_alpha, float *g_beta, float *g_theta, int threads) {
    Params p;
    float params_stack[STACK_FLOATS];
    if (params_open(&p, params_stack, n, alpha_p, alpha_n, beta_p, beta_n, theta_p, theta_n)) return -1;
    const int64_t plane = batch * n, history = steps * n;
    const int sum_over_steps = x_step == 0, sums = g_alpha || g_beta || g_theta;
    float *outs[3] = {g_alpha, g_beta, g_theta};
    for (int k = 0; k < 3; ++k)
        if (outs[k]) memset(outs[k], 0, sizeof(float) * n);
    int failed = 0;
#pragma omp parallel num_threads(threads_for(threads, batch)) reduction(|| : failed)
    {
        /* gi_next, gv, a zero row, this thread's sums of g_alpha, g_beta, g_theta, the recomputed
         * current, voltage and spike rows, then one row's pre-reset voltages over all steps, and its
         * currents and post-reset voltages when alpha or beta are learned */
        const int64_t rows = 9 * n + history * (1 + (g_alpha != NULL) + (g_beta != NULL));
        float stack[STACK_FLOATS];
        float *state = scratch_take(stack, rows);
        if (!state) failed = 1;
        else {
            float *gi_next = state, *gv = state + n, *zero = state + 2 * n;
            float *ga = state + 3 * n, *gb = state + 4 * n, *gth = state + 5 * n;
            float *ci = state + 6 * n, *vi = state + 7 * n, *spike_row = state + 8 * n;
            float *vpres = state + 9 * n, *curs = vpres + history;
            float *vposts = g_alpha ? curs + history : curs;
            memset(zero, 0, sizeof(float) * 4 * n);
#pragma omp for schedule(static)
            for (int64_t b = 0; b < batch; ++b) {
                const int64_t row = b * n;
                memset(ci, 0, sizeof(float) * 2 * n);
                for (int64_t t = 0; t < steps; ++t) {
                    const float *xt = x + t * x_step + row;
                    if (hard) forward_step(n, xt, p.alpha, p.beta, p.theta, ci, vi, spike_row, vpres + t * n, 1);
                    else forward_step(n, xt, p.alpha, p.beta, p.theta, ci, vi, spike_row, vpres + t * n, 0);
                    if (g_alpha) memcpy(curs + t * n, ci, sizeof(float) * n);
                    if (g_beta) memcpy(vposts + t * n, vi, sizeof(float) * n);
                }
                memset(state, 0, sizeof(float) * 2 * n);
                for (int64_t t = steps - 1; t >= 0; --t) {
                    const float *gs = grad_spikes + t * gs_step + row, *vp = vpres + t * n;
                    const float *cp = (t > 0 && g_alpha) ? curs + (t - 1) * n : zero;
                    const float *vq = (t > 0 && g_beta) ? vposts + (t - 1) * n : zero;
                    float *gx = sum_over_steps ? grad_x + row : grad_x + t * plane + row;
                    if (sum_over_steps && t == steps - 1) memset(gx, 0, sizeof(float) * n);
                    if (sum_over_steps && sums) BY_RESET(1, 1);
                    else if (sum_over_steps) BY_RESET(1, 0);
                    else if (sums) BY_RESET(0, 1);
                    else BY_RESET(0, 0);
                }
            }
#pragma omp critical
            for (int k = 0; k < 3; ++k)
                if (outs[k])
                    for (int64_t j = 0; j < n; ++j) outs[k][j] += state[(3 + k) * n + j];
            scratch_give(stack, state);
        }
    }
    scratch_give(params_stack, p.alpha);
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------- readout */

/* The non-spiking readout (spikerl.snn.neuron.leaky_readout): V[T] of I = alpha I + x[t]; V = beta V + I,
 * from rest, for x [T, B, n]; out [B, n]. The integrator (alpha 0, beta 1) gives x + ... exactly. */
int leaky_readout_forward(const float *x, int64_t steps, int64_t batch, int64_t n,
                          const float *alpha_p, int alpha_n, const float *beta_p, int beta_n, float *out) {
    Params p;
    float params_stack[STACK_FLOATS], stack[STACK_FLOATS];
    /* no threshold: beta fills its slot */
    if (params_open(&p, params_stack, n, alpha_p, alpha_n, beta_p, beta_n, beta_p, beta_n)) return -1;
    float *ci = scratch_take(stack, n);
    if (!ci) { scratch_give(params_stack, p.alpha); return -1; }
    for (int64_t b = 0; b < batch; ++b) {
        float *restrict vi = out + b * n;
        memset(ci, 0, sizeof(float) * n);
        memset(vi, 0, sizeof(float) * n);
        for (int64_t t = 0; t < steps; ++t) {
            const float *restrict xt = x + (t * batch + b) * n;
            for (int64_t j = 0; j < n; ++j) {
                float i = p.alpha[j] * ci[j];
                i = i + xt[j];
                float v = p.beta[j] * vi[j];
                vi[j] = v + i;
                ci[j] = i;
            }
        }
    }
    scratch_give(stack, ci);
    scratch_give(params_stack, p.alpha);
    return 0;
}

/* Its backward: grad_out [B, n] -> grad_x [T, B, n]; gV[t] = beta gV[t+1], gI[t] = gV[t] + alpha gI[t+1]. */
int leaky_readout_backward(const float *grad_out, int64_t steps, int64_t batch, int64_t n,
                           const float *alpha_p, int alpha_n, const float *beta_p, int beta_n, float *grad_x) {
    Params p;
    float params_stack[STACK_FLOATS], stack[STACK_FLOATS];
    /* no threshold: beta fills its slot */
    if (params_open(&p, params_stack, n, alpha_p, alpha_n, beta_p, beta_n, beta_p, beta_n)) return -1;
    float *state = scratch_take(stack, 2 * n);
    if (!state) { scratch_give(params_stack, p.alpha); return -1; }
    float *restrict gv = state, *restrict gi = state + n;
    for (int64_t b = 0; b < batch; ++b) {
        memcpy(gv, grad_out + b * n, sizeof(float) * n);
        memset(gi, 0, sizeof(float) * n);
        for (int64_t t = steps - 1; t >= 0; --t) {
            float *restrict gx = grad_x + (t * batch + b) * n;
            for (int64_t j = 0; j < n; ++j) {
                float g = gv[j] + p.alpha[j] * gi[j];
                gx[j] = g;
                gi[j] = g;
                gv[j] = p.beta[j] * gv[j];
            }
        }
    }
    scratch_give(stack, state);
    scratch_give(params_stack, p.alpha);
    return 0;
}
