"""The model object: a network with its spec, weights and input preprocessing, trained,
evaluated, asked and exported in a few calls (as Keras users expect `fit`, `predict` and
`load_model`).

    import netspec
    with netspec.Model("specs/lenet.yaml") as model:     # or netspec.load_model(RUN or CKPT)
        history = model.fit(out="runs/lenet")            # what `netspec train` does
        model.evaluate()                                 # {"loss": ..., "accuracy": ...}
        model.predict(["digit.png"], top_k=3)            # [Prediction(file, name, index, ...)]
        model.export("lenet.onnx")

`fit` is the training `netspec train` runs (the same Trainer, data checks, normalisation and
records); with `out` it also writes the run directory (spec.yaml, metrics.jsonl, checkpoints,
curves.png, report.html). `predict` takes file paths (and directories) or raw uint8 arrays and
applies the stored preprocessing: nothing is rebuilt by hand. The model owns the worker
processes its training starts; leave the `with` block (or call `close()`) to stop them.
Nothing here prints.
"""

from __future__ import annotations

from pathlib import Path

from netspec import checkpoint
from netspec.errors import CheckpointError, NetspecError


class Model:
    """A network and what it needs to be trained and used (see the module docstring)."""

    def __init__(self, spec, overrides=(), workers: int | str = "auto", data_dir=None):
        """`spec`: a NetSpec or the path of a spec file (`overrides` are `--set` strings for
        it). `workers`: processes that share each training batch (1, N or 'auto'). `data_dir`:
        where the dataset files are (as --data-dir)."""
        from netspec.spec.model import NetSpec, load

        self.spec = spec if isinstance(spec, NetSpec) else load(spec, list(overrides))
        self.workers = workers
        self.data_dir = data_dir
        self.history: list[dict] = []
        self.run_dir: Path | None = None
        self.warnings: list[str] = []  # what went wrong after training (a report, a plot)
        self._state: dict | None = None  # parameters and buffers, once trained or loaded
        self._meta: dict = {}  # normalisation and data record, as a checkpoint keeps them
        self._splits = None
        self._trainer = None
        self._predictor = None

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path, workers: int | str = "auto", data_dir=None) -> Model:
        """A spec file (untrained), a run directory (its best checkpoint, else its last) or a
        checkpoint file."""
        from netspec.train.inputs import stored_spec_object

        path = Path(path)
        if path.is_dir():
            found = [path / "checkpoints" / n for n in ("best.npz", "last.npz")
                     if (path / "checkpoints" / n).is_file()]
            if not found:
                raise CheckpointError(f"{path} holds no checkpoints/best.npz or last.npz; give "
                                      "a run directory that `netspec train` wrote")
            model = cls.load(found[0], workers, data_dir)
            model.run_dir = path
            return model
        if path.suffix.lower() != ".npz":
            return cls(path, workers=workers, data_dir=data_dir)
        ckpt = checkpoint.load(path)
        model = cls(stored_spec_object(ckpt, path), workers=workers, data_dir=data_dir)
        model._state = dict(ckpt.state)
        model._meta = {k: ckpt.meta[k] for k in ("normalize", "data") if k in ckpt.meta}
        model.history = list(ckpt.meta.get("history", []))
        return model

    @property
    def trained(self) -> bool:
        return self._state is not None

    @property
    def classes(self) -> list[str] | None:
        """The class names in output order, once known (from the spec, the data, the
        checkpoint)."""
        return self.spec.data.classes or (self._meta.get("data") or {}).get("classes")

    @property
    def normalization(self) -> dict | None:
        """How inputs are normalised: {"normalize", "mean", "std", "unit"} (training's)."""
        return self._meta.get("normalize")

    # ---------------------------------------------------------------- training

    def splits(self, data_dir=None, progress=None):
        """The spec's data, loaded, checked and prepared (kept for later calls)."""
        from netspec.train.inputs import load_splits, stored_norm, with_classes

        if self._splits is None or data_dir is not None:
            norm = stored_norm(self._meta, self.spec) if self._meta else None
            self._splits = load_splits(self.spec, data_dir or self.data_dir, progress,
                                       norm=norm)
            self.spec = with_classes(self.spec, self._splits.dataset)
        return self._splits

    def fit(self, data_dir=None, out=None, resume: bool = False, on_epoch=None, on_step=None,
            should_stop=None, progress=None) -> list[dict]:
        """Train as `netspec train` does and return the history (one record per epoch, as in
        metrics.jsonl). With `out`, write the run directory there (`resume`: continue the run
        in it). on_epoch(record), on_step(step, steps, loss, accuracy), should_stop() and
        progress(name, done, total) are as for Run.fit and data loading."""
        from netspec.plan.options import PlanOptions
        from netspec.train.inputs import data_record
        from netspec.train.run import Run
        from netspec.train.trainer import Trainer

        if self._meta:  # retraining: the data's own statistics, not the loaded model's
            self._meta, self._splits = {}, None
        splits = self.splits(data_dir, progress)
        self.close()
        options = PlanOptions(workers=self.workers)
        if out is not None:
            run = Run(self.spec, splits, Path(out), options=options)
            try:
                run.resume() if resume else run.start()
                self._trainer = run.trainer
                run.fit(on_step=on_step, on_epoch=on_epoch, should_stop=should_stop)
            except BaseException:
                run.close()
                raise
            finally:
                run.close_lock()  # the run directory is another process's to resume now
            self.history, self.run_dir = list(run.history), run.out
            self._write_figures(run)
        else:
            trainer = self._trainer = Trainer(self.spec, splits, options=options)
            self.history, self.run_dir = [], None
            for epoch in range(trainer.epoch, self.spec.train.epochs):
                stats = trainer.train_epoch(on_step, should_stop)
                if stats.stopped:
                    break
                record = trainer.epoch_record(epoch, stats)
                self.history.append(record)
                if on_epoch is not None:
                    on_epoch(record)
        self._state = {k: v.copy() for k, v in self._trainer.plan.state_dict().items()}
        self._meta = {"normalize": splits.record(), "data": data_record(splits)}
        self._predictor = None
        return self.history

    def _write_figures(self, run) -> None:
        from netspec.viz.plots import plot_run
        from netspec.viz.report import write_report

        try:
            plot_run(run)
            write_report(run.out, run.splits)
        except (NetspecError, OSError) as e:  # the run itself is complete and saved
            self.warnings.append(f"no report: {e}")

    def evaluate(self, split: str = "test", data_dir=None) -> dict:
        """{"loss", "accuracy", "samples"} of the trained weights on a split of the data."""
        from netspec.errors import DataError
        from netspec.train.trainer import Trainer

        self._need_weights("evaluate")
        splits = self.splits(data_dir)
        if split not in splits:
            raise DataError(f"no '{split}' split (available: {', '.join(splits)})")
        if self._trainer is None:
            from netspec.plan.options import PlanOptions

            self._trainer = Trainer(self.spec, splits, options=PlanOptions(workers=self.workers))
            self._trainer.plan.load_state_dict(self._state, "the model")
        self._trainer.start_workers()
        result = self._trainer.evaluate(*splits[split], split=split)
        return {"loss": result.loss, "accuracy": result.accuracy, "samples": len(splits[split][1])}

    # ---------------------------------------------------------------- using

    def predict(self, inputs, top_k: int = 1, resize: str | None = None) -> list:
        """Predictions (netspec.train.predict.Prediction: file, name, index, probability,
        top_k) for image files and directories, rows of CSV files (a table network), or an
        array of raw uint8 images ((N, H, W), (N, C, H, W) or (N, H, W, C)), preprocessed as
        the training data was."""
        return self.predictor(resize).predict(inputs, top_k)

    def predictor(self, resize: str | None = None):
        from netspec.train.predict import Predictor

        self._need_weights("predict")
        if self._predictor is None or resize is not None:
            predictor = Predictor(self.spec, self._state, self._meta, "the model", resize)
            if resize is not None:
                return predictor
            self._predictor = predictor
        return self._predictor

    def export(self, path, check: bool = False, data_dir=None):
        """Write the network as ONNX (with its normalisation and class names as metadata);
        `check` first verifies it with onnxruntime on the test split. Returns the path."""
        from netspec.interop.onnx_export import check_output, import_onnx, save, to_onnx
        from netspec.plan.compiler import compile

        import_onnx()
        check_output(path)
        plan = compile(self.spec, "float32")
        if self._state is not None:
            plan.load_state_dict(self._state, "the model")
        norm, data = self._meta.get("normalize"), self._meta.get("data")
        if norm is None and self.spec.data.normalize == "standardize" or check:
            splits = self.splits(data_dir)
            norm, data = norm or splits.record(), data or _record(splits)
        model = to_onnx(self.spec, plan, norm, source=str(self.run_dir or ""), data=data)
        if check:
            from netspec.errors import ExportError
            from netspec.interop.onnx_check import verify

            x, y = self.splits()["test"]
            report = verify(model, self.spec, plan, x, y)
            if not report.passed:
                raise ExportError(f"the ONNX model does not match netspec: {report.failures}; "
                                  f"{path} not written")
        return save(model, path)

    def save(self, path) -> Path:
        """Write the weights, spec and preprocessing as a checkpoint that `load` reads."""
        from netspec.version import __version__

        self._need_weights("save")
        return checkpoint.save(path, self._state, {}, {
            "netspec_version": __version__, "spec": self.spec.model_dump(mode="json"),
            "spec_sha256": self.spec.digest(), "history": self.history, **self._meta})

    def _need_weights(self, verb: str) -> None:
        if self._state is None:
            raise CheckpointError(f"the model is not trained: cannot {verb}; call fit() "
                                  "first, or load a run directory or checkpoint")

    # ---------------------------------------------------------------- processes

    def close(self) -> None:
        """Stop the worker processes of training and evaluation, if any."""
        if self._trainer is not None:
            self._trainer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "trained" if self.trained else "untrained"
        return f"<netspec.Model {self.spec.name!r}, {state}, {len(self.spec.infos)} layers>"


def _record(splits) -> dict:
    from netspec.train.inputs import data_record

    return data_record(splits)


def load_model(path, workers: int | str = "auto", data_dir=None) -> Model:
    """Model.load: a spec file, a run directory or a checkpoint."""
    return Model.load(path, workers, data_dir)
