"""The compiler: a validated spec becomes a Plan of forward/backward closures over NumPy arrays.

    plan = compile(spec, dtype="float32")
    logits = plan.forward(x, train=True)     # x: (N, C, H, W) or (N, D)
    dx = plan.backward(dlogits)              # fills plan.grads, returns dL/dx

Parameters live in `plan.params` under PyTorch names ("conv1.weight") and layouts; gradients in
`plan.grads` with the same keys; non-trainable state (batchnorm running statistics) in
`plan.buffers`. Update them in place (`p[...] = ...`): the closures hold these very arrays.
Internally activations are batch-innermost, (C, H, W, N) or (D, N); see layers/base.py.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from netspec.checkpoint import check_fits
from netspec.layers import Ctx, Layer, Workspace
from netspec.parallel import shared_array
from netspec.shapes import LayerInfo

# Eval-mode forward passes run in chunks whose layer outputs total about this many bytes
# (LeNet: ~41 kB per sample -> chunks of ~125; the MLP: 3 kB -> batches of 1000 run whole).
EVAL_BYTES = 5 << 20
# NumPy's ufunc buffer size (elements) while a plan runs. The layers' elementwise ops work on
# strided views (pooling taps, col2im slices) whose contiguous rows are a few hundred elements
# long. With NumPy's default 8192 the buffered iterator copies such operands through buffers to
# get longer inner loops, which is up to 3x slower than working on the rows in place (numpy 2.4:
# col2im of LeNet's conv2 0.58 -> 0.28 ms; a whole LeNet step ~7% faster). A smaller buffer
# makes NumPy take the rows directly; much smaller ones slow down the ops that cast (bool masks).
UFUNC_BUFSIZE = 1024


@dataclass
class Step:
    """One layer of a plan: its inferred shapes, its arrays and its two closures."""

    info: LayerInfo
    ctx: Ctx
    forward: object  # (x, train) -> y, internal layout
    backward: object  # (dy, need_dx) -> dx or None

    @property
    def name(self) -> str:
        return self.info.name


class Plan:
    """An executable network. Build it with `compile(spec)` or `Plan(infos, ...)`."""

    def __init__(self, infos: list[LayerInfo], dtype="float32", rng=None, defaults=None):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.in_shape = tuple(infos[0].in_shape)
        self.out_shape = tuple(infos[-1].out_shape)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.steps: list[Step] = []
        self.outputs: list[np.ndarray] = []  # each layer's output from the last forward
        # eval-mode chunking (see run_forward): samples whose activations fill ~EVAL_BYTES
        per_sample = sum(math.prod(info.out_shape) for info in infos) * self.dtype.itemsize
        self.eval_chunk = max(1, EVAL_BYTES // max(per_sample, 1))
        self._ws = Workspace(self.dtype)  # chunk buffers
        self._unchunked_x = None
        # Parameters and gradients are consecutive views of two flat arrays, so that the
        # optimizer can update everything with a few whole-array operations. The parameters
        # sit in shared memory: worker processes forked later (parallel.py) read them there.
        sizes = [math.prod(s) for i in infos for s in i.param_shapes.values()]
        self.flat_params = shared_array((sum(sizes),), self.dtype)
        self.flat_grads = np.zeros(sum(sizes), self.dtype)
        offset = 0
        for info in infos:  # parameters are drawn layer by layer from the one Generator
            values = info.layer.init_params(info.in_shape, self.rng, defaults)
            ctx = Ctx(info.in_shape, ws=Workspace(self.dtype), rng=self.rng)
            for key, value in values.items():
                n = value.size
                p = self.flat_params[offset:offset + n].reshape(value.shape)
                p[...] = value
                ctx.params[key] = self.params[f"{info.name}.{key}"] = p
                ctx.grads[key] = self.grads[f"{info.name}.{key}"] = (
                    self.flat_grads[offset:offset + n].reshape(value.shape))
                offset += n
            for key, value in info.layer.init_buffers(info.in_shape).items():
                buf = shared_array(value.shape, self.dtype)  # shared with workers, as params
                buf[...] = value
                ctx.buffers[key] = self.buffers[f"{info.name}.{key}"] = buf
            forward, backward = info.layer.build(ctx)
            self.steps.append(Step(info, ctx, forward, backward))

    # ------------------------------------------------ public API, PyTorch layout

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """(N, *input shape) -> (N, *output shape), a fresh array."""
        return self.from_internal(self.run_forward(self.to_internal(x), train))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Back-propagate dL/d(output), (N, *output shape); set plan.grads; return dL/dx."""
        dy = np.asarray(dy, dtype=self.dtype)
        if dy.shape[1:] != self.out_shape:
            raise ValueError(f"dy must have shape (N, *{self.out_shape}), got {dy.shape}")
        dy = np.ascontiguousarray(np.moveaxis(dy, 0, -1))  # (N, ...) -> (..., N)
        dx = self.run_backward(dy, need_dx=True)
        return self.from_internal(dx)

    # ------------------------------------------------ internal layout (batch innermost)

    def to_internal(self, x: np.ndarray) -> np.ndarray:
        """(N, *input shape) in any float dtype -> (*input shape, N) in plan dtype.

        A contiguous copy, except for flat inputs already contiguous in the plan dtype: then
        the transposed view (D, N) of x itself, which the layers read like any array (a first
        linear layer hands it to BLAS as transposed; the copy cost ~20% of MLP inference).
        As with torch's saved tensors, do not modify x between forward and backward.
        """
        x = np.asarray(x)
        n = x.shape[0] if x.ndim else 0
        if x.ndim < 1 or x.size != n * int(np.prod(self.in_shape)):
            raise ValueError(f"x must have shape (N, *{self.in_shape}), got {x.shape}")
        x = x.reshape(n, *self.in_shape)
        if len(self.in_shape) == 1 and x.dtype == self.dtype and x.flags.c_contiguous:
            return x.T  # (N, D) -> (D, N), a view
        return np.ascontiguousarray(np.moveaxis(x, 0, -1), dtype=self.dtype)

    def from_internal(self, y: np.ndarray) -> np.ndarray:
        """(*shape, N) -> a fresh contiguous (N, *shape)."""
        return np.ascontiguousarray(np.moveaxis(y, -1, 0))

    def run_forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Internal layout in and out; the result is owned by the plan or its last layer.

        In eval mode a large batch runs in chunks of about `eval_chunk` samples, so that each
        layer's arrays (im2col buffers above all) stay in cache: at batch 1000 that is ~3x
        faster per image than one pass, and the results are the same. Training batches always
        run whole, since backward needs every sample's activations. After a chunked pass
        `self.outputs` holds the last chunk's layer outputs.
        """
        n = x.shape[-1]
        chunk = self._chunk_size(n) if not train else n
        self._unchunked_x = None
        if chunk >= n:
            return self._run_layers(x, train)
        self._unchunked_x = x  # a backward after this forward recomputes it whole
        out = None
        for start in range(0, n, chunk):
            part = self._ws("x_chunk", (*x.shape[:-1], min(chunk, n - start)))
            np.copyto(part, x[..., start:start + chunk])  # (*in, N) -> contiguous (*in, B)
            y = self._run_layers(part, train)
            if out is None:
                out = self._ws("y_chunks", (*y.shape[:-1], n))
            out[..., start:start + chunk] = y  # (*out, B) into (*out, N)
        return out

    def _run_layers(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.outputs.clear()
        with ufunc_buffer():
            for step in self.steps:
                x = step.forward(x, train)
                self.outputs.append(x)
        return x

    def _chunk_size(self, n: int) -> int:
        """Samples per eval chunk for a batch of n: a divisor of n near eval_chunk if any."""
        target = self.eval_chunk
        if n <= target * 3 // 2:
            return n
        near = [d for d in range(target // 2, target * 3 // 2 + 1) if n % d == 0]
        return min(near, key=lambda d: abs(d - target)) if near else target

    def run_backward(self, dy: np.ndarray, need_dx: bool = False) -> np.ndarray | None:
        """Internal layout; fills grads. The first layer skips dL/dx unless need_dx."""
        if self._unchunked_x is not None:  # layers hold the last eval chunk: redo it whole
            self._run_layers(self._unchunked_x, False)
            self._unchunked_x = None
        with ufunc_buffer():
            for i in range(len(self.steps) - 1, -1, -1):
                dy = self.steps[i].backward(dy, need_dx or i > 0)
        return dy

    # ------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of parameters and buffers, by PyTorch name (torch's state_dict keys)."""
        return {k: v.copy() for k, v in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], source: str = "state") -> None:
        """Copy arrays into the plan in place; names and shapes must match exactly."""
        mine = {**self.params, **self.buffers}
        check_fits(state, {k: v.shape for k, v in mine.items()},
                   f"{source} does not fit this network")
        for k, v in mine.items():
            v[...] = state[k]

    def first_nonfinite(self) -> str | None:
        """Name of the first layer whose last forward output holds NaN or inf."""
        for step, out in zip(self.steps, self.outputs):
            if not np.isfinite(out).all():
                return step.name
        return None


@contextmanager
def ufunc_buffer(size: int = UFUNC_BUFSIZE):
    """Run the block with NumPy's ufunc buffer at `size` elements (see UFUNC_BUFSIZE)."""
    old = np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(old)


def compile(spec, dtype="float32") -> Plan:
    """Build a Plan for a validated NetSpec, initialised from the spec's seed."""
    return Plan(spec.infos, dtype, np.random.default_rng(spec.seed), spec.defaults.init)


def layer_plan(layer: Layer, in_shape, dtype="float64", seed: int = 0,
               name: str | None = None) -> Plan:
    """A one-layer Plan (used to check a layer in isolation); its step is called `name`."""
    out = tuple(layer.output_shape(tuple(in_shape)))
    info = LayerInfo(0, name or layer.name or layer.type, layer, tuple(in_shape), out,
                     layer.param_shapes(in_shape), layer.buffer_shapes(in_shape),
                     layer.macs(in_shape, out))
    return Plan([info], dtype, np.random.default_rng(seed))
