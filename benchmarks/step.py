"""Where a training step's time goes on this CPU, and how fast a step could be.

One process, 4,096 cells × 2,000 genes resampled from PBMC 3k as in the scale benchmark,
batches built before timing. Each part of a default ZINB step is timed on its own, the parts
in turn in blocks of steps, so that the machine's swings fall on every part alike
(medians over blocks):

- **full step**: sclatent's module (default network) forward, backward and fused Adam, as
  training runs it on a CPU (with the fused likelihood);
- **network**: the same step with the likelihood replaced by a cheap sum of the two decoder
  heads' outputs (encoder, sampling, KL, decoder, both heads, Adam: every matrix product);
- **likelihood, sclatent fused**: sclatent's ZINB likelihood alone as training on a CPU runs it
  (the fused C++ kernel, :func:`sclatent.module.fused_zinb_kernel`), from the heads' outputs to
  the loss, forward and backward (softmax and library scaling included);
- **likelihood, sclatent PyTorch**: the same with sclatent's PyTorch kernel (the fallback where
  the fused one cannot be built, and on GPUs);
- **likelihood, compiled**: the PyTorch kernel's formula compiled by ``torch.compile``
  (inductor's fused loops), for comparison;
- **likelihood, scVI**: scvi-tools' dense ZINB ``log_prob`` on the same inputs;
- **scVI module**: scvi-tools' ``VAE`` (ZINB, 128 hidden, 10 latent) forward, backward and Adam;
- **scVI training loop**: one epoch of ``SCVI.train`` (its data loader and Lightning loop included);
- **gather**: building a batch from the CSR (sclatent's loader).

"Network + gather" is a step whose likelihood cost nothing: no change to the likelihood can make
a step faster than that.

Run:  python -m benchmarks --only step  (``python -m benchmarks.step --output FILE`` writes the tables alone)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

N_CELLS = 4_096
BATCH_SIZES = (128, 256)
#: scVI's parts run at its default batch size in every pass.
SCVI_BATCH_SIZE = 128
SCVI_PARTS = ("scVI module", "scVI training loop")
PRECISIONS = ("32-true", "bf16-mixed")
BLOCKS = 20
STEPS_PER_BLOCK = 10
_EPS = 1e-8


def compiled_zinb():
    """The ZINB loss from the heads' outputs, as one function for ``torch.compile`` (None when compiling fails)."""
    import torch
    import torch.nn.functional as F

    def loss(x, library, logits, log_theta, zi, flat, xn):
        n_genes = x.shape[-1]
        theta = torch.exp(log_theta)
        mu = library * torch.softmax(logits, -1)
        log_tm = torch.log(theta + mu + _EPS)
        q = theta * (torch.log(theta + _EPS) - log_tm) - zi
        zero = (F.softplus(q) - F.softplus(-zi)).sum(-1)
        cols, rows = flat % n_genes, flat // n_genes
        tn = theta[cols]
        counts = (
            F.logsigmoid(q.reshape(-1)[flat])
            + xn * (torch.log(mu.reshape(-1)[flat] + _EPS) - log_tm.reshape(-1)[flat])
            + torch.lgamma(xn + tn)
            - torch.lgamma(theta)[cols]
            - torch.lgamma(xn + 1)
        )
        return -zero.index_add(0, rows, counts).mean()

    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    compiled = torch.compile(loss)

    def run(x, library, logits, log_theta, zi):
        flat = torch.nonzero(x.reshape(-1)).squeeze(1)
        xn = x.reshape(-1).index_select(0, flat)
        torch._dynamo.mark_dynamic(flat, 0)
        torch._dynamo.mark_dynamic(xn, 0)
        return compiled(x, library, logits, log_theta, zi, flat, xn)

    # compile now (torch.compile is lazy), so that a missing compiler shows here
    x = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    run(x, x.sum(1, keepdim=True), torch.zeros(2, 3), torch.zeros(3), torch.zeros(2, 3))
    return run


def check_fused(batch, logits, log_theta, zi) -> dict[str, float]:
    """Largest difference of the package's fused kernel's loss and gradients from its PyTorch kernel's, relative to the largest value."""
    import torch

    import sclatent as sl

    def loss_and_grads(fused):
        leaves = [t.detach().clone().requires_grad_() for t in (logits, zi, log_theta)]
        if fused:
            nll = sl.module.fused_zinb_nll(batch["x"], leaves[0], batch["library"], leaves[2], leaves[1])
        else:
            mu = batch["library"] * torch.softmax(leaves[0], -1)
            nll = -sl.module.log_zinb(batch["x"], mu, torch.exp(leaves[2]), leaves[1]).sum(-1)
        nll.sum().backward()
        return [nll.detach(), *(t.grad for t in leaves)]

    pairs = zip(("loss", "logits", "zi", "log theta"), loss_and_grads(True), loss_and_grads(False), strict=True)
    return {k: float((a - b).abs().max() / b.abs().max()) for k, a, b in pairs}


def _parts(batch_size, data, module, scvi_module, scvi_model, zinb_compiled):
    """The timed parts at ``batch_size``: name -> (function of a batch number and a precision, precisions)."""
    import torch
    from scvi.distributions import ZeroInflatedNegativeBinomial as ScviZINB

    import sclatent as sl
    from benchmarks.scale import EpochTimer, scvi_train_settings
    from sclatent.nn import full_precision

    order = np.random.default_rng(0).permutation(N_CELLS)
    cells = [np.sort(order[i : i + batch_size]) for i in range(0, N_CELLS - batch_size + 1, batch_size)]
    batches = [data[c] for c in cells]
    heads = []
    with torch.no_grad():
        for b in batches:
            h = module.decoder(module.encode(b["x"], None, b["library"])[0], None)
            heads.append((module.likelihood.scale(h), module.likelihood.dropout(h)))
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-4, eps=0.01, fused=True)
    scvi_optimiser = torch.optim.Adam(scvi_module.parameters(), lr=1e-4, eps=0.01, fused=True)
    log_theta = module.likelihood.log_theta.detach().clone().requires_grad_()

    def autocast(precision):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def full(i, precision):
        with autocast(precision):
            loss = module(batches[i]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def network(i, precision):
        b = batches[i]
        with autocast(precision):
            mean, var = module.encode(b["x"], None, b["library"])
            z = mean + torch.sqrt(var) * torch.randn_like(mean)
            kl = 0.5 * (mean.pow(2) + var - torch.log(var) - 1).sum(-1)
            h = module.decoder(z, None)
            a, d = full_precision(module.likelihood.scale(h)), full_precision(module.likelihood.dropout(h))
            loss = a.mean() + d.mean() + kl.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def likelihood_inputs(i):
        logits, zi = (t.detach().clone().requires_grad_() for t in heads[i])
        return batches[i]["x"], batches[i]["library"], logits, zi

    def likelihood_pytorch(i, precision):
        x, library, logits, zi = likelihood_inputs(i)
        mu = library * torch.softmax(logits, -1)
        loss = -sl.module.log_zinb(x, mu, torch.exp(log_theta), zi).sum(-1).mean()
        loss.backward()

    def likelihood_compiled(i, precision):
        x, library, logits, zi = likelihood_inputs(i)
        zinb_compiled(x, library, logits, log_theta, zi).backward()

    def likelihood_fused(i, precision):
        x, library, logits, zi = likelihood_inputs(i)
        sl.module.fused_zinb_nll(x, logits, library, log_theta, zi).mean().backward()

    def likelihood_scvi(i, precision):
        x, library, logits, zi = likelihood_inputs(i)
        mu = library * torch.softmax(logits, -1)
        dist = ScviZINB(mu=mu, theta=torch.exp(log_theta), zi_logits=zi, validate_args=False)
        (-dist.log_prob(x).sum(-1).mean()).backward()

    def scvi_step(i, precision):  # at scVI's default batch size in every pass
        x = batches[i]["x"][:SCVI_BATCH_SIZE]
        tensors = {"X": x, "batch": torch.zeros(len(x), 1), "labels": torch.zeros(len(x), 1)}
        loss = scvi_module(tensors)[2].loss
        scvi_optimiser.zero_grad()
        loss.backward()
        scvi_optimiser.step()

    def gather(i, precision):
        data[cells[i]]

    def scvi_loop(i, precision):
        """One epoch of scVI's own training (loader, Lightning loop, module): ms per step."""
        timer = EpochTimer()
        scvi_model.train(**scvi_train_settings(2, SCVI_BATCH_SIZE, timer))
        return timer.times[-1] / -(-N_CELLS // SCVI_BATCH_SIZE) * 1e3

    parts = {
        "full step": (full, PRECISIONS),
        "network": (network, PRECISIONS),
        "likelihood, sclatent fused": (likelihood_fused, ("32-true",)),
        "likelihood, sclatent PyTorch": (likelihood_pytorch, ("32-true",)),
        "likelihood, scVI": (likelihood_scvi, ("32-true",)),
        "scVI module": (scvi_step, ("32-true",)),
        "gather": (gather, ("32-true",)),
        "scVI training loop": (scvi_loop, ("32-true",)),
    }
    if zinb_compiled is not None:
        parts["likelihood, compiled"] = (likelihood_compiled, ("32-true",))
    return parts, len(batches)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write the tables to")
    parser.add_argument("--blocks", type=int, default=BLOCKS)
    args = parser.parse_args(argv)

    import scvi
    import torch

    import sclatent as sl
    from benchmarks._data import quiet
    from benchmarks.scale import resample

    quiet("scvi")
    torch.manual_seed(0)
    adata = resample(N_CELLS)
    model = sl.models.Autoencoder(adata)
    module = model.module.train()
    config = module.config
    data = sl.train.CellData(
        adata.X, np.asarray(adata.X.sum(1)).ravel(), np.zeros((N_CELLS, 0)), np.zeros((N_CELLS, 0))
    )
    scvi_module = scvi.module.VAE(n_input=adata.n_vars, n_hidden=128, n_latent=10, gene_likelihood="zinb").train()
    scvi_data = adata.copy()
    scvi.model.SCVI.setup_anndata(scvi_data)
    scvi_model = scvi.model.SCVI(scvi_data, gene_likelihood="zinb", n_hidden=128, n_latent=10)
    try:
        zinb_compiled = compiled_zinb()
    except Exception as err:  # no compiler: the page says so
        zinb_compiled, compile_error = None, repr(err)
    if sl.module.fused_zinb_kernel() is None:
        msg = f"the fused ZINB kernel is not available here ({sl.module.fused_zinb_status()}); this page measures it"
        raise RuntimeError(msg)

    results: dict[tuple[str, int, str], list[float]] = {}
    rows_of = {}

    for batch_size in BATCH_SIZES:
        parts, n_batches = _parts(batch_size, data, module, scvi_module, scvi_model, zinb_compiled)
        runs = [(name, precision, fn) for name, (fn, precisions) in parts.items() for precision in precisions]
        for _, precision, fn in runs:  # warm-up (and compilation), untimed
            for i in range(3):
                fn(i, precision)
        for block in range(args.blocks):
            for name, precision, fn in runs if block % 2 == 0 else runs[::-1]:
                start = time.perf_counter()
                for k in range(STEPS_PER_BLOCK):
                    timed = fn((block * STEPS_PER_BLOCK + k) % n_batches, precision)
                    if timed is not None:  # a part that times itself (one epoch)
                        break
                ms = timed if timed is not None else (time.perf_counter() - start) / STEPS_PER_BLOCK * 1e3
                results.setdefault((name, batch_size, precision), []).append(ms)
            print(f"batch {batch_size}, block {block} done", flush=True)
        rows_of[batch_size] = [(name, precision) for name, precision, _ in runs]

    lines = [
        f"Data: {N_CELLS:,} cells × {adata.n_vars:,} genes resampled from PBMC 3k. sclatent's network: the "
        f"package default (ZINB, {config.n_layers} hidden layer of {config.n_hidden}, {config.n_latent} latent "
        f"dimensions). {args.blocks} blocks of {STEPS_PER_BLOCK} steps per part, the parts in turn (order reversed "
        "every other block); milliseconds per step are medians over the blocks, cells/s = batch size ÷ that.",
        "",
    ]
    if zinb_compiled is None:
        lines += [f"`torch.compile` failed here ({compile_error}), so the compiled likelihood is missing.", ""]
    batch = data[np.arange(256)]
    with torch.no_grad():
        h = module.decoder(module.encode(batch["x"], None, batch["library"])[0], None)
        logits, zi = module.likelihood.scale(h), module.likelihood.dropout(h)
    diff = check_fused(batch, logits, module.likelihood.log_theta.detach(), zi)
    lines += [
        "sclatent's likelihood has two kernels: the fused one (C++, built on first use; what training on a CPU "
        "runs, `sl.module.fused_zinb_kernel`) and the PyTorch one (the fallback; on GPUs). On 256 cells their "
        "largest differences, relative to the largest value: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diff.items())
        + ".",
        "",
    ]
    lines += [
        "## Each part of a step",
        "",
        "Parts are timed in two passes, at sclatent batch sizes 128 and 256; scVI's parts run at its default "
        "batch size (128) in both, so that each pass's blocks hold their own yardstick.",
        "",
        "| part | precision | batch size | ms per step | cells/s | ms per step, each block |",
        "|---|---|---|---|---|---|",
    ]
    for batch_size in BATCH_SIZES:
        for name, precision in rows_of[batch_size]:
            values = results[(name, batch_size, precision)]
            m = statistics.median(values)
            size = SCVI_BATCH_SIZE if name in SCVI_PARTS else batch_size
            lines.append(
                f"| {name} | {precision} | {size} | {m:.2f} | {size / m * 1e3:,.0f} | "
                + ", ".join(f"{v:.2f}" for v in values)
                + " |"
            )

    def per_block(batch_size, precision, parts, yardstick):
        """Cells/s of a step made of ``parts`` (names), and its ratio to scVI's ``yardstick`` part, in each block."""
        rates, ratios = [], []
        for block in range(args.blocks):
            step_ms = sum(results[(name, batch_size, p)][block] for name, p in parts(precision))
            rates.append(batch_size / step_ms * 1e3)
            scvi_rate = SCVI_BATCH_SIZE / results[(yardstick, batch_size, "32-true")][block] * 1e3
            ratios.append(rates[-1] / scvi_rate)
        return statistics.median(rates), statistics.median(ratios), min(ratios), max(ratios)

    steps = {
        "today's full step + gather": lambda p: [("full step", p), ("gather", "32-true")],
        "network + fused likelihood + gather": lambda p: [
            ("network", p),
            ("likelihood, sclatent fused", "32-true"),
            ("gather", "32-true"),
        ],
        "network + gather (a likelihood that cost nothing)": lambda p: [("network", p), ("gather", "32-true")],
    }
    lines += [
        "",
        "## How fast a step could be",
        "",
        "Steps made of the parts above, in each block: cells/s, and the ratio to scVI's cells/s at its default "
        "batch size, 128, in float32, in the same block: to its module's step alone (no data loader, as these "
        "steps have no training loop) and to its whole training loop (one epoch, loader and Lightning included, "
        "as the scale benchmark times it). Medians over the blocks, with the ratio's range. The parts were timed "
        'apart, so their sums are estimates; "today\'s full step" is measured whole.',
        "",
        "| step | batch size | precision | cells/s | × scVI module | range | × scVI training loop | range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, parts in steps.items():
        for batch_size in BATCH_SIZES:
            for precision in PRECISIONS:
                rate, ratio, low, high = per_block(batch_size, precision, parts, "scVI module")
                _, loop, loop_low, loop_high = per_block(batch_size, precision, parts, "scVI training loop")
                lines.append(
                    f"| {label} | {batch_size} | {precision} | {rate:,.0f} | {ratio:.2f}× | {low:.2f} to {high:.2f}× "
                    f"| {loop:.2f}× | {loop_low:.2f} to {loop_high:.2f}× |"
                )
    lines.append("")
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    print("\n".join(main()))
