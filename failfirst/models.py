"""Model adapters: anything a user has -> a `Classifier` giving class probabilities.

`load_model` accepts a torch module, a TorchScript file, a `torch.export` program file, a
Python file defining `predict_proba(X)`, an object with `predict_proba` (scikit-learn), a plain callable or an
existing `Classifier`. Loading a Python file executes its code: only load files you trust.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import pickle
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TypeVar, Union

import numpy as np
import torch

from failfirst.errors import InputError, ModelError, unknown_name

Outputs = Literal["auto", "probabilities", "logits"]
DeviceLike = Union[str, torch.device]
ModelSpec = Union["Classifier", torch.nn.Module, str, os.PathLike, Callable[..., Any], Any]
A = TypeVar("A", np.ndarray, torch.Tensor)

OUTPUT_MODES: tuple[str, ...] = ("auto", "probabilities", "logits")
TORCHSCRIPT_SUFFIXES: tuple[str, ...] = (".pt", ".pth")
EXPORTED_SUFFIXES: tuple[str, ...] = (".pt2",)
PYTHON_SUFFIXES: tuple[str, ...] = (".py",)
SUPPORTED_SUFFIXES: tuple[str, ...] = TORCHSCRIPT_SUFFIXES + EXPORTED_SUFFIXES + PYTHON_SUFFIXES

# Rows of probabilities sum to 1 up to float32 rounding over many classes.
SUM_TOLERANCE = 1e-3
# A fixed protocol keeps pickle-based fingerprints equal across Python versions.
_FINGERPRINT_PROTOCOL = 4


def load_model(spec: ModelSpec, device: DeviceLike = "auto", outputs: Outputs = "auto") -> Classifier:
    """Turn whatever the user has into a `Classifier`.

    A `.py` file is executed to find its `predict_proba(X)`: only load files you trust.
    A torch module is switched to eval mode and moved to `device` in place.

    Args:
        spec: a `torch.nn.Module`; a path (str or Path) to a TorchScript file (`.pt`/`.pth`,
            saved with `torch.jit.save`), to a `torch.export` program (`.pt2`, saved with
            `torch.export.save`) or to a Python file defining `predict_proba(X)`;
            an object with `predict_proba` (a scikit-learn classifier); a callable returning
            probabilities or logits; or a `Classifier` (returned as is, or moved to an
            explicitly requested device).
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1" or a
            `torch.device`. Only torch models move; the others run where their code runs.
        outputs: "probabilities", "logits" (softmaxed), or "auto" to decide on the first
            call (negative values or rows not summing to 1 mean logits).

    Returns:
        A classifier with `predict_proba(x) -> (N, K)` and `predict(x) -> (N,)`.

    Raises:
        ModelError: the file is missing, of an unsupported kind or does not load, or the
            object cannot serve as a classifier.
    """
    outputs = _check_outputs(outputs)
    if isinstance(spec, Classifier):
        clf = spec if device == "auto" else spec.to(device)
        if outputs != "auto" and outputs != clf.outputs:
            clf = copy.copy(clf)
            clf.outputs = outputs
        return clf
    if isinstance(spec, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        with _quiet_jit_deprecation():
            torch.jit.save(spec, buffer)
        name = getattr(spec, "original_name", type(spec).__name__)
        return TorchScriptClassifier(buffer.getvalue(), f"TorchScript module {name}", device, outputs)
    if isinstance(spec, torch.export.ExportedProgram):
        buffer = io.BytesIO()
        torch.export.save(spec, buffer)
        return ExportedProgramClassifier(buffer.getvalue(), "exported program", device, outputs)
    if isinstance(spec, torch.nn.Module):
        return TorchModuleClassifier(spec, device, outputs)
    if isinstance(spec, (str, os.PathLike)):
        return _load_file(spec, device, outputs)
    if callable(getattr(spec, "predict_proba", None)):
        return CallableClassifier(spec, outputs, method="predict_proba")
    if callable(spec):
        return CallableClassifier(spec, outputs)
    raise ModelError(
        f"cannot use a {type(spec).__name__} as a model; expected a torch.nn.Module, an exported program, a path to a "
        f"{', '.join(SUPPORTED_SUFFIXES)} file, an object with predict_proba, or a callable"
    )


class Classifier:
    """A model that maps a batch to class probabilities, the same way in every process.

    Numpy in -> numpy out; torch in -> torch out on the input's device. The model sees the
    batch in the layout the user gave; nothing is transposed. Every classifier pickles
    (with `pickle` and `cloudpickle`) so distributed workers can rebuild it.

    Attributes:
        description: short human description, e.g. "torch module SmallCNN".
        device: where the model computes (cpu for non-torch models).
        outputs: "auto" until the first call decides, then "probabilities" or "logits".
        num_classes: K once `probe` or a call has seen the output, else None.
    """

    description: str
    device: torch.device
    outputs: Outputs
    num_classes: int | None

    def __init__(self, description: str, device: torch.device, outputs: Outputs):
        self.description = description
        self.device = device
        self.outputs = _check_outputs(outputs)
        self.num_classes = None
        self._fingerprint: str | None = None

    # -- what subclasses provide ------------------------------------------------------------

    def _scores(self, x: A) -> A:
        """Raw model output for a batch, as the same kind of array as `x`."""
        raise NotImplementedError

    def _compute_fingerprint(self) -> str:
        raise NotImplementedError

    def to(self, device: DeviceLike) -> Classifier:
        """Move the model to `device` and return the classifier (self, for non-torch models)."""
        return self

    # -- the contract -----------------------------------------------------------------------

    def predict_proba(self, x: A) -> A:
        """Class probabilities for a batch.

        Args:
            x: a batch in the layout the model expects (numpy array or torch tensor).

        Returns:
            Probabilities: numpy for numpy input, torch on `x`'s device for torch input.

        Shape:
            x (N, ...) -> (N, K).
        """
        scores = self._checked_scores(x)
        if self.outputs == "auto":
            self._decide(scores)
        return _softmax(scores) if self.outputs == "logits" else scores

    def predict(self, x: A) -> A:
        """Predicted labels: the column index of the highest probability.

        Labels come from `predict_proba` (a Python file's own `predict` is not used), so
        predictions and confidences always agree.

        Shape:
            x (N, ...) -> (N,) integer labels.
        """
        proba = self.predict_proba(x)
        if isinstance(proba, torch.Tensor):
            return proba.argmax(dim=1)
        return proba.argmax(axis=1)

    def probe(self, x: A, n: int = 2) -> int:
        """Run the model on the first `n` samples, check its output and learn K.

        Sets `num_classes`, decides `outputs` if it was "auto", and returns K.

        Raises:
            ModelError: the model fails on the samples, or its output is not a finite
                (n, K) array with K >= 2.
        """
        sample = (x if isinstance(x, torch.Tensor) else np.asarray(x))[:n]
        if len(sample) == 0:
            raise ModelError(f"cannot probe {self.description} on an empty batch; expected at least one sample")
        try:
            scores = self._scores(sample)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"{self.description} failed on {len(sample)} samples of shape "
                f"{tuple(sample.shape)}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        scores = self._checked_scores(sample, scores)
        finite = torch.isfinite(scores).all() if isinstance(scores, torch.Tensor) else np.isfinite(scores).all()
        if not bool(finite):
            raise ModelError(
                f"{self.description} returned NaN or inf on {len(sample)} samples; expected finite class scores"
            )
        if self.outputs == "auto":
            self._decide(scores)
        self._check_classes()
        return int(self.num_classes)

    @property
    def fingerprint(self) -> str:
        """A sha256 hex digest identifying the model, equal across processes and machines.

        Computed once, on first access.
        """
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description} on {self.device}, outputs={self.outputs}>"

    # -- helpers ----------------------------------------------------------------------------

    def _checked_scores(self, x, scores=None):
        """Scores for `x` (computed unless given), refused unless they are (N, K) with K >= 2."""
        if scores is None:
            scores = self._scores(x)
        n = len(x)
        shape = tuple(scores.shape)
        if len(shape) != 2 or shape[0] != n or shape[1] < 2:
            raise ModelError(
                f"{self.description} returned shape {shape} for {n} samples; "
                f"expected ({n}, K) class scores with K >= 2"
            )
        if self.num_classes is None:
            self.num_classes = shape[1]
        elif shape[1] != self.num_classes:
            raise ModelError(
                f"{self.description} returned {shape[1]} classes; expected {self.num_classes} as before"
            )
        return scores

    def _decide(self, scores) -> None:
        """Settle "auto" once: remembered so every later batch is treated the same."""
        if _looks_like_logits(scores):
            self.outputs = "logits"
            warnings.warn(
                f"{self.description} returned negative values or rows not summing to 1; treating "
                "them as logits and applying softmax (pass outputs='logits' or 'probabilities' "
                "to say so explicitly)",
                stacklevel=3,
            )
        else:
            self.outputs = "probabilities"

    def _check_classes(self) -> None:
        """Hook: warn when columns are not labels 0..K-1 (scikit-learn's `classes_`)."""


class TorchModuleClassifier(Classifier):
    """A `torch.nn.Module` run in eval mode under `torch.inference_mode()` on `device`."""

    def __init__(self, module: torch.nn.Module, device: DeviceLike = "auto", outputs: Outputs = "auto",
                 description: str | None = None):
        self._device_request = device
        super().__init__(description or f"torch module {type(module).__name__}", resolve_device(device), outputs)
        if module.training:
            warnings.warn(
                f"{self.description} was in training mode; switched it to eval mode so dropout and "
                "batch norm behave as at test time",
                stacklevel=3,
            )
        self.module = module.eval().to(self.device)
        self._dtype = _float_dtype(module)

    def to(self, device: DeviceLike) -> Classifier:
        """Move the module to `device` (in place) and return self."""
        self.device = resolve_device(device)
        self._device_request = device
        self.module.to(self.device)
        return self

    def _scores(self, x):
        if isinstance(x, torch.Tensor):
            out = self._forward(x)
            return out.to(x.device)
        array = np.asarray(x)
        if not array.flags.writeable:  # zarr and memmaps hand out read-only views
            array = array.copy()
        out = self._forward(torch.from_numpy(array))
        if out.dtype == torch.bfloat16:  # numpy has no bfloat16
            out = out.float()
        return out.cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        # Integer inputs (token ids, class indices) stay integers; floats match the weights.
        if x.is_floating_point() and x.dtype != self._dtype:
            x = x.to(self._dtype)
        with torch.inference_mode():
            out = self.module(x)
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"{self.description} returned a {type(out).__name__}; expected a tensor of shape (N, K)"
            )
        return out

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        cls = type(self.module)
        digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        for name, tensor in self.module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def __getstate__(self) -> dict:
        # torch.save with cloudpickle carries classes defined in __main__ or a notebook and
        # lets the receiving process map the weights onto its own device.
        import cloudpickle

        state = self.__dict__.copy()
        buffer = io.BytesIO()
        torch.save(self.module, buffer, pickle_module=cloudpickle)
        state["module"] = buffer.getvalue()
        state["device"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # "auto" is resolved again where the classifier lands (a CPU worker, a GPU worker).
        self.device = resolve_device(self._device_request)
        self.module = torch.load(io.BytesIO(state["module"]), map_location=self.device, weights_only=False)


class ProgramFileClassifier(TorchModuleClassifier):
    """A torch program kept as its file bytes: it pickles as the bytes and is rebuilt where it lands.

    Compiled programs (TorchScript, exported graphs) do not pickle, and their bytes are also
    the natural fingerprint.
    """

    _data: bytes

    def _program(self) -> torch.nn.Module:
        """The runnable module, loaded from `_data` on the CPU."""
        raise NotImplementedError

    def _compute_fingerprint(self) -> str:
        return hashlib.sha256(self._data).hexdigest()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["module"]
        state["device"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.device = resolve_device(self._device_request)
        self.module = self._program().to(self.device)


class TorchScriptClassifier(ProgramFileClassifier):
    """A TorchScript program (`.pt`/`.pth`)."""

    def __init__(self, data: bytes, description: str, device: DeviceLike = "auto", outputs: Outputs = "auto"):
        self._data = data
        super().__init__(_load_torchscript(data, description), device, outputs, description)

    def _program(self) -> torch.nn.Module:
        return _load_torchscript(self._data, self.description).eval()


class ExportedProgramClassifier(ProgramFileClassifier):
    """A `torch.export` program (`.pt2`).

    A program exported with a fixed batch size serves any batch: the rows go through in
    chunks of that size, the last one padded by repeating its final row (and the padding's
    outputs dropped). Inputs whose other dimensions differ from the exported ones are refused
    with the shape the program expects.
    """

    def __init__(self, data: bytes, description: str, device: DeviceLike = "auto", outputs: Outputs = "auto"):
        self._data = data
        self._device_request = device
        program = _load_exported(data, description)
        Classifier.__init__(self, description, resolve_device(device), outputs)
        # An exported graph is frozen in the mode it was exported in: no eval() to call.
        self.module = program.module().to(self.device)
        self._dtype = _float_dtype(self.module)
        self._input_shape = _exported_input_shape(program)

    def _program(self) -> torch.nn.Module:
        return _load_exported(self._data, self.description).module()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self._input_shape
        if expected is not None:
            fixed = [(i, size) for i, size in enumerate(expected) if isinstance(size, int) and i > 0]
            if len(x.shape) != len(expected) or any(x.shape[i] != size for i, size in fixed):
                shown = ", ".join(str(s) if isinstance(s, int) else "N" for s in expected)
                raise ModelError(f"{self.description} was exported for inputs of shape ({shown}); "
                                 f"got {tuple(x.shape)}")
        batch = expected[0] if expected is not None and isinstance(expected[0], int) else None
        if batch is None or len(x) == batch:
            return super()._forward(x)
        if len(x) == 0:
            return super()._forward(torch.zeros(batch, *x.shape[1:], dtype=x.dtype))[:0]
        chunks = []
        for start in range(0, len(x), batch):
            part = x[start:start + batch]
            rows = len(part)
            if rows < batch:
                part = torch.cat([part, part[-1:].expand(batch - rows, *part.shape[1:])])
            chunks.append(super()._forward(part)[:rows])
        return torch.cat(chunks)


class CallableClassifier(Classifier):
    """A non-torch model: an object's `predict_proba`, or a callable returning class scores.

    It is called with numpy arrays on the CPU; torch inputs are converted and the result
    is returned as a tensor on the input's device.
    """

    def __init__(self, model: Any, outputs: Outputs = "auto", method: str | None = None,
                 description: str | None = None):
        super().__init__(description or _describe(model, method), torch.device("cpu"), outputs)
        self.model = model
        self.method = method

    def _call(self, x: np.ndarray) -> np.ndarray:
        fn = getattr(self.model, self.method) if self.method else self.model
        out = fn(x)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        out = np.asarray(out)
        return out if np.issubdtype(out.dtype, np.floating) else out.astype(np.float64)

    def _scores(self, x):
        if isinstance(x, torch.Tensor):
            out = self._call(x.detach().cpu().numpy())
            return torch.from_numpy(out).to(x.device)
        return self._call(np.asarray(x))

    def _check_classes(self) -> None:
        classes = getattr(self.model, "classes_", None)
        if classes is not None and not np.array_equal(np.asarray(classes), np.arange(len(classes))):
            warnings.warn(
                f"{self.description} has classes_ {list(classes)[:10]}; failfirst labels are column "
                f"indices 0..{len(classes) - 1}, so dataset labels must be encoded that way",
                stacklevel=3,
            )

    def _compute_fingerprint(self) -> str:
        try:
            data = pickle.dumps(self.model, protocol=_FINGERPRINT_PROTOCOL)
        except Exception:  # lambdas, closures, classes defined in __main__
            import cloudpickle

            data = cloudpickle.dumps(self.model, protocol=_FINGERPRINT_PROTOCOL)
        return hashlib.sha256(data).hexdigest()

    def __getstate__(self) -> dict:
        import cloudpickle

        state = self.__dict__.copy()
        # Plain pickle cannot carry lambdas or functions from __main__; cloudpickle can.
        state["model"] = cloudpickle.dumps(self.model)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.model = pickle.loads(state["model"])


class PythonFileClassifier(CallableClassifier):
    """A Python file defining `predict_proba(X)`; its source travels and is re-executed.

    Loading (and unpickling) runs the file's code: only use files you trust.
    """

    def __init__(self, path: Path, source: bytes, outputs: Outputs = "auto"):
        self.path = str(path)
        self.source = source
        super().__init__(_exec_python_file(self.path, source), outputs, "predict_proba",
                         f"Python file {Path(path).name}")

    def _compute_fingerprint(self) -> str:
        return hashlib.sha256(self.source).hexdigest()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["model"]  # a module object; rebuilt from the source
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.model = _exec_python_file(self.path, self.source)


def resolve_device(device: DeviceLike) -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:1" or a `torch.device` into a usable `torch.device`.

    Raises:
        InputError: the name is not a device, or CUDA is requested but not available.
    """
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available here")
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} GPUs are visible")
        resolved = torch.device("cuda", index)
    return resolved


def _load_file(spec: str | os.PathLike, device: DeviceLike, outputs: Outputs) -> Classifier:
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(f"model file {str(spec)!r} not found")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ModelError(
            f"model file {str(spec)!r} has unsupported extension {suffix or '(none)'!r}; "
            f"expected one of: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise ModelError(f"model path {str(spec)!r} is not a file; expected a {suffix} file")
    data = path.read_bytes()
    if suffix in PYTHON_SUFFIXES:
        return PythonFileClassifier(path.resolve(), data, outputs)
    if suffix in EXPORTED_SUFFIXES:
        return ExportedProgramClassifier(data, f"exported program {path.name}", device, outputs)
    return TorchScriptClassifier(data, f"TorchScript file {path.name}", device, outputs)


def _load_exported(data: bytes, description: str) -> torch.export.ExportedProgram:
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelError(
            f"{description} is not a torch.export program ({type(exc).__name__}: {_first_line(exc)}); "
            "save models with torch.export.save(torch.export.export(model, (example,)), path)"
        ) from exc


def _exported_input_shape(program: torch.export.ExportedProgram) -> tuple[int | str, ...] | None:
    """The shape of the program's single tensor input: ints where fixed, "N" where dynamic.

    None when the program takes several inputs or its input carries no shape.
    """
    inputs = set(program.graph_signature.user_inputs)
    values = [node.meta.get("val") for node in program.graph.nodes
              if node.op == "placeholder" and node.name in inputs]
    if len(values) != 1 or not hasattr(values[0], "shape"):
        return None
    return tuple(size if isinstance(size, int) else "N" for size in values[0].shape)


def _load_torchscript(data: bytes, description: str) -> torch.jit.ScriptModule:
    # Load on the CPU first: a program saved from a GPU must load on a CPU-only machine.
    try:
        with _quiet_jit_deprecation():
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise ModelError(
            f"{description} is not a TorchScript program ({type(exc).__name__}: {_first_line(exc)}); "
            "save models with torch.jit.save(torch.jit.script(model), path), not torch.save"
        ) from exc


def _exec_python_file(path: str, source: bytes) -> types.ModuleType:
    """Execute a model file's source as a fresh module and check it defines `predict_proba`.

    This runs arbitrary code from the file.
    """
    name = Path(path).name
    module_name = f"_failfirst_model_{hashlib.sha256(source).hexdigest()[:16]}"
    module = types.ModuleType(module_name)
    module.__file__ = path  # so the file can find weights beside itself
    # Registered while it runs: dataclasses and pickling look a module up by name.
    sys.modules[module_name] = module
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(
            f"Python model file {name!r} raised {type(exc).__name__} on import: {_first_line(exc)}"
        ) from exc
    if not callable(getattr(module, "predict_proba", None)):
        raise ModelError(
            f"Python model file {name!r} defines no predict_proba function; "
            "expected predict_proba(X) returning (N, K) probabilities"
        )
    return module


def _describe(model: Any, method: str | None) -> str:
    cls = type(model)
    package = cls.__module__.split(".")[0]
    if method is None and isinstance(model, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"function {getattr(model, '__qualname__', getattr(model, '__name__', '?'))}"
    if package == "sklearn":
        return f"scikit-learn {cls.__name__}"
    if package in ("__main__", "builtins"):
        return f"{'object' if method else 'callable'} {cls.__name__}"
    return f"{package} {cls.__name__}"


def _check_outputs(outputs: str) -> Outputs:
    if outputs not in OUTPUT_MODES:
        raise unknown_name("outputs mode", outputs, OUTPUT_MODES)
    return outputs  # type: ignore[return-value]


def _float_dtype(module: torch.nn.Module) -> torch.dtype:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _looks_like_logits(scores) -> bool:
    if isinstance(scores, torch.Tensor):
        values = scores.detach().double()
        off = (values.sum(dim=1) - 1.0).abs() > SUM_TOLERANCE
        return bool((values < 0).any() or off.any())
    values = np.asarray(scores, dtype=np.float64)
    return bool((values < 0).any() or (np.abs(values.sum(axis=1) - 1.0) > SUM_TOLERANCE).any())


def _softmax(scores: A) -> A:
    if isinstance(scores, torch.Tensor):
        return torch.softmax(scores, dim=1)
    shifted = scores - scores.max(axis=1, keepdims=True)  # no overflow for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@contextlib.contextmanager
def _quiet_jit_deprecation() -> Iterator[None]:
    """Silence torch's TorchScript deprecation notice: the user chose the format, not us."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "(no message)"
