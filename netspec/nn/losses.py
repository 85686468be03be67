"""Loss functions: each spec entry validates its options and computes (loss, dloss/dlogits).

Losses take class scores along `axis` (PyTorch's (N, K) uses axis=-1; the plan's internal
(K, N) layout uses axis=0) and integer labels, and return the batch-mean loss and its gradient.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class LossSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __call__(self, logits: np.ndarray, labels: np.ndarray, axis: int = -1):
        """(mean loss as float, dloss/dlogits with the shape and dtype of logits)."""
        raise NotImplementedError

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        """The class probabilities the network's output (N, K) stands for: its softmax, for a
        network that ends in scores."""
        shifted = out - out.max(1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(1, keepdims=True)


def _one_hot(labels, shape, axis, dtype):
    """Integer labels (N,) -> one-hot array of `shape` with classes along `axis`."""
    k = shape[axis]
    eye = np.eye(k, dtype=dtype)[labels]  # (N, K)
    return eye if axis in (-1, 1) and len(shape) == 2 else np.moveaxis(eye, -1, axis)


class CrossEntropy(LossSpec):
    """Softmax fused with negative log-likelihood, as torch.nn.CrossEntropyLoss.

    loss = mean_n [ logsumexp(z_n) - sum_k q_nk z_nk ],  q = (1-s) onehot + s/K
    dloss/dz = (softmax(z) - q) / N
    """

    type: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0)

    def __call__(self, logits, labels, axis=-1):
        n = labels.shape[0]
        k = logits.shape[axis]
        shifted = logits - logits.max(axis=axis, keepdims=True)  # stable log-sum-exp
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=axis, keepdims=True)
        log_probs = shifted - np.log(sum_exp)
        target = _one_hot(labels, logits.shape, axis, logits.dtype)
        if self.label_smoothing:
            target = (1 - self.label_smoothing) * target + self.label_smoothing / k
        loss = -(target * log_probs).sum() / n
        grad = exp / sum_exp  # softmax
        grad -= target
        grad /= n
        return float(loss), grad


class MSE(LossSpec):
    """Mean squared error against one-hot targets, as torch.nn.MSELoss(reduction='mean').

    loss = mean over all N*K entries of (z - onehot)^2;  dloss/dz = 2 (z - onehot) / (N*K)
    """

    type: Literal["mse"] = "mse"

    def __call__(self, logits, labels, axis=-1):
        diff = logits - _one_hot(labels, logits.shape, axis, logits.dtype)
        loss = float(np.mean(np.square(diff, dtype=np.float64)))
        diff *= 2.0 / diff.size
        return loss, diff


class NLL(LossSpec):
    """Negative log-likelihood of the true class, for a network that ends in log_softmax (as
    torch.nn.NLLLoss) or, with input: probabilities, in softmax.

    log_probabilities: loss = -mean_n z[n, y_n];        dloss/dz = -onehot / N
    probabilities:     loss = -mean_n log p[n, y_n];    dloss/dp = -onehot / (N p)
    (p is floored at the dtype's smallest normal number, so a zero probability gives a large
    finite loss instead of inf).
    """

    type: Literal["nll"] = "nll"
    input: Literal["log_probabilities", "probabilities"] = Field(
        "log_probabilities", description="What the network's output is: log-probabilities "
                                         "(after log_softmax) or probabilities (after softmax).")

    def __call__(self, logits, labels, axis=-1):
        n = labels.shape[0]
        target = _one_hot(labels, logits.shape, axis, logits.dtype)
        if self.input == "log_probabilities":
            return float(-(target * logits).sum() / n), target * (-1.0 / n)
        p = np.maximum(logits, np.finfo(logits.dtype).tiny)
        loss = float(-(target * np.log(p)).sum() / n)
        return loss, target / p * (-1.0 / n)

    def probabilities(self, out):
        return out if self.input == "probabilities" else np.exp(out)


Loss = Annotated[CrossEntropy | MSE | NLL, Field(discriminator="type")]
