// A fused ZINB likelihood for the step benchmark (benchmarks/step.py): a prototype that measures what
// one hand-written pass over a batch would cost. The package does not use it.
//
// For float32 CPU tensors x (cells x genes, counts), logits (the scale head's output, before the
// softmax), library (cells), log_theta (genes) and zi (zero-inflation logits, cells x genes), it returns
// each cell's negative log-likelihood under ZINB(library * softmax(logits), exp(log_theta), zi) and the
// gradients of their sum with respect to logits, zi and log_theta, all in one pass per cell: the zero
// case over every gene (vectorisable: exp, log and log1p only), then the non-zero counts alone.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

static float digamma(float v) {
  float r = 0.f;
  while (v < 6.f) {
    r -= 1.f / v;
    v += 1.f;
  }
  const float f = 1.f / (v * v);
  return r + std::log(v) - 0.5f / v - f * (1.f / 12 - f * (1.f / 120 - f / 252));
}

static float lgamma_safe(float v) {
  int sign;
  return lgammaf_r(v, &sign);
}

std::vector<torch::Tensor> zinb_fused(torch::Tensor x, torch::Tensor logits, torch::Tensor library,
                                      torch::Tensor log_theta, torch::Tensor zi) {
  const int64_t B = x.size(0), G = x.size(1);
  auto loss = torch::empty({B}, x.options());
  auto d_logits = torch::empty({B, G}, x.options());
  auto d_zi = torch::empty({B, G}, x.options());
  const float eps = 1e-8f;
  std::vector<float> theta(G), log_theta_eps(G), dq_const(G), lg_theta(G), dg_theta(G);
  const float* lt = log_theta.data_ptr<float>();
  for (int64_t g = 0; g < G; ++g) {
    theta[g] = std::exp(lt[g]);
    log_theta_eps[g] = std::log(theta[g] + eps);
    dq_const[g] = log_theta_eps[g] + theta[g] / (theta[g] + eps);
    lg_theta[g] = lgamma_safe(theta[g]);
    dg_theta[g] = digamma(theta[g]);
  }
  const int nthreads = at::get_num_threads();
  std::vector<std::vector<float>> d_theta_t(nthreads, std::vector<float>(G, 0.f));
  const float* X = x.data_ptr<float>();
  const float* LG = logits.data_ptr<float>();
  const float* LIB = library.data_ptr<float>();
  const float* ZI = zi.data_ptr<float>();
  float* DL = d_logits.data_ptr<float>();
  float* DZ = d_zi.data_ptr<float>();
  float* LOSS = loss.data_ptr<float>();
  const float* TH = theta.data();
  const float* LTE = log_theta_eps.data();
  const float* DQC = dq_const.data();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    float* dth = d_theta_t[at::get_thread_num()].data();
    std::vector<float> mu_row(G), dth_row(G);
    for (int64_t b = b0; b < b1; ++b) {
      const float* xr = X + b * G; const float* lr = LG + b * G; const float* zr = ZI + b * G;
      float* dlr = DL + b * G; float* dzr = DZ + b * G;
      float m = lr[0];
      for (int64_t g = 0; g < G; ++g) m = std::max(m, lr[g]);
      float s = 0.f;
      float* mu = mu_row.data();
      for (int64_t g = 0; g < G; ++g) { mu[g] = std::exp(lr[g] - m); s += mu[g]; }
      const float scale = LIB[b] / s;
      float lp = 0.f, S = 0.f;
      float* dtr = dth_row.data();
      // dense zero case, vectorisable
      #pragma omp simd reduction(+ : lp, S)
      for (int64_t g = 0; g < G; ++g) {
        const float mug = mu[g] * scale;
        const float th = TH[g];
        const float tm = th + mug + eps;
        const float log_tm = std::log(tm);
        const float q = th * (LTE[g] - log_tm) - zr[g];
        const float eq = std::exp(-std::fabs(q));
        const float ez = std::exp(-std::fabs(zr[g]));
        const float sp_q = std::fmax(q, 0.f) + std::log1p(eq);
        const float sp_nz = std::fmax(-zr[g], 0.f) + std::log1p(ez);
        const float sig_q = q >= 0.f ? 1.f / (1.f + eq) : eq / (1.f + eq);
        const float sig_nz = zr[g] <= 0.f ? 1.f / (1.f + ez) : ez / (1.f + ez);  // sigmoid(-zi)
        const float th_tm = th / tm;
        lp += sp_q - sp_nz;
        const float dmu = -sig_q * th_tm;
        dzr[g] = sig_nz - sig_q;  // d lp / d zi
        dtr[g] = sig_q * (DQC[g] - log_tm - th_tm);
        const float mdm = mug * dmu;
        dlr[g] = mdm; S += mdm;
        mu[g] = mug;
      }
      // non-zero counts: replace the zero case
      for (int64_t g = 0; g < G; ++g) {
        const float xv = xr[g];
        if (xv == 0.f) continue;
        const float mug = mu[g], th = TH[g];
        const float tm = th + mug + eps, log_tm = std::log(tm);
        const float q = th * (LTE[g] - log_tm) - zr[g];
        const float sp_q = std::fmax(q, 0.f) + std::log1p(std::exp(-std::fabs(q)));
        const float sig_q = 1.f / (1.f + std::exp(-q));
        const float th_tm = th / tm;
        // lp_nz - lp_zero = q - sp_q + x (log mu - log tm) + lgamma(x+th) - lgamma(th) - lgamma(x+1)
        lp += q - sp_q + xv * (std::log(mug + eps) - log_tm) + lgamma_safe(xv + th) - lg_theta[g] - lgamma_safe(xv + 1.f);
        const float dmu_nz = -th_tm + xv / (mug + eps) - xv / tm;
        const float old = dlr[g];
        dlr[g] = mug * dmu_nz; S += dlr[g] - old;
        dzr[g] = -1.f / (1.f + std::exp(-zr[g]));  // -sigmoid(zi)
        dtr[g] = (DQC[g] - log_tm - th_tm) - xv / tm + digamma(xv + th) - dg_theta[g];
      }
      // softmax backward, negate (loss = -lp)
      #pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const float rho = mu[g] / LIB[b];
        dlr[g] = -(dlr[g] - rho * S);
        dzr[g] = -dzr[g];
        dth[g] -= dtr[g] * TH[g];
      }
      LOSS[b] = -lp;
    }
  });
  auto d_log_theta = torch::zeros({G}, x.options());
  float* dlt = d_log_theta.data_ptr<float>();
  for (auto& v : d_theta_t) for (int64_t g = 0; g < G; ++g) dlt[g] += v[g];
  return {loss, d_logits, d_zi, d_log_theta};
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("zinb_fused", &zinb_fused); }
