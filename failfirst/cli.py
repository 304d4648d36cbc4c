"""The command line: `failfirst run`, `report`, `serve` and `list`, a thin layer over the API."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from failfirst import __version__
from failfirst.errors import FailFirstError, InputError, StoreError

BUILTIN_MODELS = {"vision": "digits", "timeseries": "synthetic"}  # model -> default dataset
STORE_NAME = "results.zarr"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failfirst", description="Stress-test a trained classifier and see how it fails.")
    parser.add_argument("--version", action="version", version=f"failfirst {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="sweep perturbations x severities over a model and write the report",
        description="Sweep perturbations x severities over a model and data. With no "
                    "arguments: a small CNN trained on scikit-learn's digits.")
    run.add_argument("--model", default="vision",
                     help="'vision' (demo CNN), 'timeseries' (demo 1-D CNN), or a path to a "
                          "TorchScript .pt/.pth, torch.export .pt2 or a Python .py model file (default: vision)")
    run.add_argument("--dataset", default=None,
                     help="'digits', 'cifar10', 'synthetic', or a path to .npz (X, y, optional "
                          "classes) or the older .npy dict (default: digits for vision, "
                          "synthetic for timeseries)")
    run.add_argument("--num-samples", type=int, default=500,
                     help="samples to sweep, a seeded stratified subset (0 = all; default 500)")
    run.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    run.add_argument("--output-dir", type=Path, default=None,
                     help="where results go (default results/<model>)")
    run.add_argument("--perturbations", default=None,
                     help="comma-separated perturbation or family names (default: all of the "
                          "data's domain; see `failfirst list`)")
    run.add_argument("--severities", default="11",
                     help="K evenly spaced levels from 0 to 1, or a list like 0,0.25,1 (default 11)")
    run.add_argument("--batch-size", type=int, default=256, help="samples per task (default 256)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--workers", type=int, default=None,
                     help="local Dask worker processes (default: one per core, at most 4, one "
                          "per GPU with --device cuda; 0 = in-process threads, no cluster)")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="address of an existing Dask scheduler (nothing local is started)")
    run.add_argument("--resume", action="store_true",
                     help="finish an interrupted run in the output directory")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="folder holding downloaded datasets such as cifar-10-batches-py/")
    run.add_argument("--layout", choices=["NCHW", "NHWC"], default=None,
                     help="layout of image data (default: inferred, NCHW when unclear)")
    run.add_argument("--allow-pickle", action="store_true",
                     help="allow loading the .npy dict format, which runs pickle: trusted files only")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="show tracebacks and Dask logs")

    report = commands.add_parser("report", help="re-render the outputs from a run store alone")
    report.add_argument("run_dir", type=Path, help=f"an output directory (holding {STORE_NAME}) or a store")
    report.add_argument("-o", "--output", type=Path, default=Path("site"),
                        help="folder for the report site (default ./site)")
    report.add_argument("--debug", action="store_true", help="show tracebacks")

    serve = commands.add_parser("serve", help="serve a report site on 127.0.0.1")
    serve.add_argument("site_dir", type=Path, nargs="?", default=Path("site"))
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    serve.add_argument("--debug", action="store_true", help="show tracebacks")

    listing = commands.add_parser("list", help="list perturbations, datasets and metrics")
    listing.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `failfirst` alone: the demo, as `failfirst run` would
        args = parser.parse_args(["run", *(argv or [])])
    _quiet(args.debug)
    try:
        return {"run": cmd_run, "report": cmd_report, "serve": cmd_serve,
                "list": cmd_list}[args.command](args)
    except FailFirstError as exc:
        if args.debug:
            raise
        print(f"failfirst: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("failfirst: interrupted; what was written stays (`failfirst run ... --resume` "
              "finishes a sweep)", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if args.debug:
            raise
        print(f"failfirst: error: {type(exc).__name__}: {exc} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


def _quiet(debug: bool) -> None:
    """One-line notes instead of warning tracebacks; Dask's logs only with --debug."""
    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"failfirst: note: {message}", file=file or sys.stderr)

    if not debug:
        warnings.showwarning = one_line
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        for name in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)


# -- run ------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from failfirst import engine, report, store
    from failfirst.datasets import load_dataset

    dataset_spec = args.dataset or BUILTIN_MODELS.get(args.model)
    if dataset_spec is None:
        raise InputError(f"--dataset is required with a model file ({args.model}); expected "
                         "digits, cifar10, synthetic or a path to .npz/.npy data")
    if args.num_samples < 0:
        raise InputError(f"--num-samples must be 0 (all) or more, got {args.num_samples}")
    out = args.output_dir or Path("results") / _model_name(args.model)
    if store.exists(out / STORE_NAME) and not args.resume:  # refuse before training or loading
        raise StoreError(f"output directory {str(out)!r} already holds a run ({STORE_NAME}); "
                         "pass --resume to finish it, or choose another --output-dir")
    severities = _severities(args.severities)
    data = load_dataset(dataset_spec, num_samples=args.num_samples or None, seed=args.seed,
                        data_dir=args.data_dir, layout=args.layout, allow_pickle=args.allow_pickle)
    names = _perturbations(args.perturbations, data.domain)
    model = _model(args, data)
    print(f"failfirst {__version__}: {data.description}")
    print(f"model: {model.description}")
    with _client(args) as client:
        ds = engine.stress_test(
            model, data.X, data.y, perturbations=names, severities=severities, seed=args.seed,
            batch_size=args.batch_size, client=client, store=out / STORE_NAME,
            resume=args.resume, progress=not args.no_progress, device=args.device,
            layout=data.layout if data.domain == "vision" else None, classes=data.classes,
            sample_ids=data.sample_ids, data_description=data.description)
    report.write_exports(ds, out)
    index = report.render_site(out / STORE_NAME, out / "site")
    print()
    print(summary_table(ds))
    print()
    print(f"results: {out / STORE_NAME} (xarray on Zarr), stress_results.json/.csv, "
          "*.png and worst_failures.json in " + str(out))
    print(f"report:  {index}")
    print(f"next:    failfirst serve {out / 'site'}   # or open the file above in a browser")
    return 0


def _model(args, data):
    from failfirst.models import load_model

    if args.model in BUILTIN_MODELS:
        from failfirst.demo import demo_model_path

        if data.domain != args.model:
            raise InputError(f"--model {args.model} needs {args.model} data, but "
                             f"{data.name} is {data.domain} data")
        path = demo_model_path(args.model, data.name, seed=args.seed,
                               progress=not args.no_progress, data_dir=args.data_dir)
        return load_model(path, device="cpu", outputs="logits")
    return load_model(args.model, device="cpu")


def _model_name(model: str) -> str:
    return model if model in BUILTIN_MODELS else Path(model).stem


def _perturbations(text: str | None, domain: str) -> list[str] | None:
    """Names from `a,b`; a family name (noise, weather, ...) stands for all of its members.

    A perturbation's own name wins where a family shares it (`blur` is both).
    """
    if not text:
        return None
    from failfirst.perturbations import get, names
    from failfirst.validate import check_perturbations

    chosen: list[str] = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        family = [n for n in names(domain) if get(n).family == token]
        chosen.extend([token] if token in names() or not family else family)
    return list(check_perturbations(chosen, domain))


def _severities(text: str) -> int | list[float]:
    from failfirst.validate import check_severities

    try:
        levels = int(text) if "," not in text and "." not in text else \
            [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--severities expects a count like 11 or levels like 0,0.25,1; "
                         f"got {text!r}") from None
    check_severities(levels)  # refuse now, before data and model are loaded
    return levels


@contextlib.contextmanager
def _client(args):
    """An existing cluster (--scheduler), a local one, or none (--workers 0)."""
    from distributed import Client

    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"could not reach a Dask scheduler at {args.scheduler}: {exc}") from None
        with client:
            print(f"dask: using the cluster at {args.scheduler} "
                  f"({len(client.scheduler_info()['workers'])} workers), dashboard "
                  f"{client.dashboard_link}")
            yield client
        return
    if args.workers == 0:
        yield None
        return
    cluster = _local_cluster(args.device, args.workers)
    with cluster, Client(cluster) as client:
        print(f"dask: {len(cluster.workers)} local workers, dashboard {client.dashboard_link}")
        yield client


def _local_cluster(device: str, workers: int | None):
    """One worker per GPU (dask-cuda) for CUDA devices, else single-threaded CPU workers."""
    from failfirst.models import resolve_device

    if resolve_device(device).type == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            warnings.warn("dask-cuda is not installed (pip install 'failfirst[gpu]'); "
                          "using one local worker on the GPU")
        else:
            return LocalCUDACluster(dashboard_address="127.0.0.1:0")
        workers = 1
    from distributed import LocalCluster

    n = workers or max(1, min(os.cpu_count() or 1, 4))
    return LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0")


def summary_table(ds) -> str:
    """Per perturbation: clean accuracy, accuracy at the harshest level, slope, worst ECE."""
    rows = [("perturbation", "clean acc", "harshest acc", "slope", "worst ECE")]
    for name in ds.perturbation.values:
        cell = ds.sel(perturbation=name)
        rows.append((str(name), f"{float(cell.accuracy[0]):.3f}", f"{float(cell.accuracy[-1]):.3f}",
                     f"{float(cell.degradation_slope):+.3f}", f"{float(cell.ece.max()):.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


# -- report, serve, list ----------------------------------------------------------------------

def cmd_report(args) -> int:
    from failfirst import report, store

    path = args.run_dir / STORE_NAME if (args.run_dir / STORE_NAME).exists() else args.run_dir
    ds = store.open_results(path)
    if "finished" not in ds.attrs or "accuracy" not in ds:
        done = store.done_marks(path)
        raise InputError(f"run store {str(path)!r} is unfinished ({int(done.sum())} of "
                         f"{done.size} regions written); finish it with `failfirst run ... --resume`")
    exports = report.write_exports(ds, path.parent)
    index = report.render_site(path, args.output)
    print(f"outputs: {', '.join(p.name for p in exports)} in {path.parent}")
    print(f"report:  {index}")
    return 0


def cmd_serve(args) -> int:
    import functools
    import http.server

    if not (args.site_dir / "index.html").exists():
        raise InputError(f"no report site in {str(args.site_dir)!r}: expected index.html there "
                         "(write one with `failfirst run` or `failfirst report`)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(args.site_dir))
    handler.log_message = lambda *a, **k: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print(f"serving {args.site_dir} at http://127.0.0.1:{server.server_address[1]}/ "
              "(Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_list(args) -> int:
    from failfirst.datasets import dataset_names
    from failfirst.metrics import METRICS
    from failfirst.perturbations import get, names

    for domain in ("vision", "timeseries"):
        print(f"{domain} perturbations:")
        for name in names(domain):
            p = get(name)
            print(f"  {name:<24} {p.family:<10} {p.description}")
        print()
    print("datasets:")
    for name, description in dataset_names():
        print(f"  {name:<24} {description}")
    print("  PATH.npz                 arrays X, y and optional classes")
    print("  PATH.npy                 the older pickled dict {'X': ..., 'y': ...} (--allow-pickle)")
    print()
    print("metrics:")
    for name, info in METRICS.items():
        print(f"  {name:<24} {info.description}")
    return 0
