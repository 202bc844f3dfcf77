"""Load benchmark of the MedKit MONAI Label server: concurrent clients x infer requests.

    .venv/bin/python benchmarks/load.py --model tiny --clients 8 --requests 50 --out runs/load_tiny.json
    .venv/bin/python benchmarks/load.py --model shipped --clients 8 --requests 50   # ~1 s per report on 2 CPUs
    .venv/bin/python benchmarks/load.py --url http://127.0.0.1:8000 --pid 1234       # a running server

Without ``--url`` it starts ``monailabel start_server`` on 127.0.0.1 (a free port) over a copy
of ``monailabel_app/samples`` serving ``--model``: ``shipped`` (the model in the medkit
package), ``tiny`` (a 2-layer model trained for seconds on the samples, built once into
``runs/bench_tiny_model``; for CI-sized runs) or a model directory. Then:

1. one sequential request per sample study: the reference results (and the warm-up);
2. ``--clients`` threads each send ``--requests`` ``POST /infer/<task>?image=ID&output=json``,
   cycling over the studies; every answer must be 200 and equal (report and findings) to the
   sequential one for that study;
3. the server's memory (``/proc/<pid>/status``: VmRSS before and after, VmHWM = peak RSS) and
   how many times it loaded a model during the load (from its log) are read.

Prints a table and writes it as JSON (``--out``). Latency is per request, seen by the client
(MONAI Label runs one inference at a time, so under load it includes queueing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "monailabel_app" / "samples"
CXR_SUFFIXES = (".png", ".dcm")
LOAD_LINE = "loading MedkitCxr model"  # logged by lib/infers/base.py on every (re)load


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def essence(result: dict) -> dict:
    """What must not change between runs: the report and the findings."""
    return {"report": result.get("report"), "findings": result.get("findings")}


def infer(url: str, task: str, image: str, timeout: float = 900) -> tuple[int, dict | str, float]:
    import requests

    t0 = time.perf_counter()
    r = requests.post(f"{url}/infer/{task}", params={"image": image, "output": "json"}, timeout=timeout)
    dt = time.perf_counter() - t0
    try:
        body = r.json()
    except ValueError:
        body = r.text[:300]
    return r.status_code, body, dt


def run_load(url: str, task: str, images: list[str], clients: int, requests_per_client: int,
             pid: int | None = None, log: Path | None = None) -> dict:
    """The benchmark against a running server; returns the measurements (see the module doc)."""
    reference = {}
    for image in images:
        code, body, _ = infer(url, task, image)
        if code != 200:
            raise RuntimeError(f"sequential infer of {image} failed: {code} {body}")
        reference[image] = essence(body)
    mem_before = proc_status(pid) if pid else {}
    loads_before = log.read_text().count(LOAD_LINE) if log else None

    latencies: list[float] = []
    errors: list[str] = []
    mismatches: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(requests_per_client):
            image = images[(c + i) % len(images)]
            try:
                code, body, dt = infer(url, task, image)
            except Exception as e:  # connection refused / reset: an error, counted, never raised
                with lock:
                    errors.append(f"client {c} request {i}: {type(e).__name__}: {e}")
                continue
            with lock:
                latencies.append(dt)
                if code != 200:
                    errors.append(f"client {c} request {i} ({image}): HTTP {code} {str(body)[:200]}")
                elif essence(body) != reference[image]:
                    mismatches.append(f"client {c} request {i} ({image})")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    mem_after = proc_status(pid) if pid else {}
    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))], 4) if lat else None

    return {
        "task": task, "clients": clients, "requests_per_client": requests_per_client,
        "requests": clients * requests_per_client, "studies": images,
        "errors": len(errors), "error_samples": errors[:5],
        "mismatches_vs_sequential": len(mismatches), "mismatch_samples": mismatches[:5],
        "latency_p50_s": pct(50), "latency_p95_s": pct(95), "latency_max_s": pct(100),
        "latency_mean_s": round(statistics.mean(lat), 4) if lat else None,
        "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 3) if wall else None,
        "rss_before_mib": mem_before.get("VmRSS"), "rss_after_mib": mem_after.get("VmRSS"),
        "peak_rss_mib": mem_after.get("VmHWM"),
        "model_loads_during_load": (log.read_text().count(LOAD_LINE) - loads_before) if log else None,
    }


def tiny_model(dest: Path) -> Path:
    """A tiny MedKit model (2-layer LM, 64 px encoder) trained for a few steps on the samples."""
    if (dest / "model" / "config.json").exists():
        return dest / "model"
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT))
    from medkit.cxr.config import MedKitConfig
    from medkit.core.generator.lm import _smollm2_dir
    from medkit.cxr.train import train
    from tests.conftest import TINY_OVERRIDES, write_tiny_iu_folder

    tok = AutoTokenizer.from_pretrained(_smollm2_dir(), local_files_only=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.5, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(dest / "lm")
    tok.save_pretrained(dest / "lm")
    mcfg = MedKitConfig().override(TINY_OVERRIDES + [f"generator.lm_path={dest / 'lm'}"])
    out = train(mcfg, write_tiny_iu_folder(dest / "data"), dest / "run", ckpt_every=0)
    shutil.copytree(out, dest / "model")
    return dest / "model"


def start_server(model_dir: Path | None, work: Path, threads: int | None):
    sys.path.insert(0, str(ROOT))
    from tests.monailabel.conftest import Server, copy_app

    studies = work / "studies"
    studies.mkdir(parents=True)
    for f in SAMPLES.iterdir():
        if f.name.endswith(CXR_SUFFIXES):
            shutil.copy(f, studies / f.name)
    conf = {"models": "medkit_cxr", **({"model_path": model_dir} if model_dir else {})}
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    return Server(copy_app(work / "app"), str(studies), conf, work, env=env), studies


def table(res: dict) -> str:
    rows = [("requests", f"{res['clients']} clients x {res['requests_per_client']} = {res['requests']}"),
            ("errors", res["errors"]), ("results differing from sequential", res["mismatches_vs_sequential"]),
            ("latency p50 / p95 / max (s)",
             f"{res['latency_p50_s']} / {res['latency_p95_s']} / {res['latency_max_s']}"),
            ("throughput (requests/s)", res["throughput_rps"]), ("wall time (s)", res["wall_s"]),
            ("server RSS before / after (MiB)", f"{res['rss_before_mib']} / {res['rss_after_mib']}"),
            ("server peak RSS, VmHWM (MiB)", res["peak_rss_mib"]),
            ("model loads during the load", res["model_loads_during_load"])]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{w}} | {v} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shipped", help="shipped | tiny | a model directory (ignored with --url)")
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, for its memory")
    ap.add_argument("--task", default="medkit_cxr")
    ap.add_argument("--images", help="comma list of study ids (default: the sample chest X-rays)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50, help="requests per client")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS of a started server")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)

    images = args.images.split(",") if args.images else sorted(
        f.name.split(".")[0] for f in SAMPLES.iterdir() if f.name.endswith(CXR_SUFFIXES))
    server = None
    work = Path(tempfile.mkdtemp(prefix="medkit_load_"))
    try:
        if args.url:
            url, pid, log = args.url.rstrip("/"), args.pid, None
        else:
            model = None
            if args.model == "tiny":
                model = tiny_model(ROOT / "runs" / "bench_tiny_model")
            elif args.model != "shipped":
                model = Path(args.model)
            server, _ = start_server(model, work, args.threads)
            url, pid, log = server.url, server.proc.pid, server.log
        res = run_load(url, args.task, images, args.clients, args.requests, pid, log)
        res["model"] = args.model if not args.url else args.url
        res["command"] = " ".join([Path(sys.executable).name, "benchmarks/load.py", *(argv or sys.argv[1:])])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(table(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if res["errors"] == 0 and res["mismatches_vs_sequential"] == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
