"""Tests for failfirst.models: every kind of model spec, outputs, devices, pickling, errors."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from failfirst.errors import InputError, ModelError
from failfirst.models import Classifier, load_model, resolve_device

# Tests build TorchScript fixtures; torch 2.13 flags torch.jit as deprecated on every use.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

RNG = np.random.default_rng(0)
X = RNG.random((6, 4)).astype(np.float32)

PY_MODEL = '''
"""A model file in the upload contract."""
import numpy as np

W = np.arange(12, dtype=np.float64).reshape(4, 3) / 10.0


def predict_proba(X):
    z = X @ W
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict(X):
    return predict_proba(X).argmax(axis=1)
'''


class TinyNet(torch.nn.Module):
    """Four features -> three logits; records what it was called with."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(4, 3)
        self.seen: list[tuple] = []

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.dtype, torch.is_inference_mode_enabled(), self.training))
        return self.linear(x)


class TupleNet(torch.nn.Module):
    def forward(self, x):
        return x, x


def _eval(module: torch.nn.Module) -> torch.nn.Module:
    return module.eval()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sequential(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()


@pytest.fixture
def script_path(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(_sequential()), path)
    return path


def _export(module: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool = True):
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    return torch.export.export(module, (example,), dynamic_shapes=shapes)


@pytest.fixture
def exported_path(tmp_path) -> Path:
    path = tmp_path / "model.pt2"
    torch.export.save(_export(_sequential(), torch.from_numpy(X[:2])), path)
    return path


@pytest.fixture
def py_path(tmp_path) -> Path:
    path = tmp_path / "m.py"
    path.write_text(PY_MODEL)
    return path


@pytest.fixture
def sklearn_model() -> LogisticRegression:
    y = np.array([0, 1, 2, 0, 1, 2])
    return LogisticRegression(max_iter=200).fit(X, y)


def _specs(script_path, py_path, sklearn_model, exported_path=None) -> dict:
    """One spec of every picklable kind, each giving 3 classes on X."""
    return {
        "module": _sequential(),
        "torchscript": script_path,
        **({"exported": exported_path} if exported_path else {}),
        "python": py_path,
        "sklearn": sklearn_model,
        "lambda": lambda x: x[:, :3] - 0.5,
    }


# -- every spec kind ------------------------------------------------------------------------


def test_torch_module_numpy_in_numpy_out():
    net = _eval(TinyNet())
    clf = load_model(net, device="cpu", outputs="logits")
    proba = clf.predict_proba(X.astype(np.float64))
    assert isinstance(proba, np.ndarray) and proba.shape == (6, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        expected = torch.softmax(net.linear(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    # float64 numpy became the weights' dtype; the forward ran in inference and eval mode.
    assert net.seen[-1] == ((6, 4), torch.float32, True, False)
    assert clf.description == "torch module TinyNet"
    assert clf.device == torch.device("cpu")
    labels = clf.predict(X)
    assert isinstance(labels, np.ndarray) and labels.shape == (6,)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))


def test_torch_module_torch_in_torch_out():
    clf = load_model(_eval(TinyNet()), device="cpu", outputs="logits")
    x = torch.from_numpy(X).double()
    proba = clf.predict_proba(x)
    assert isinstance(proba, torch.Tensor) and proba.device == x.device and proba.shape == (6, 3)
    np.testing.assert_allclose(proba.numpy(), clf.predict_proba(X), atol=1e-6)
    labels = clf.predict(x)
    assert isinstance(labels, torch.Tensor) and labels.shape == (6,)


def test_read_only_numpy_input_is_accepted_without_warning():
    clf = load_model(_eval(TinyNet()), device="cpu", outputs="logits")
    x = X.copy()
    x.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clf.predict_proba(x).shape == (6, 3)


def test_training_mode_warns_once_and_switches_to_eval():
    net = TinyNet().train()
    with pytest.warns(UserWarning, match="training mode") as record:
        clf = load_model(net, device="cpu", outputs="logits")
    assert len([w for w in record if "training mode" in str(w.message)]) == 1
    assert not net.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict_proba(X)
        load_model(_eval(TinyNet()), device="cpu", outputs="logits")


def test_torchscript_file_str_and_path(script_path):
    module = _sequential()
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    for spec in (script_path, str(script_path)):
        clf = load_model(spec, device="cpu", outputs="logits")
        np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-6)
        assert clf.description == "TorchScript file model.pt"


def test_script_module_object():
    clf = load_model(torch.jit.script(_sequential()), device="cpu", outputs="logits")
    assert clf.description.startswith("TorchScript module")
    assert clf.predict_proba(X).shape == (6, 3)


def test_exported_program_file_and_object(exported_path):
    module = _sequential()
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    clf = load_model(exported_path, device="cpu", outputs="logits")
    assert clf.description == "exported program model.pt2"
    np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-6)
    program = torch.export.load(exported_path)
    np.testing.assert_allclose(load_model(program, device="cpu", outputs="logits").predict_proba(X[:5]),
                               expected[:5], atol=1e-6)


def test_exported_program_with_a_fixed_batch_serves_any_batch(tmp_path):
    module = _sequential()
    path = tmp_path / "fixed.pt2"
    torch.export.save(_export(module, torch.from_numpy(X[:4]), dynamic_batch=False), path)
    clf = load_model(path, device="cpu", outputs="logits")
    x = np.concatenate([X, X[::-1], X[:1]])        # 13 rows: 4 + 4 + 4 + 1 padded
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(x), expected, atol=1e-6)
    assert clf.predict_proba(x[:0]).shape == (0, 3)
    assert clf.probe(x) == 3


def test_exported_program_refuses_inputs_of_another_shape(exported_path):
    clf = load_model(exported_path, device="cpu")
    with pytest.raises(ModelError, match=r"exported program model\.pt2 was exported for inputs of shape "
                                         r"\(N, 4\); got \(2, 5\)"):
        clf.probe(np.zeros((2, 5), np.float32))


def test_a_file_that_is_not_an_exported_program_is_refused(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="exported program model.pt2 is not a torch.export program.*torch.export.save"):
        load_model(path)


def test_python_file(py_path):
    clf = load_model(py_path)
    assert clf.description == "Python file m.py"
    z = X.astype(np.float64) @ (np.arange(12.0).reshape(4, 3) / 10.0)
    np.testing.assert_allclose(clf.predict_proba(X), _softmax(z), atol=1e-6)
    assert clf.outputs == "probabilities"
    x = torch.from_numpy(X)
    out = clf.predict_proba(x)
    assert isinstance(out, torch.Tensor) and out.device == x.device
    np.testing.assert_allclose(out.numpy(), _softmax(z), atol=1e-6)


def test_sklearn_classifier(sklearn_model):
    clf = load_model(sklearn_model, device="cpu")
    assert clf.description == "scikit-learn LogisticRegression"
    np.testing.assert_allclose(clf.predict_proba(X), sklearn_model.predict_proba(X))
    np.testing.assert_array_equal(clf.predict(X), sklearn_model.predict(X))
    assert clf.probe(X) == 3


def test_sklearn_classes_that_are_not_column_indices_warn_on_probe():
    model = LogisticRegression(max_iter=200).fit(X, np.array([3, 7, 3, 7, 3, 7]))
    with pytest.warns(UserWarning, match="column indices"):
        assert load_model(model).probe(X) == 2


def test_plain_callable_with_probabilities():
    def proba(x):
        return np.tile([0.2, 0.8], (len(x), 1))

    clf = load_model(proba)
    assert clf.description == "function test_plain_callable_with_probabilities.<locals>.proba"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(clf.predict_proba(X), proba(X))
    assert clf.outputs == "probabilities"
    np.testing.assert_array_equal(clf.predict(X), np.ones(6, dtype=int))


def test_existing_classifier_returned_as_is_or_moved():
    clf = load_model(_eval(TinyNet()), device="cpu")
    assert load_model(clf) is clf
    assert load_model(clf, device="cpu") is clf and clf.device == torch.device("cpu")
    forced = load_model(clf, outputs="logits")
    assert forced.outputs == "logits" and clf.outputs == "auto"


def test_unsupported_object_raises_model_error():
    with pytest.raises(ModelError, match="cannot use a int as a model; expected") as info:
        load_model(42)
    assert isinstance(info.value, ValueError)


# -- outputs: logits vs probabilities -------------------------------------------------------


def test_logits_detected_warned_once_and_decision_persists():
    calls = []

    def scores(x):
        calls.append(len(x))
        return x[:, :3] - 0.5 if len(calls) == 1 else np.tile([0.2, 0.3, 0.5], (len(x), 1))

    clf = load_model(scores)
    with pytest.warns(UserWarning, match="logits"):
        first = clf.predict_proba(X)
    assert clf.outputs == "logits"
    np.testing.assert_allclose(first, _softmax(X[:, :3] - 0.5))
    # The second batch looks like probabilities, but the first call decided: softmax again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = clf.predict_proba(X)
    np.testing.assert_allclose(second, _softmax(np.tile([0.2, 0.3, 0.5], (6, 1))))


def test_rows_not_summing_to_one_are_logits():
    clf = load_model(lambda x: np.tile([0.5, 0.9], (len(x), 1)))
    with pytest.warns(UserWarning, match="logits"):
        clf.probe(X)
    assert clf.outputs == "logits"


def test_explicit_outputs_are_not_second_guessed():
    logits = load_model(lambda x: np.tile([0.2, 0.8], (len(x), 1)), outputs="logits")
    np.testing.assert_allclose(logits.predict_proba(X), _softmax(np.tile([0.2, 0.8], (6, 1))))
    raw = load_model(lambda x: x[:, :3] - 0.5, outputs="probabilities")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(raw.predict_proba(X), X[:, :3] - 0.5)


def test_torch_logits_stay_on_torch():
    clf = load_model(_eval(TinyNet()), device="cpu")
    with pytest.warns(UserWarning, match="logits"):
        out = clf.predict_proba(torch.from_numpy(X))
    assert clf.outputs == "logits" and isinstance(out, torch.Tensor)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(6))


def test_unknown_outputs_mode_lists_choices():
    with pytest.raises(InputError, match="expected one of: auto, logits, probabilities"):
        load_model(_eval(TinyNet()), outputs="softmax")


# -- probe and layout -----------------------------------------------------------------------


def test_probe_sets_classes_decides_outputs_and_uses_few_samples():
    net = _eval(TinyNet())
    clf = load_model(net, device="cpu")
    assert clf.num_classes is None
    with pytest.warns(UserWarning, match="logits"):
        assert clf.probe(X) == 3
    assert clf.num_classes == 3 and clf.outputs == "logits"
    assert net.seen[-1][0] == (2, 4)


@pytest.mark.parametrize(
    "fn, found",
    [
        (lambda x: x[:, 0], "(2,)"),
        (lambda x: x[:, :1], "(2, 1)"),
        (lambda x: x[:1, :3], "(1, 3)"),
        (lambda x: x[:, :3, None], "(2, 3, 1)"),
    ],
)
def test_probe_refuses_outputs_that_are_not_n_by_k(fn, found):
    with pytest.raises(ModelError, match=r"returned shape \(.*\) for 2 samples; expected \(2, K\)") as info:
        load_model(fn).probe(X)
    assert found in str(info.value)


def test_probe_refuses_non_finite_outputs():
    with pytest.raises(ModelError, match="NaN or inf"):
        load_model(lambda x: np.full((len(x), 3), np.nan)).probe(X)


def test_probe_reports_a_model_that_fails_on_the_data():
    def broken(x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(ModelError, match=r"failed on 2 samples of shape \(2, 4\): RuntimeError: mat1"):
        load_model(broken).probe(X)


def test_torch_output_that_is_not_a_tensor_is_refused():
    with pytest.raises(ModelError, match="returned a tuple; expected a tensor"):
        load_model(TupleNet().eval(), device="cpu").probe(X)


def test_model_sees_the_layout_the_user_gave():
    seen = []

    def model(x):
        seen.append(x)
        return np.tile([0.5, 0.5], (len(x), 1))

    nhwc = RNG.random((3, 5, 4, 2)).astype(np.float32)
    load_model(model).predict_proba(nhwc)
    assert seen[0].shape == (3, 5, 4, 2)
    np.testing.assert_array_equal(seen[0], nhwc)


# -- devices --------------------------------------------------------------------------------


def test_device_cpu_and_to():
    net = _eval(TinyNet())
    clf = load_model(net, device=torch.device("cpu"))
    assert clf.device == torch.device("cpu")
    assert clf.to("cpu") is clf and next(net.parameters()).device == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))


def test_non_torch_models_report_cpu(sklearn_model):
    clf = load_model(sklearn_model)
    assert clf.device == torch.device("cpu") and clf.to("cpu") is clf


def test_bad_device_names_are_input_errors():
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        load_model(_eval(TinyNet()), device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_an_input_error():
    with pytest.raises(InputError, match="CUDA is not available"):
        load_model(_eval(TinyNet()), device="cuda")


# -- pickling -------------------------------------------------------------------------------


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("kind", ["module", "torchscript", "exported", "python", "sklearn", "lambda"])
def test_pickle_round_trip_gives_identical_outputs(kind, dumps, script_path, py_path, sklearn_model, exported_path):
    clf = load_model(_specs(script_path, py_path, sklearn_model, exported_path)[kind], device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the logits notice
        before = clf.predict_proba(X)
    restored = pickle.loads(dumps(clf))
    assert isinstance(restored, Classifier) and restored is not clf
    assert restored.outputs == clf.outputs != "auto"
    assert restored.num_classes == 3
    assert restored.description == clf.description
    assert restored.fingerprint == clf.fingerprint
    np.testing.assert_array_equal(restored.predict_proba(X), before)


def test_pickle_of_a_module_defined_in_this_file():
    clf = load_model(_eval(TinyNet()), device="cpu", outputs="logits")
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_unpickle_in_another_process_gives_identical_outputs(tmp_path, script_path, py_path, sklearn_model,
                                                             exported_path):
    specs = _specs(script_path, py_path, sklearn_model, exported_path)
    classifiers = {kind: load_model(spec, device="cpu") for kind, spec in specs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {kind: clf.predict_proba(X) for kind, clf in classifiers.items()}
    fingerprints = {kind: clf.fingerprint for kind, clf in classifiers.items()}
    (tmp_path / "bundle.pkl").write_bytes(cloudpickle.dumps((classifiers, X)))
    script = textwrap.dedent(
        """
        import pickle, sys
        import numpy as np
        classifiers, x = pickle.loads(open(sys.argv[1], "rb").read())
        out = {k: (c.predict_proba(x), c.fingerprint) for k, c in classifiers.items()}
        # Fingerprints of freshly loaded models too, not just the carried cache.
        from failfirst.models import load_model
        out["fresh"] = {k: load_model(c, outputs=c.outputs).fingerprint for k, c in classifiers.items()}
        for c in classifiers.values():
            c._fingerprint = None
        out["recomputed"] = {k: c.fingerprint for k, c in classifiers.items()}
        open(sys.argv[2], "wb").write(pickle.dumps(out))
        """
    )
    result = tmp_path / "out.pkl"
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "bundle.pkl"), str(result)],
                   check=True, cwd=Path(__file__).parents[1], capture_output=True, timeout=120)
    out = pickle.loads(result.read_bytes())
    for kind in specs:
        proba, fingerprint = out[kind]
        np.testing.assert_array_equal(proba, expected[kind])
        assert fingerprint == fingerprints[kind]
        assert out["recomputed"][kind] == fingerprints[kind]


# -- fingerprints ---------------------------------------------------------------------------


def test_fingerprint_stable_across_loads_and_sensitive_to_weights(script_path, py_path, sklearn_model, tmp_path):
    def fp(spec):
        return load_model(spec, device="cpu").fingerprint

    assert len(fp(script_path)) == 64 and int(fp(script_path), 16) >= 0
    assert fp(script_path) == fp(str(script_path))
    assert fp(_sequential(0)) == fp(_sequential(0)) == fp(copy.deepcopy(_sequential(0)))
    assert fp(_sequential(0)) != fp(_sequential(1))
    assert fp(_eval(TinyNet(0))) != fp(_sequential(0))  # same weights shape, other class
    other_script = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(_sequential(1)), other_script)
    assert fp(other_script) != fp(script_path)
    assert fp(py_path) == fp(py_path)
    other_py = tmp_path / "other.py"
    other_py.write_text(PY_MODEL.replace("/ 10.0", "/ 20.0"))
    assert fp(other_py) != fp(py_path)
    assert fp(sklearn_model) == fp(copy.deepcopy(sklearn_model))
    refit = LogisticRegression(max_iter=200, C=0.01).fit(X, np.array([0, 1, 2, 0, 1, 2]))
    assert fp(refit) != fp(sklearn_model)


# -- errors ---------------------------------------------------------------------------------


def test_missing_file():
    with pytest.raises(ModelError, match=r"^model file 'x\.pt' not found$"):
        load_model("x.pt")


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0")
    with pytest.raises(ModelError, match=r"unsupported extension '\.onnx'; expected one of: \.pt, \.pth, \.pt2, \.py"):
        load_model(path)


def test_python_file_without_predict_proba(tmp_path):
    path = tmp_path / "nothing.py"
    path.write_text("def predict(X):\n    return X[:, 0]\n")
    with pytest.raises(ModelError, match="'nothing.py' defines no predict_proba function"):
        load_model(path)


def test_python_file_that_raises_on_import(tmp_path):
    path = tmp_path / "boom.py"
    path.write_text("raise ImportError('no module named magic')\n")
    with pytest.raises(ModelError, match="'boom.py' raised ImportError on import: no module named magic"):
        load_model(path)


def test_state_dict_saved_with_torch_save_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_sequential().state_dict(), path)
    with pytest.raises(ModelError, match="TorchScript file weights.pth is not a TorchScript program.*torch.jit.save"):
        load_model(path)
