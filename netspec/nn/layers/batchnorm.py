"""batchnorm: batch normalisation over channels (C, H, W) or features (D,), as torch's
BatchNorm2d / BatchNorm1d with affine=True and track_running_stats=True.

Internally the channel (feature) axis is 0 and every other axis, the batch included, is reduced:
(C, H, W, N) is viewed as (C, M) with M = H*W*N, and (D, N) as (D, M) with M = N.

Train mode (batch statistics):
    mean = mean_m x,   var = mean_m (x - mean)^2   (biased, for normalising)
    xhat = (x - mean) / sqrt(var + eps),   y = weight * xhat + bias
  (computed as y = (weight / sqrt(var + eps)) * (x - mean) + bias; x - mean is kept for backward)
    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)
  Split across worker processes (netspec/train/pool.py), each worker gathers every worker's
  count, mean and variance (forward) and dbias, dweight (backward) through ctx.exchange, so the
  batch is normalised with whole-batch statistics exactly as in one process, up to rounding. Each
  keeps x - mean_k about its own slice's mean and folds shift = mean - mean_k into the
  per-channel factors (y = s (x - mean_k) + bias - s shift, and the same in backward), which
  saves re-centring x - mean_k in a pass of its own.
  backward (the compact formula):
    dbias = sum_m dy,   dweight = sum_m dy * xhat
    dx = weight / (M * sqrt(var + eps)) * (M * dy - dbias - xhat * dweight)
       = s dy + a (x - mean) + d   with per-channel s = weight / sqrt(var + eps),
         a = -s dweight / (M sqrt(var + eps)) and d = -s dbias / M
Eval mode (running statistics): an affine map per channel,
    xhat = (x - running_mean) / sqrt(running_var + eps),   y = weight * xhat + bias,
  so after an eval forward: dx = dy * weight / sqrt(running_var + eps), same dweight and dbias.

weight starts at ones and bias at zeros whatever defaults.init says (as torch initialises BN);
running_mean starts at zeros and running_var at ones. MACs: 0 (no GEMM; in eval mode the layer
folds into the preceding conv or linear).
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveFloat

from netspec.errors import TrainingError
from netspec.nn.layers.base import Layer, ShapeError, register


@register
class BatchNorm(Layer):
    """weight (C,), bias (C,); buffers running_mean (C,), running_var (C,)."""

    type: Literal["batchnorm"] = "batchnorm"
    eps: PositiveFloat = Field(1e-5, description="Added to the variance before the square root.")
    momentum: float = Field(0.1, ge=0.0, le=1.0,
                            description="Weight of the batch statistic in the running average.")

    examples: ClassVar[list] = [({}, (3, 4, 4)), ({}, (5,)),
                                ({"eps": 1e-3, "momentum": 0.3}, (2, 3, 2))]
    couples_batch: ClassVar[bool] = True  # batch statistics

    def output_shape(self, in_shape):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"batchnorm expects (C, H, W) or (D,), got {tuple(in_shape)}")
        return in_shape

    def param_shapes(self, in_shape):
        return {"weight": (in_shape[0],), "bias": (in_shape[0],)}

    def buffer_shapes(self, in_shape):
        return {"running_mean": (in_shape[0],), "running_var": (in_shape[0],)}

    def init_params(self, in_shape, rng, defaults):
        c = in_shape[0]
        return {"weight": np.ones(c), "bias": np.zeros(c)}

    def init_buffers(self, in_shape):
        c = in_shape[0]
        return {"running_mean": np.zeros(c), "running_var": np.ones(c)}

    def torch_module(self, info, nn):
        norm = nn.BatchNorm2d if len(info.in_shape) == 3 else nn.BatchNorm1d
        return norm(info.in_shape[0], eps=self.eps, momentum=self.momentum)

    def build(self, ctx):
        c = ctx.in_shape[0]
        w, gw = ctx.params["weight"], ctx.grads["weight"]
        b, gb = ctx.params["bias"], ctx.grads["bias"]
        run_mean, run_var = ctx.buffers["running_mean"], ctx.buffers["running_var"]
        eps, momentum = self.eps, self.momentum
        cache = {}

        def forward(x, train):
            x2 = x.reshape(c, -1)  # (C, H, W, N) -> (C, M) or (D, N) as it is
            m = x2.shape[1]
            xc = ctx.ws("xc", x2.shape)  # x - mean: kept for backward (xhat = xc * inv_std)
            inv_std = ctx.ws("inv_std", (c,))
            shift = np.zeros(c)  # the batch's mean minus xc's (workers: their slice's), (C,)
            if train:
                mean = x2 @ ctx.ws("ones", (m,), fill=1) / m  # (C,): sums as a GEMV (row_dots)
                np.subtract(x2, mean[:, None], out=xc)
                var = row_dots(xc, xc) / m  # biased variance, (C,)
                if ctx.exchange is not None:  # the batch is split across worker processes
                    m, whole, var = _whole_batch_stats(ctx.exchange, m, mean, var)
                    # x - whole = xc - shift: folded into the per-channel factors below and
                    # in backward, instead of a pass over xc
                    shift, mean = whole - mean, whole
                if m < 2:
                    raise TrainingError(
                        "batchnorm needs at least 2 values per channel for its training "
                        f"statistics, got a batch of {x.shape[-1]} sample(s) with {m} value(s) "
                        "per channel (torch refuses this too); use a batch_size of 2 or more, "
                        "and one that does not leave a last batch of a single sample")
                np.sqrt(var + eps, out=inv_std)
                np.reciprocal(inv_std, out=inv_std)
                if ctx.exchange is None or ctx.exchange.rank == 0:  # shared buffers: one writer
                    # running = (1 - momentum) * running + momentum * stat, in place
                    run_mean[...] = (1 - momentum) * run_mean + momentum * mean
                    run_var[...] = (1 - momentum) * run_var + (momentum * m / (m - 1)) * var
            cache.update(train=train, x=x2, xc=xc, inv_std=inv_std, shape=x.shape, m=m,
                         shift=shift)
            y = ctx.ws("y", x.shape)
            y2 = y.reshape(c, -1)  # (C, M), a view
            if not train:  # an affine map per channel: y = x * scale + (bias - mean * scale);
                # xc waits for a backward (rare after eval), which computes it from x
                np.sqrt(run_var + eps, out=inv_std)
                np.reciprocal(inv_std, out=inv_std)
                scale = w * inv_std
                np.multiply(x2, scale[:, None], out=y2)
                y2 += (b - run_mean * scale)[:, None]
                return y
            scale = w * inv_std  # y = weight * xhat + bias, xhat = (xc - shift) * inv_std,
            np.multiply(xc, scale[:, None], out=y2)  # with the factors folded per channel
            y2 += (b - shift * scale).astype(y2.dtype)[:, None]
            return y

        def backward(dy, need_dx=True):
            xc, inv_std, shift = cache["xc"], cache["inv_std"], cache["shift"]
            if not cache["train"]:  # x - running_mean, which the eval forward skipped
                np.subtract(cache["x"], run_mean[:, None], out=xc)
            dy2 = dy.reshape(c, -1)  # (C, M)
            np.matmul(dy2, ctx.ws("ones", (dy2.shape[1],), fill=1), out=gb)  # dbias = sum_m dy
            # dweight = sum_m dy * xhat = inv_std * (sum_m dy * xc - shift * dbias)
            np.multiply(row_dots(dy2, xc) - shift * gb, inv_std, out=gw)
            if not need_dx:
                return None
            dx = ctx.ws("dx", cache["shape"])
            dx2 = dx.reshape(c, -1)  # (C, M), a view
            scale = w * inv_std  # (C,)
            if cache["train"]:
                # dx = w * inv_std * (dy - (dbias + xhat * dweight) / M), with the sums and M
                # over the whole batch (gb and gw keep this worker's part: the pool adds them),
                # as per-channel factors: dx = scale * dy + a * xc + d
                sum_dy, sum_dy_xhat, m = gb, gw, cache["m"]
                if ctx.exchange is not None:
                    parts = ctx.exchange.gather(np.concatenate((gb, gw)))  # (W, 2C)
                    sum_dy, sum_dy_xhat = parts[:, :c].sum(axis=0), parts[:, c:].sum(axis=0)
                a = -scale * inv_std * sum_dy_xhat / m  # (C,)
                d = -scale * sum_dy / m - a * shift  # (C,): a * (xc - shift) + d'
                np.multiply(xc, a.astype(xc.dtype)[:, None], out=dx2)
                dx2 += d.astype(xc.dtype)[:, None]
                dy2 *= scale[:, None]  # dy is dead after us: reuse it
                dx2 += dy2
            else:
                np.multiply(dy2, scale[:, None], out=dx2)  # affine: dy * w / std
            return dx

        return forward, backward

    def to_onnx(self, g, x):
        """Inference form: (x - running_mean) / sqrt(running_var + eps) * weight + bias, with
        the same eps; ONNX normalises axis 1, the channels of (N, C, H, W) or features of (N, D).
        ONNX's momentum weighs the running statistic (torch's the batch's): 1 - momentum."""
        ws = [g.param(k) for k in ("weight", "bias", "running_mean", "running_var")]
        return g.node("BatchNormalization", [x, *ws], epsilon=self.eps,
                      momentum=1.0 - self.momentum)


def row_dots(a, b):
    """(C,): sum_m a[c, m] * b[c, m] for (C, M) arrays, as C dot products in BLAS: ~3x faster
    than np.einsum or a NumPy sum at these sizes (as is a @ ones for the row sums; 1 thread,
    (16, 50176) float32: 0.05 ms against 0.13-0.17)."""
    return np.matmul(a[:, None, :], b[:, :, None]).reshape(len(a))


def _whole_batch_stats(exchange, m, mean, var):
    """(M, mean, var) of the whole batch from every worker's (m, mean, var) of its slice.

    Chan et al.'s pairwise combination, exact up to rounding and stable:
        M = sum_k m_k,  mean = sum_k m_k mean_k / M,
        var = sum_k (m_k var_k + m_k (mean_k - mean)^2) / M
    """
    c = len(mean)
    parts = exchange.gather(np.concatenate(([m], mean, var)))  # (W, 1 + 2C), float64
    counts, means, vars_ = parts[:, 0], parts[:, 1:c + 1], parts[:, c + 1:]
    total = int(counts.sum())
    whole = counts @ means / total  # (C,)
    whole_var = (counts @ vars_ + counts @ (means - whole) ** 2) / total
    return total, whole, whole_var
