"""The compiler: a validated spec becomes a Plan of forward/backward closures over NumPy arrays.

    plan = compile(spec, dtype="float32")
    logits = plan.forward(x, train=True)     # x: (N, C, H, W) or (N, D)
    dx = plan.backward(dlogits)              # fills plan.grads, returns dL/dx

Parameters live in `plan.params` under PyTorch names ("conv1.weight") and layouts; gradients in
`plan.grads` with the same keys; non-trainable state (batchnorm running statistics) in
`plan.buffers`. Update them in place (`p[...] = ...`): the closures hold these very arrays.
Internally activations are batch-innermost, (C, H, W, N) or (D, N); see layers/base.py.

Graphs: the steps run in list order (the spec's order, so producers come first). Each step
reads the outputs of the layers named in its LayerInfo.inputs. In backward, a tensor read by
several layers gets the sum of their gradients, accumulated in the first one to arrive when no
other gradient shares its memory (it is its layer's, dead once handed on), else in a buffer of
the plan's (Caffe's split layer), so that every layer still owns its dy and may overwrite it.
Those buffers return to a pool once their last reader is done and serve the next fan-out of the
same shape.
`_run_layers` and `run_backward` are the only loops that run layers; `plan.hook`, when set,
is called around every layer call (netspec bench times layers through it).

Fusion: a chain of adjacent layers that computes faster as one (`plan.fused`, links from
netspec/plan/fuse.py: conv + average pool, relu + max pool, conv + batchnorm (+ relu)) runs in the
first layer's step, and the others' steps pass arrays through; all keep their names, parameters
and outputs' places.

Options (`plan.options`, netspec/plan/options.py): worker processes, BLAS threads, conv
algorithms and fusion are decided once, here; `plan.algorithms()` names each conv's algorithm.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from netspec.checkpoint import check_fits
from netspec.errors import SpecError
from netspec.kernels.noise import Noise
from netspec.kernels.shared import Arena
from netspec.kernels.ufuncs import ufunc_buffer
from netspec.nn.layers import Ctx, Layer, Workspace
from netspec.plan import fuse
from netspec.plan.options import PlanOptions, resolve
from netspec.plan.shapes import INPUT, LayerInfo, infer

# Eval-mode forward passes run in chunks whose layer outputs total about this many bytes
# (LeNet: ~41 kB per sample -> chunks of ~125; the MLP: 3 kB -> batches of 1000 run whole),
# but of at least MIN_EVAL_CHUNK samples: below that each layer call is too short to pay for
# its own overhead (docs/performance.md).
EVAL_BYTES = 5 << 20
MIN_EVAL_CHUNK = 64


@dataclass
class Step:
    """One layer of a plan: its inferred shapes, its arrays and its two closures."""

    info: LayerInfo
    ctx: Ctx
    forward: object  # (x, train) -> y, internal layout (multi-input: ([x, ...], train))
    backward: object  # (dy, need_dx) -> dx or None (multi-input: (dy, need) -> [dx, ...])
    sources: tuple = (-1,)  # the step index of each input; -1 is the network input

    @property
    def name(self) -> str:
        return self.info.name


# hook(step, phase, fn, *args) -> fn(*args): wraps every layer call when set (phase "forward"
# or "backward"), e.g. to time it; it must return what fn returns.
Hook = Callable[..., object]


class Plan:
    """An executable network. Build it with `compile(spec)` or `Plan(infos, ...)`."""

    def __init__(self, infos: list[LayerInfo], dtype="float32", rng=None, defaults=None,
                 seed: int = 0, options: PlanOptions | None = None, state: dict | None = None):
        """rng draws the initial parameters, unless `state` gives every parameter and buffer
        by name (an imported model's weights: nothing is drawn); seed keys the dropout masks
        (kernels/noise.py)."""
        if state is not None:
            check_fits(state, {f"{i.name}.{k}": s for i in infos
                               for k, s in {**i.param_shapes, **i.buffer_shapes}.items()},
                       "the given state does not fit this network")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.options = resolve(options, infos)
        self.noise = Noise(seed)  # its step and offset are set by the trainer
        self.in_shape = next(tuple(shape) for info in infos  # what the "input" readers get
                             for n, shape in zip(info.inputs, info.in_shapes) if n == INPUT)
        self.out_shape = tuple(infos[-1].out_shape)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.steps: list[Step] = []
        self.outputs: list[np.ndarray] = []  # each layer's output from the last forward
        # (a fused chain's output for all of its layers)
        self.hook: Hook | None = None
        # set by the Trainer: augmentation of training batches, applied to the gathered rows
        # in every worker (netspec/data/augment.py), or None
        self.augment = None
        # eval-mode chunking (see run_forward): samples whose activations fill ~EVAL_BYTES
        per_sample = sum(math.prod(info.out_shape) for info in infos) * self.dtype.itemsize
        self.eval_chunk = max(MIN_EVAL_CHUNK, EVAL_BYTES // max(per_sample, 1))
        self._ws = Workspace(self.dtype)  # chunk buffers
        self._unchunked_x = None
        # Parameters and gradients are consecutive views of two flat arrays, so that the
        # optimizer can update everything with a few whole-array operations. The parameters,
        # then the buffers, sit in one Arena: private memory, which a WorkerPool shares with
        # the processes it forks while it runs (netspec/kernels/shared.py).
        sizes = [math.prod(s) for i in infos for s in i.param_shapes.values()]
        n_buffers = sum(math.prod(s) for i in infos for s in i.buffer_shapes.values())
        self.arena = Arena((sum(sizes) + n_buffers) * self.dtype.itemsize)
        self.flat_params = self.arena.array(0, (sum(sizes),), self.dtype)
        self.flat_grads = np.zeros(sum(sizes), self.dtype)
        buffer_at = sum(sizes) * self.dtype.itemsize  # bytes: where the next buffer goes
        offset = 0
        index: dict[str, int] = {}  # layer name -> step index
        self.fused = fuse.fusions(infos, self.options.fuse)  # {layer: next}: run as one
        ends = {chain[-1]: chain for chain in fuse.chains(self.fused)}
        for info in infos:  # parameters are drawn layer by layer from the one Generator
            values = (info.layer.init_params(info.in_shape, self.rng, defaults) if state is None
                      else {k: state[f"{info.name}.{k}"] for k in info.param_shapes})
            ctx = Ctx(info.in_shape, ws=Workspace(self.dtype),
                      noise=self.noise.stream(info.index), conv=self.options.conv,
                      eval_conv=self.options.eval_conv, blas_threads=self.options.blas_threads)
            for key, value in values.items():
                n = value.size
                p = self.flat_params[offset:offset + n].reshape(value.shape)
                p[...] = value
                ctx.params[key] = self.params[f"{info.name}.{key}"] = p
                ctx.grads[key] = self.grads[f"{info.name}.{key}"] = (
                    self.flat_grads[offset:offset + n].reshape(value.shape))
                offset += n
            buffers = (info.layer.init_buffers(info.in_shape) if state is None
                       else {k: state[f"{info.name}.{k}"] for k in info.buffer_shapes})
            for key, value in buffers.items():
                buf = self.arena.array(buffer_at, value.shape, self.dtype)
                buffer_at += buf.nbytes
                buf[...] = value
                ctx.buffers[key] = self.buffers[f"{info.name}.{key}"] = buf
            if info.name in self.fused:  # built with the chain's last layer, below
                forward = backward = None
            elif info.name in ends:  # the chain's first step runs it; the others pass through
                chain = [self.steps[index[name]] for name in ends[info.name][:-1]]
                chain[0].forward, chain[0].backward = fuse.build(
                    [s.info for s in chain] + [info], [s.ctx for s in chain] + [ctx])
                for s in chain[1:]:
                    s.forward, s.backward = fuse.passthrough()
                forward, backward = fuse.passthrough()
            else:
                forward, backward = info.layer.build(ctx)
            sources = tuple(-1 if n == INPUT else index[n] for n in info.inputs)
            index[info.name] = len(self.steps)
            self.steps.append(Step(info, ctx, forward, backward, sources))
        # readers[s]: how many inputs read step s's output (readers[-1]: the network input's)
        self.readers = [0] * (len(self.steps) + 1)
        for step in self.steps:
            for s in step.sources:
                self.readers[s] += 1
        self._pool: dict[tuple, list[np.ndarray]] = {}  # free gradient-sum buffers, by shape

    def algorithms(self) -> dict[str, str]:
        """{layer name: the algorithm it trains with}, for the layers that choose one (conv2d;
        a fused conv + average pool under the conv's name)."""
        return {s.name: s.ctx.algorithm for s in self.steps if s.ctx.algorithm}

    # ------------------------------------------------ public API, PyTorch layout

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """(N, *input shape) -> (N, *output shape), a fresh array. In train mode each call
        draws new dropout masks (it advances plan.noise.step)."""
        y = self.from_internal(self.run_forward(self.to_internal(x), train))
        if train:
            self.noise.step += 1
        return y

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
        layer's arrays (im2col buffers above all) stay in cache (docs/performance.md); the
        results are the same as one pass. Training batches always
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
        """The forward loop: every step in order, on the outputs its inputs name."""
        outs, hook = self.outputs, self.hook
        outs.clear()
        with ufunc_buffer():
            for step in self.steps:
                if step.info.layer.multi_input:
                    a = [x if s < 0 else outs[s] for s in step.sources]
                else:
                    a = x if step.sources[0] < 0 else outs[step.sources[0]]
                if hook is None:
                    outs.append(step.forward(a, train))
                else:
                    outs.append(hook(step, "forward", step.forward, a, train))
        return outs[-1]

    def _chunk_size(self, n: int) -> int:
        """Samples per eval chunk for a batch of n: a divisor of n near eval_chunk if any."""
        target = self.eval_chunk
        if n <= target * 3 // 2:
            return n
        near = [d for d in range(target // 2, target * 3 // 2 + 1) if n % d == 0]
        return min(near, key=lambda d: abs(d - target)) if near else target

    def run_backward(self, dy: np.ndarray, need_dx: bool = False) -> np.ndarray | None:
        """Internal layout; fills grads and returns dL/dx (valid until the next backward).

        Layers reading the network input skip dL/dx unless need_dx. The backward loop: steps
        in reverse; each hands its dx to the step it read, and a step read by several gets the
        sum of their dx in a pooled buffer (see the module docstring).
        """
        if self._unchunked_x is not None:  # layers hold the last eval chunk: redo it whole
            self._run_layers(self._unchunked_x, False)
            self._unchunked_x = None
        n, hook, readers = len(self.steps), self.hook, self.readers
        pending: list = [None] * (n + 1)  # dL/d(output of step s); [-1]: of the network input
        pending[n - 1] = dy
        arrived = [0] * (n + 1)  # how many readers of s have handed their dx in
        backing: list = [None] * (n + 1)  # the pooled buffer pending[s] may be (a view of)
        with ufunc_buffer():
            for i in range(n - 1, -1, -1):
                step, g, buf = self.steps[i], pending[i], backing[i]
                pending[i] = backing[i] = None
                if step.info.layer.multi_input:
                    need = tuple(s >= 0 or need_dx for s in step.sources)
                    args = (g, need)
                else:
                    args = (g, step.sources[0] >= 0 or need_dx)
                out = step.backward(*args) if hook is None else hook(step, "backward",
                                                                     step.backward, *args)
                dxs = out if step.info.layer.multi_input else (out,)
                for s, dx in zip(step.sources, dxs):
                    if dx is None:
                        continue
                    arrived[s] += 1
                    if readers[s] == 1:  # its only reader: hand dx on as it is
                        pending[s] = dx
                        if buf is not None and np.may_share_memory(dx, buf):
                            backing[s] = buf  # dx lives in (or is) our buffer: keep it
                    elif arrived[s] == 1 and _alone(dx, dxs, pending):
                        pending[s] = dx  # the first of several, and no other gradient shares
                        if buf is not None and np.may_share_memory(dx, buf):  # its memory:
                            backing[s] = buf  # the sum starts in it, with no copy
                    elif arrived[s] == 1:  # the first of several: start the sum in a buffer
                        pending[s] = backing[s] = self._take(dx.shape)
                        np.copyto(pending[s], dx)
                    else:
                        pending[s] += dx
                if buf is not None and not any(b is buf for b in backing):
                    self._pool.setdefault(buf.shape, []).append(buf)  # its last reader is done
        for buf in backing:  # only the input's gradient can still hold one
            if buf is not None:
                self._pool.setdefault(buf.shape, []).append(buf)
        return pending[-1]

    def _take(self, shape) -> np.ndarray:
        """A gradient-sum buffer of `shape` from the pool (or a new one)."""
        free = self._pool.get(tuple(shape))
        return free.pop() if free else np.empty(shape, self.dtype)

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


def _alone(dx, dxs, pending) -> bool:
    """Whether dx shares memory with no other gradient of its step (an add hands its dy to
    every input) and none still pending: then a sum may start in it, in place."""
    return (not any(d is not dx and d is not None and np.may_share_memory(d, dx) for d in dxs)
            and sum(d is dx for d in dxs) == 1
            and not any(p is not None and np.may_share_memory(p, dx) for p in pending))


def compile(spec, dtype="float32", options: PlanOptions | None = None,
            state: dict | None = None) -> Plan:
    """Build a Plan for a validated NetSpec, initialised from the spec's seed, with `options`
    (default PlanOptions(): one process) resolved for this machine and the spec's batch size.
    With `state` (every parameter and buffer by name, e.g. an imported model's) nothing is
    drawn: the plan starts from it (CheckpointError if a name or shape differs).

    A network whose parameters do not fit in memory is a SpecError that says how big it is.
    """
    options = resolve(options, spec.infos, spec.train.batch_size)
    try:
        return Plan(spec.infos, dtype, np.random.default_rng(spec.seed), spec.defaults.init,
                    spec.seed, options, state)
    except (MemoryError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOMEM:
            raise
        n = sum(info.params for info in spec.infos)
        size = 2 * n * np.dtype(dtype).itemsize  # parameters and their gradients
        biggest = max(spec.infos, key=lambda info: info.params)
        raise SpecError([spec.source.problem(("layers", biggest.index), (
            f"out of memory: the network's {n:,} parameters need {size / 2**30:,.1f} GiB "
            f"(values and gradients, {np.dtype(dtype).name}) and this machine could not "
            f"allocate them; the largest layer is '{biggest.name}' with {biggest.params:,}; "
            "use smaller layers"))]) from None


def layer_plan(layer: Layer, in_shape, dtype="float64", seed: int = 0,
               name: str | None = None, options: PlanOptions | None = None) -> Plan:
    """A one-layer Plan (used to check a layer in isolation); its step is called `name`.

    The layer reads the plan's input (a multi-input layer names it in its own `inputs`, e.g.
    [input, input]); a single-input layer's `inputs` are ignored.
    """
    if not layer.multi_input and layer.inputs is not None:
        layer = layer.model_copy(update={"inputs": None})
    (info,) = infer(tuple(in_shape), [layer])
    info = replace(info, name=name or layer.name or layer.type)
    return Plan([info], dtype, np.random.default_rng(seed), seed=seed, options=options)
