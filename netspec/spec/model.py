"""The spec language: the top-level `NetSpec` schema and loading.

`load(path)` reads YAML (see yamlio), applies `--set` overrides (see overrides), expands blocks
and resolves layer names (see blocks), validates with pydantic and runs shape inference (see
shapes), so a returned spec describes a network that can be built. Every problem is raised as one
SpecError listing `FILE:LINE:COL: key.path: message` entries.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import stat
import typing
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from netspec.data.known import NAMES
from netspec.errors import Problem, SpecError
from netspec.nn.init import InitSpec
from netspec.nn.layers import LAYERS
from netspec.nn.layers.base import DEFAULT_INIT
from netspec.nn.losses import CrossEntropy, Loss
from netspec.nn.optim import SGD, OptimizerSpec
from netspec.nn.schedules import Constant, Schedule
from netspec.plan.shapes import GraphError, channels_last_hint, fmt, infer, layer_names
from netspec.spec.blocks import expand
from netspec.spec.data import DataSpec, digest_view, resolve_paths, written_out
from netspec.spec.expanded import Expanded
from netspec.spec.overrides import apply_override
from netspec.spec.pydantic_errors import in_order, validation_problems
from netspec.spec.yamlio import Source, load_yaml

MAX_SPEC_BYTES = 1 << 20  # a spec is a few kB; a larger file is a mistake (or /dev/zero)
MAX_SPEC_NAME = 100  # characters: the name goes into file names (runs/<name>-<time>/)
# name -> (sample shape, classes), from the one table of known datasets (netspec/data/known.py)
KNOWN_DATASETS = {k: (v.image_shape, v.num_classes) for k, v in NAMES.items()}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(Strict):
    shape: tuple[PositiveInt, ...] = Field(
        description="Shape of one sample: [C, H, W] for images or [D] for flat vectors.")

    @field_validator("shape")
    @classmethod
    def _rank(cls, v):
        if len(v) not in (1, 3):
            raise ValueError(f"must be [C, H, W] or [D], got {list(v)}")
        return v


# A seed for numpy's SeedSequence (non-negative), kept within int64 for every consumer.
Seed = typing.Annotated[int, Field(ge=0, lt=2**63)]


class Defaults(Strict):
    init: InitSpec = Field(InitSpec(), description="Init schemes for layers that give none.")


class TrainSpec(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = Field(1000, description="Batch size for evaluation passes.")
    optimizer: OptimizerSpec = SGD()
    schedule: Schedule = Constant()

    @model_validator(mode="after")
    def _schedule_fits(self):
        self.schedule.check_length(self.epochs)  # e.g. a warmup as long as training
        return self


class GradcheckSpec(Strict):
    """Central differences in float64; pass when |a - n| <= atol + rtol * |n| for every entry."""

    batch_size: PositiveInt = 2
    eps: PositiveFloat = 1e-6
    atol: NonNegativeFloat = 1e-5
    rtol: NonNegativeFloat = 1e-3
    max_entries: PositiveInt = Field(
        24, description="Entries checked per tensor (a seeded sample when the tensor is larger).")
    seed: Seed = 0


def _layer_union():
    members = tuple(LAYERS.values())
    union = typing.Union[members]  # noqa: UP007 -- built from the registry at runtime
    return typing.Annotated[union, Field(discriminator="type")]


AnyLayer = _layer_union()


class NetSpec(Strict):
    """A whole network: input, layers, loss, data and training recipe."""

    name: str = Field("net", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", max_length=MAX_SPEC_NAME,
                      description=("Names the run and sweep folders (runs/<name>-<time>): "
                                   "letters, digits, _ . -, not starting with a dot; at most "
                                   f"{MAX_SPEC_NAME} characters."))
    seed: Seed = Field(0, description="Seeds init, the shuffles and the dropout masks.")
    input: InputSpec
    defaults: Defaults = Defaults()
    layers: list[AnyLayer] = Field(min_length=1)
    loss: Loss = CrossEntropy()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    gradcheck: GradcheckSpec = GradcheckSpec()

    _source: Source | None = PrivateAttr(None)
    _infos: list | None = PrivateAttr(None)

    @property
    def source(self) -> Source:
        return self._source or Source(self.model_dump(mode="json"))

    @property
    def infos(self):
        """Per-layer LayerInfo from shape inference (computed once); raises SpecError."""
        if self._infos is None:
            self._infos = _checked_infos(self)
        return self._infos

    def layer_names(self) -> list[str]:
        return layer_names(self.layers)

    def resolved(self) -> dict:
        """The spec with every default written out, as plain data: besides pydantic's field
        defaults, each layer's name (`<type><index>` when it has none), each layer's init
        schemes (its own, else defaults.init, else the built-ins) and defaults.init itself.
        It describes the same network (the same names, the same init draws), and resolving it
        again changes nothing. data.num_classes stays null for a known dataset (its own)."""
        data = self.model_dump(mode="json")
        defaults = data["defaults"]["init"]
        for key in ("weight", "bias"):
            if defaults.get(key) is None:
                defaults[key] = getattr(DEFAULT_INIT, key).model_dump(mode="json")
        for layer, info, model in zip(data["layers"], self.infos, self.layers):
            if layer.get("name") is None:
                layer["name"] = info.name
            if "init" in layer:
                own = layer["init"] or {}
                layer["init"] = {key: copy.deepcopy(own.get(key) or defaults[key])
                                 for key in ("weight", "bias")}
            layer.update(model.written_out())
        data["data"] = written_out(data["data"])  # optional data keys not given: left out
        return data

    def to_yaml(self) -> str:
        """The fully resolved spec (see `resolved`) as YAML."""
        return yaml.safe_dump(self.resolved(), sort_keys=False, default_flow_style=None,
                              width=100)

    def digest(self, exclude: tuple[str, ...] = ()) -> str:
        """SHA-256 of the resolved spec, minus dotted keys in `exclude` (e.g. 'train.epochs')."""
        data = self.resolved()
        data["data"] = digest_view(data["data"])  # keys added later count only when set
        for dotted in exclude:
            *parents, last = dotted.split(".")
            node = data
            for p in parents:
                node = node[p]
            node.pop(last, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- loading


def load(path: str | Path, overrides: typing.Iterable[str] = ()) -> NetSpec:
    """Read, validate and shape-check a spec file; raises SpecError.

    `overrides` are `key.path=value` strings (the CLI's `--set`), applied before validation.
    """
    path = Path(path)
    try:
        raw = _read_capped(path, MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([Problem(f"no such file: {path}")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(f"{path} is a directory; give a .yaml spec file")]) from None
    except OSError as e:
        raise SpecError([Problem(f"cannot read {path}: {e.strerror or e}")]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([Problem(f"{path} is larger than {MAX_SPEC_BYTES // 2**20} MiB (or "
                                 "endless, like a device): a spec is a short YAML text file; "
                                 "give the right file")])
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as e:
        before = raw[:e.start]
        line, col = before.count(b"\n") + 1, e.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError([Problem(f"not a UTF-8 text file: byte 0x{raw[e.start]:02x} cannot be "
                                 "decoded; save the spec as UTF-8 text", "", str(path), line,
                                 col)]) from None
    return loads(text, str(path), overrides, base_dir=path.parent)


def resolved_data(data: dict) -> dict:
    """The resolved form (NetSpec.resolved) of a spec stored as data, e.g. by a checkpoint made
    before specs were stored resolved; the data as it is when it no longer loads."""
    from netspec.errors import NetspecError

    try:
        return loads(yaml.safe_dump(data), "stored spec").resolved()
    except NetspecError:
        return dict(data)


def _read_capped(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path` (so /dev/zero cannot hang). Opened without blocking, so
    a named pipe nobody writes to reads as empty instead of waiting forever; a pipe with a
    writer (`netspec validate <(make-spec)`) is then read normally."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
        return f.read(limit) or b""


def loads(text: str, file: str | None = None, overrides: typing.Iterable[str] = (),
          base_dir: str | Path | None = None) -> NetSpec:
    """Like `load`, from YAML text (`file` names it in messages). A relative data path is
    resolved against `base_dir` (load: the spec's folder), or left as it is when None; one
    given by an override against the working directory."""
    src = load_yaml(text, file)
    if not isinstance(src.data, dict):
        what = {type(None): "an empty document", list: "a list", str: f"the text {src.data!r}"}
        got = what.get(type(src.data), f"the value {src.data!r}")
        raise SpecError([src.problem((), "a spec is a mapping with keys such as input, layers "
                                         f"and loss; the file holds {got}")])
    problems = []
    for item in overrides:
        try:
            apply_override(src, item)
        except SpecError as e:
            problems += e.problems
    if problems:
        raise SpecError(problems)
    resolve_paths(src, base_dir)
    src, wiring = expand(src)  # problems with blocks and names, reported with validation's
    try:
        spec = _validated(src.data)
    except ValidationError as e:
        problems = validation_problems(e, src, NetSpec)
        problems += [] if wiring else _shape_problems_despite(e, src)
        if isinstance(src, Expanded):
            problems = src.once(problems)
        said = {(p.file, p.line, p.col) for p in wiring}  # one problem per place
        problems = [p for p in problems if (p.file, p.line, p.col) not in said]
        raise SpecError(in_order(wiring + problems, src)) from None
    if wiring:
        raise SpecError(in_order(wiring, src))
    spec._source = src
    spec.infos  # noqa: B018 -- shape inference raises SpecError for impossible networks
    return spec


def _validated(data: dict) -> NetSpec:
    """Strict validation: no string, bool or float is taken for an int, no string for a float.

    It goes through JSON because strict JSON validation still reads lists as tuples (shape,
    kernel_size, betas), which strict Python validation refuses. The data is plain YAML values
    with string keys and finite floats, so the round trip is exact.
    """
    return NetSpec.model_validate_json(json.dumps(data), strict=True)


def _shape_problems_despite(err: ValidationError, src: Source) -> list[Problem]:
    """Shape-inference problems, when the validation errors lie only in sections that cannot
    change shapes (train, gradcheck, ...): those are independent and reported together."""
    locs = [e["loc"] for e in err.errors()]
    bad = {loc[0] for loc in locs if loc}
    if not all(locs) or bad & {"input", "layers", "data", "loss"}:
        return []
    try:
        spec = _validated({k: v for k, v in src.data.items() if k not in bad})
    except ValidationError:
        return []
    spec._source = src
    try:
        spec.infos  # noqa: B018
    except SpecError as e:
        return e.problems
    return []


def _checked_infos(spec: NetSpec) -> list:
    """Shape inference plus the checks that need the data section, as located Problems."""
    src = spec.source
    problems = []
    expected = KNOWN_DATASETS.get(spec.data.dataset, (None, None))[0]
    shape = tuple(spec.input.shape)
    hint = channels_last_hint(shape)
    if expected and (math.prod(shape) != math.prod(expected)
                     or (len(shape) == 3 and shape != tuple(expected))):
        problems.append(src.problem(("input", "shape"), (
            f"{spec.data.dataset} samples have shape {list(expected)}, so input.shape must be "
            f"{list(expected)} or [{math.prod(expected)}]; got {list(shape)}"
            + (f"; {hint}" if hint else ""))))
    labels = src.labels if isinstance(src, Expanded) and src.labels else None
    try:
        infos = infer(shape, spec.layers, labels)
    except GraphError as e:
        if hint and not problems:  # the likely culprit, before the layer it breaks
            problems.append(src.problem(("input", "shape"), hint))
        said = src.in_words if isinstance(src, Expanded) else str  # indices of the flat list
        problems += [src.problem(("layers", p.index, *p.key), said(p.message))
                     for p in e.problems]
        if isinstance(src, Expanded):
            problems = src.once(problems)
        ordered = in_order(problems, src)  # the input's problem first, even from --set
        first = [p for p in ordered if p.path == "input.shape"]
        raise SpecError(first + [p for p in ordered if p not in first]) from None
    problems += _softmax_before_cross_entropy(spec, infos)
    classes = spec.data.class_count
    out = infos[-1].out_shape
    if classes and out != (classes,):
        problems.append(_class_mismatch(spec, out, classes))
    if problems:
        raise SpecError(problems)
    return infos


PASS_THROUGH = ("flatten", "dropout")  # layers that keep probabilities probabilities


def _softmax_before_cross_entropy(spec, infos) -> list[Problem]:
    """A network whose output is softmax's (perhaps flattened) with loss cross_entropy, which
    applies a softmax of its own: it would train on softmax(softmax(z))."""
    if spec.loss.type != "cross_entropy":
        return []
    by_name = {info.name: info for info in infos}
    info = infos[-1]
    while info.type in PASS_THROUGH and info.inputs[0] in by_name:
        info = by_name[info.inputs[0]]
    if info.type != "softmax":
        return []
    return [spec.source.problem(("layers", info.index, "type"), (
        "the network ends in softmax, but cross_entropy applies softmax itself to the network's "
        "output, so training would see softmax(softmax(z)), whose gradients almost vanish; "
        "remove this layer (cross_entropy includes it, and predictions are the same), or keep "
        "it and set loss: {type: nll, input: probabilities}"))]


def _class_mismatch(spec, shape, classes) -> Problem:
    last = len(spec.layers) - 1
    what = f"{spec.data.dataset} has {classes} classes"
    layer = spec.layers[last]
    if len(shape) != 1:
        return spec.source.problem(("layers", last), (
            f"the network ends with shape {fmt(shape)}, but {spec.loss.type} needs one score "
            f"per class ({what}); end with {{type: flatten}} and "
            f"{{type: linear, out_features: {classes}}}"))
    if hasattr(layer, "out_features"):
        return spec.source.problem(("layers", last, "out_features"), (
            f"the last layer gives {shape[0]} outputs but {what}; set out_features: {classes}"))
    return spec.source.problem(("layers", last), (
        f"the network ends with {shape[0]} outputs but {what}; "
        f"add {{type: linear, out_features: {classes}}}"))

