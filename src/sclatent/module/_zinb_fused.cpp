// The ZINB negative log-likelihood of a batch and its gradients in one pass per cell (CPU, float32).
//
// Built on first use by sclatent.module.fused_zinb_kernel (torch's JIT extension loader); the
// PyTorch kernel in _likelihoods.py is the reference it is tested against and the fallback.
//
// Inputs: x (cells x genes, counts), logits (the scale head's output; mu = library * softmax(logits)),
// library (cells), log_theta (genes; theta = exp(log_theta)) and zi (zero-inflation logits, cells x genes).
// Returns each cell's negative log-likelihood and, when need_grad, the derivatives of each cell's value
// with respect to logits, zi and log_theta (cells x genes each; the caller weights and sums them).
//
// Per cell: the zero case over every gene, written so that the loop has no branch on the data and
// vectorises (exp, log and log1p only); then the non-zero counts alone replace their entries
// (lgamma and digamma, scalar); then the softmax's backward.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

float digamma(float v) {
  float r = 0.f;
  while (v < 6.f) {
    r -= 1.f / v;
    v += 1.f;
  }
  const float f = 1.f / (v * v);
  return r + std::log(v) - 0.5f / v - f * (1.f / 12 - f * (1.f / 120 - f / 252));
}

float lgamma_r(float v) {
  int sign;
  return lgammaf_r(v, &sign);  // lgammaf writes the global signgam: not safe across threads
}

}  // namespace

std::vector<torch::Tensor> zinb_nll(torch::Tensor x, torch::Tensor logits, torch::Tensor library,
                                    torch::Tensor log_theta, torch::Tensor zi, bool need_grad) {
  TORCH_CHECK(x.dim() == 2 && logits.sizes() == x.sizes() && zi.sizes() == x.sizes(), "x, logits, zi: cells x genes");
  TORCH_CHECK(library.numel() == x.size(0) && log_theta.numel() == x.size(1), "library: cells, log_theta: genes");
  for (const auto& t : {x, logits, library, log_theta, zi}) {
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == torch::kFloat32 && t.device().is_cpu(),
                "contiguous float32 CPU tensors");
  }
  const int64_t B = x.size(0), G = x.size(1);
  const float eps = 1e-8f;
  auto loss = torch::empty({B}, x.options());
  torch::Tensor d_logits, d_zi, d_log_theta;
  if (need_grad) {
    d_logits = torch::empty({B, G}, x.options());
    d_zi = torch::empty({B, G}, x.options());
    d_log_theta = torch::empty({B, G}, x.options());
  }
  std::vector<float> theta(G), log_theta_eps(G), dq_const(G), lgamma_theta(G), digamma_theta(G);
  const float* lt = log_theta.data_ptr<float>();
  for (int64_t g = 0; g < G; ++g) {
    theta[g] = std::exp(lt[g]);
    log_theta_eps[g] = std::log(theta[g] + eps);
    dq_const[g] = log_theta_eps[g] + theta[g] / (theta[g] + eps);
    lgamma_theta[g] = lgamma_r(theta[g]);
    digamma_theta[g] = digamma(theta[g]);
  }
  const float* X = x.data_ptr<float>();
  const float* LG = logits.data_ptr<float>();
  const float* LIB = library.data_ptr<float>();
  const float* ZI = zi.data_ptr<float>();
  float* DL = need_grad ? d_logits.data_ptr<float>() : nullptr;
  float* DZ = need_grad ? d_zi.data_ptr<float>() : nullptr;
  float* DT = need_grad ? d_log_theta.data_ptr<float>() : nullptr;
  float* LOSS = loss.data_ptr<float>();
  const float* TH = theta.data();
  const float* LTE = log_theta_eps.data();
  const float* DQC = dq_const.data();

  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> mu_row(G), scratch(need_grad ? 0 : 3 * G);
    for (int64_t b = b0; b < b1; ++b) {
      const float* xr = X + b * G;
      const float* lr = LG + b * G;
      const float* zr = ZI + b * G;
      // without gradients the derivatives go to scratch rows that are dropped
      float* dl = need_grad ? DL + b * G : scratch.data();
      float* dz = need_grad ? DZ + b * G : scratch.data() + G;
      float* dt = need_grad ? DT + b * G : scratch.data() + 2 * G;
      float* mu = mu_row.data();  // exp(logits - max), unnormalised
      float m = lr[0];
      for (int64_t g = 1; g < G; ++g) m = std::max(m, lr[g]);
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t g = 0; g < G; ++g) {
        mu[g] = std::exp(lr[g] - m);
        s += mu[g];
      }
      const float scale = LIB[b] / s;  // mu = library * softmax(logits) = scale * mu_row
      double lp = 0.0, S = 0.0;  // sums of thousands of terms: in double, to match float32 kernels' accuracy
      // the zero case, every gene: log p(0) = softplus(q) - softplus(-zi), q = theta * log(theta / (theta + mu)) - zi
#pragma omp simd reduction(+ : lp, S)
      for (int64_t g = 0; g < G; ++g) {
        const float mug = mu[g] * scale;
        const float th = TH[g];
        const float tm = th + mug + eps;
        const float log_tm = std::log(tm);
        const float q = th * (LTE[g] - log_tm) - zr[g];
        const float eq = std::exp(-std::fabs(q));
        const float ez = std::exp(-std::fabs(zr[g]));
        const float sig_q = (q >= 0.f ? 1.f : eq) / (1.f + eq);
        const float sig_nz = (zr[g] <= 0.f ? 1.f : ez) / (1.f + ez);  // sigmoid(-zi)
        const float th_tm = th / tm;
        lp += std::fmax(q, 0.f) + std::log1p(eq) - std::fmax(-zr[g], 0.f) - std::log1p(ez);
        const float mdm = -mug * sig_q * th_tm;  // mu * d/dmu
        dl[g] = mdm;
        S += mdm;
        dz[g] = sig_nz - sig_q;
        dt[g] = sig_q * (DQC[g] - log_tm - th_tm) * th;  // d/dlog_theta = theta * d/dtheta
      }
      // the non-zero counts: log p(x) = q - softplus(-zi) + x log(mu / (theta + mu)) + lgamma terms
      for (int64_t g = 0; g < G; ++g) {
        const float xv = xr[g];
        if (xv == 0.f) continue;
        const float mug = mu[g] * scale, th = TH[g];
        const float tm = th + mug + eps, log_tm = std::log(tm);
        const float q = th * (LTE[g] - log_tm) - zr[g];
        const float sp_q = std::fmax(q, 0.f) + std::log1p(std::exp(-std::fabs(q)));
        const float th_tm = th / tm;
        lp += q - sp_q + xv * (std::log(mug + eps) - log_tm) + lgamma_r(xv + th) - lgamma_theta[g] -
              lgamma_r(xv + 1.f);
        const float mdm = mug * (-th_tm + xv / (mug + eps) - xv / tm);
        S += mdm - dl[g];
        dl[g] = mdm;
        const float ez = std::exp(-std::fabs(zr[g]));
        dz[g] = -(zr[g] >= 0.f ? 1.f : ez) / (1.f + ez);  // -sigmoid(zi), without overflow
        dt[g] = ((DQC[g] - log_tm - th_tm) - xv / tm + digamma(xv + th) - digamma_theta[g]) * th;
      }
      LOSS[b] = static_cast<float>(-lp);
      if (!need_grad) continue;
      const float rho_scale = static_cast<float>(S) / s;
      // the softmax's backward (d/dlogit = mu * d/dmu - rho * sum of mu * d/dmu), and the sign of the loss
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        dl[g] = mu[g] * rho_scale - dl[g];
        dz[g] = -dz[g];
        dt[g] = -dt[g];
      }
    }
  });
  if (!need_grad) return {loss};
  return {loss, d_logits, d_zi, d_log_theta};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("zinb_nll", &zinb_nll); }
