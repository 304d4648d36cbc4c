"""Sweep throughput against the model's own plain batched inference, and peak memory.

Run: `python benchmarks/sweep.py` (or `make benchmark`). Writes benchmarks/sweep.md.

Throughput is measured side by side in one run on the same machine: the plain inference
rate of a small CNN on 32x32 images (batches of 256, no perturbation, no bookkeeping) is
the ceiling; a sweep's rate is (perturbations x severities x samples) / wall time. Peak
memory is measured in fresh subprocesses at 10k and 100k samples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import failfirst  # noqa: E402
from failfirst.perturbations import SampleRNG, from_canonical, get, to_canonical  # noqa: E402

PERTURBATIONS = ["gaussian_noise", "random_occlusion", "blur", "resolution_downsample"]
SEVERITIES = 11
BATCH = 256


def small_cnn() -> torch.nn.Module:
    """A small CNN of the kind people train on CIFAR-10 (about 0.1 M parameters)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(128, 10),
    ).eval()


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, n)


def plain_inference_rate(model, X, repeats: int) -> float:
    """Evaluations per second of the model alone on batches of BATCH, inputs already tensors.

    The best of one stream (torch using every core) and one stream per core, with torch's
    default threads and with one thread each (as the sweep's tasks run), so the ceiling is
    the model's own best on this machine.
    """
    batches = [torch.from_numpy(X[i:i + BATCH]) for i in range(0, len(X), BATCH)]

    def stream(n_repeats: int) -> None:
        with torch.inference_mode():
            for _ in range(n_repeats):
                for b in batches:
                    torch.softmax(model(b), dim=1)

    stream(1)  # warm-up
    start = time.perf_counter()
    stream(repeats)
    single = repeats * len(X) / (time.perf_counter() - start)
    cores = os.cpu_count() or 1
    rates = [single]
    default_threads = torch.get_num_threads()
    for threads in (default_threads, 1):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(stream, [max(1, repeats // cores)] * cores))
        rates.append(cores * max(1, repeats // cores) * len(X) / (time.perf_counter() - start))
    torch.set_num_threads(default_threads)
    return max(rates)


def sweep_rate(model, X, y, **kw) -> float:
    start = time.perf_counter()
    failfirst.stress_test(model, X, y, perturbations=PERTURBATIONS, severities=SEVERITIES,
                          batch_size=BATCH, **kw)
    return len(PERTURBATIONS) * SEVERITIES * len(X) / (time.perf_counter() - start)


def perturbation_share(X) -> dict[str, float]:
    """Seconds per batch spent drawing randomness and perturbing, per perturbation."""
    x = to_canonical(torch.from_numpy(X[:BATCH]), "vision")
    out = {}
    for name in PERTURBATIONS:
        p = get(name)
        start = time.perf_counter()
        rng = SampleRNG(42, name, np.arange(BATCH))
        for s in np.linspace(0, 1, SEVERITIES)[1:]:
            from_canonical(p.apply(x, float(s), rng), "vision", None, 4)
        out[name] = time.perf_counter() - start
    return out


MEMORY_SCRIPT = """
import resource, sys, tempfile, numpy as np, torch, failfirst
n = int(sys.argv[1])
X = np.random.default_rng(0).random((n, 3, 32, 32), dtype=np.float32)
y = np.zeros(n, dtype=np.int64)
net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 10))
with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports and one-time set-up
    failfirst.stress_test(net, X[:512], y[:512], perturbations=["gaussian_noise"], severities=3,
                          batch_size=256, store=tmp + "/warm.zarr")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as tmp:
    failfirst.stress_test(net, X, y, perturbations=["gaussian_noise"], severities=3,
                          batch_size=256, store=tmp + "/run.zarr")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before * 1024, peak * 1024, X.nbytes)
"""


def peak_memory(n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(n)], check=True,
                         capture_output=True, text=True).stdout.split()
    before, peak, inputs = (int(v) for v in out[-3:])
    return {"samples": n, "inputs_mb": inputs / 2**20, "rss_before_sweep_mb": before / 2**20,
            "peak_rss_mb": peak / 2**20, "growth_over_inputs_mb": (peak - before) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-memory", action="store_true",
                        help="re-measure memory, keep the recorded throughput")
    args = parser.parse_args()

    if args.only_memory:
        results = json.loads((HERE / "sweep.json").read_text())
        results["memory"] = [peak_memory(n) for n in (10_000, 100_000)]
        (HERE / "sweep.json").write_text(json.dumps(results, indent=2))
        (HERE / "sweep.md").write_text(markdown(results))
        print(markdown(results))
        return
    model = small_cnn()
    X, y = data(args.samples)
    repeats = len(PERTURBATIONS) * SEVERITIES
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
                          f"{torch.__version__}, {torch.get_num_threads()} torch threads",
               "samples": args.samples, "perturbations": PERTURBATIONS, "severities": SEVERITIES}
    plain = plain_inference_rate(model, X, repeats=max(1, repeats // 4))
    threads = sweep_rate(model, X, y)
    plain_again = plain_inference_rate(model, X, repeats=max(1, repeats // 4))
    plain = (plain + plain_again) / 2  # bracket the sweep: the machine's pace drifts
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # Warm the workers (imports, model unpickling) so the rate is the steady one.
        failfirst.stress_test(model, X[:BATCH], y[:BATCH], perturbations=PERTURBATIONS[:1],
                              severities=2, client=client)
        cluster_rate = sweep_rate(model, X, y, client=client)
    results["plain_inference_eval_per_s"] = plain
    results["sweep_in_process_eval_per_s"] = threads
    results["sweep_localcluster_2_workers_eval_per_s"] = cluster_rate
    results["ratio_in_process"] = threads / plain
    results["ratio_localcluster"] = cluster_rate / plain
    results["perturb_seconds_per_batch_all_severities"] = perturbation_share(X)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(SEVERITIES - 1):
            model(torch.from_numpy(X[:BATCH]))
    results["inference_seconds_per_batch_all_severities"] = time.perf_counter() - start
    if not args.skip_memory:
        results["memory"] = [peak_memory(n) for n in (10_000, 100_000)]
    (HERE / "sweep.json").write_text(json.dumps(results, indent=2))
    (HERE / "sweep.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    """The recorded results as a table."""
    lines = [
        "# Sweep throughput and memory (generated by `python benchmarks/sweep.py`)", "",
        f"Machine: {r['machine']}. Small CNN (3 conv layers, ~0.1 M parameters) on 32x32x3, "
        f"{r['samples']} samples, {len(r['perturbations'])} perturbations "
        f"({', '.join(r['perturbations'])}) x {r['severities']} severities, batch {BATCH}.", "",
        "| what | evaluations / s | ratio to plain inference |", "|---|---:|---:|",
        f"| plain batched inference (the ceiling) | {r['plain_inference_eval_per_s']:.0f} | 1.00 |",
        f"| sweep, in-process threads | {r['sweep_in_process_eval_per_s']:.0f} | "
        f"{r['ratio_in_process']:.2f} |",
        f"| sweep, LocalCluster of 2 worker processes | "
        f"{r['sweep_localcluster_2_workers_eval_per_s']:.0f} | {r['ratio_localcluster']:.2f} |",
        "", "Per batch of 256, all 10 non-zero severities: inference "
        f"{r['inference_seconds_per_batch_all_severities']:.3f} s; perturbing (draws included):",
        "", "| perturbation | seconds |", "|---|---:|",
        *[f"| {k} | {v:.4f} |" for k, v in r["perturb_seconds_per_batch_all_severities"].items()],
    ]
    if "memory" in r:
        lines += ["", "Peak memory (fresh process with the inputs in memory and a 512-sample warm-up "
                  "sweep done; then 1 perturbation x 3 severities into a run store on disk):",
                  "", "| samples | inputs MB | RSS before sweep MB | peak RSS MB | growth during sweep MB |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {m['samples']} | {m['inputs_mb']:.0f} | {m['rss_before_sweep_mb']:.0f} | "
                  f"{m['peak_rss_mb']:.0f} | {m['growth_over_inputs_mb']:.0f} |" for m in r["memory"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
