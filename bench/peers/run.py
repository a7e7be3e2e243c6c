"""Driver of bench/bench_peers.sh: convnet against PyTorch and ONNX Runtime in one run.

Every measurement is its own process under /usr/bin/time -v (its peak resident memory), run one
after the other: for each thread count and workload, convnet, then PyTorch, then ONNX Runtime,
so the machine's drift hits the three alike. With --rounds N that triple runs N times in a row
for each workload, and each number is the median over the rounds (on a shared machine a single
round moves by 10-30 %). Progress goes to stderr, the tables to stdout (markdown), and with
--append also to bench/RESULTS.md. Raw results, every round's: build/peers/last.json.

usage (through bench/bench_peers.sh, which builds and installs what this needs):
  run.py [--quick] [--models resnet20,resnet18,resnet50,efficientnet_b0] [--threads 1,2]
         [--only infer|train] [--rounds N] [--append | --no-append]
--quick: few runs, PyTorch's variants not probed, 2 threads only unless --threads says otherwise.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PEERS = os.path.join(ROOT, "bench", "peers")
OUT = os.path.join(ROOT, "build", "peers")
BUILT = os.path.join(ROOT, "build", "release", "convnet")
# the run measures a copy, so a rebuild in the working tree during the run changes nothing
CONVNET = os.path.join(OUT, "convnet")
PY = "/usr/bin/python3"
TORCH_BENCH = os.path.join(PEERS, "torch_bench.py")
ORT_BENCH = os.path.join(PEERS, "ort_bench.js")
FMA_PEAK = os.path.join(OUT, "fma_peak")
OPSET = 17  # the newest opset torch 1.13's exporter writes

def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


# ATen's AVX-512 kernels need F, BW, VL and DQ; on other CPUs forcing them is an illegal
# instruction, and AVX2 is the widest
ATEN_CAPABILITY = "avx512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags() else "avx2"

# PyTorch's fastest setting on this CPU (see bench/train_pytorch.py)
TORCH_ENV = {
    "OMP_PROC_BIND": "true",
    "ATEN_CPU_CAPABILITY": ATEN_CAPABILITY,
    "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184",
}

# What each model is measured on. Inference: float32 224x224, batch 1 (latency) and batch 16
# (throughput). Training: one step = forward, loss, backward, SGD, BatchNorm in train mode.
MODELS = {
    "resnet20": {"train": {"batch": 128, "size": 28, "in_channels": 1, "num_classes": 10}},
    "resnet18": {"infer": [1, 16], "train": {"batch": 16, "size": 224}},
    "resnet50": {"infer": [1, 16]},
    "efficientnet_b0": {"infer": [1, 16], "train": {"batch": 16, "size": 224}},
}
DEFAULT_MODELS = "resnet20,resnet18,resnet50,efficientnet_b0"

# PyTorch variants tried per workload (torch_bench.py explains them); a full run times them all
# in a probe and keeps the fastest, --quick takes the first without trying the others. The
# plain frozen graph (freeze_cl) can be many times slower at batch 1 on one thread: PyTorch then
# sends 1x1 convolutions to its THNN path, which calls BLAS, and Debian's build has the generic
# reference BLAS; optimize_for_inference moves every convolution to oneDNN.
def torch_variants(model, mode, batch):
    if mode == "train":
        return ["eager_cl", "eager"]
    return ["ofi_cl", "ofi", "freeze_cl"]


# (warm-up, timed runs): the measurement, then PyTorch's probe of each variant (full run only)
def run_counts(quick, mode, model, batch):
    if mode == "infer":
        if batch == 1:
            return ((2, 5), None) if quick else ((5, 30), (3, 5))
        return ((1, 1), None) if quick else ((2, 7), (1, 2))
    if model == "resnet20":
        return ((1, 2), None) if quick else ((3, 15), (2, 3))
    return ((1, 1), None) if quick else ((2, 5), (1, 2))


T0 = time.time()


def log(msg):
    el = int(time.time() - T0)
    print(f"{el // 60:2d}:{el % 60:02d} {msg}", file=sys.stderr, flush=True)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def fma_peak(threads, seconds):
    """{threads: result} of bench/peers/fma_peak.c, or {} if it fails."""
    fj, _, err = run_proc([FMA_PEAK, "--threads", ",".join(map(str, threads)), "--seconds", str(seconds)],
                          timeout=120)
    if not fj:
        log(f"  FMA peak: failed ({err})")
        return {}
    return {r["threads"]: r for r in fj["results"]}


def widest(r):
    """the FMA peak of the CPU's widest vectors: AVX-512 where it has them, else AVX2"""
    return r["avx512_flops"] or r["avx2_flops"]


def cpu_model():
    name, fam, mod = "unknown CPU", "?", "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "model name" and name == "unknown CPU":
                    name = v
                elif k == "cpu family" and fam == "?":
                    fam = v
                elif k == "model" and mod == "?":
                    mod = v
    except OSError:
        pass
    return f"{name} (family {fam}, model {mod})"


def run_proc(cmd, env_extra=None, timeout=900):
    """Run cmd under /usr/bin/time -v. Returns (json or None, peak RSS in MB or None, error)."""
    env = dict(os.environ)
    for k in TORCH_ENV:
        env.pop(k, None)
    env.update(env_extra or {})
    with tempfile.NamedTemporaryFile(prefix="peers-time.", dir=OUT, delete=False) as tf:
        tpath = tf.name
    full = (["/usr/bin/time", "-v", "-o", tpath] if os.path.exists("/usr/bin/time") else []) + cmd
    try:
        p = subprocess.run(full, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = -1, "", f"timed out after {timeout} s"
    rss = None
    try:
        with open(tpath) as f:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
            rss = int(m.group(1)) / 1024 if m else None
    except OSError:
        pass
    os.unlink(tpath)
    if rc != 0:
        lines = [l.strip() for l in err.splitlines() if l.strip() and not l.startswith("\t")]
        lines = [l for l in lines if not l.startswith(("Command exited", "Command terminated"))]
        return None, rss, (lines[-1] if lines else f"exit status {rc}")[:160]
    for text in (out, (out.strip().splitlines() or [""])[-1]):  # pretty-printed or last line
        try:
            return json.loads(text), rss, None
        except ValueError:
            pass
    return None, rss, "no JSON on stdout"


def model_args(model, spec):
    """Model options, spelled the same for `convnet bench/info` and torch_bench.py."""
    a = ["--model", model, "--input-size", str(spec.get("size", 224))]
    if "in_channels" in spec:
        a += ["--in-channels", str(spec["in_channels"]), "--num-classes", str(spec["num_classes"])]
    return a


def macs_per_image(model, spec):
    """MACs of one forward pass: convnet info's count, else PyTorch hooks on Conv2d/Linear."""
    j, _, err = run_proc([CONVNET, "info", *model_args(model, spec), "--json"], timeout=120)
    if j and j.get("macs"):
        return int(j["macs"]), "convnet info"
    j, _, err2 = run_proc([PY, TORCH_BENCH, "macs", *model_args(model, spec)], TORCH_ENV, 300)
    if j and j.get("macs"):
        return int(j["macs"]), "PyTorch hooks"
    log(f"  MACs of {model}: unknown ({err}; {err2})")
    return None, None


def onnx_file(model, batch):
    path = os.path.join(OUT, f"{model}_b{batch}_opset{OPSET}.onnx")
    if not os.path.exists(path):
        log(f"  exporting {os.path.basename(path)}")
        tmp = path + ".tmp.onnx"
        j, _, err = run_proc([PY, TORCH_BENCH, "export", "--model", model, "--batch", str(batch),
                              "--out", tmp, "--opset", str(OPSET)], timeout=600)
        if not j:
            log(f"  export failed: {err}")
            return None, err
        os.replace(tmp, path)
    return path, None


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few runs, no PyTorch variant probing")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--threads", default=None, help="thread counts (default 1,2; --quick: 2)")
    ap.add_argument("--only", choices=["infer", "train"])
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each workload's triple N times, report the medians (default 1)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--append", dest="append", action="store_true", default=None,
                   help="append the tables to bench/RESULTS.md (default for a full run)")
    g.add_argument("--no-append", dest="append", action="store_false")
    a = ap.parse_args()
    append = (not a.quick) if a.append is None else a.append
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model '{m}' (known: {', '.join(MODELS)})")
    try:
        threads = [int(t) for t in (a.threads or ("2" if a.quick else "1,2")).split(",") if t.strip()]
    except ValueError:
        ap.error("--threads takes a list like 1,2")
    if not threads or min(threads) < 1:
        ap.error("--threads takes a list like 1,2")
    if not 1 <= a.rounds <= 99:
        ap.error("--rounds takes a count from 1 to 99")
    os.makedirs(OUT, exist_ok=True)
    t_start = time.time()
    shutil.copy2(BUILT, CONVNET + ".tmp")
    os.replace(CONVNET + ".tmp", CONVNET)
    commit = git_rev()

    # the workloads: (mode, model, batch, spec)
    work = []
    for m in models:
        if a.only != "train":
            for b in MODELS[m].get("infer", []):
                work.append(("infer", m, b, {"size": 224}))
        if a.only != "infer" and "train" in MODELS[m]:
            work.append(("train", m, MODELS[m]["train"]["batch"], MODELS[m]["train"]))
    work.sort(key=lambda w: (w[0] != "infer", w[2], list(MODELS).index(w[1])))

    log(f"bench_peers: {len(work)} workloads x threads {threads}{' (quick)' if a.quick else ''}")
    load_start = loadavg()
    peak = fma_peak(threads, 0.1 if a.quick else 0.3)
    for t, r in sorted(peak.items()):
        log(f"  FMA peak, {t} thread(s): AVX-512 {r['avx512_flops'] / 1e9:.1f} GFLOP/s "
            f"({r['avx512_flops_per_thread'] / 1e9:.1f} per thread), AVX2 {r['avx2_flops'] / 1e9:.1f}"
            " (AVX-512 0: not on this CPU)")

    macs = {}
    for m in models:
        if any(w[1] == m for w in work):
            macs[m] = macs_per_image(m, MODELS[m]["train"] if "infer" not in MODELS[m] else {"size": 224})
            if macs[m][0]:
                log(f"  {m}: {macs[m][0] / 1e6:.1f} M MACs per image ({macs[m][1]})")
    onnx = {}
    for mode, m, b, _ in work:
        if mode == "infer":
            onnx[(m, b)] = onnx_file(m, b)

    results = []
    total = len(work) * len(threads)
    k = 0
    for t in threads:
        for mode, m, b, spec in work:
            k += 1
            (warm, runs), probe = run_counts(a.quick, mode, m, b)
            name = f"[{k}/{total}] {m} {'inference' if mode == 'infer' else 'training'} batch {b} threads {t}"
            row = {"mode": mode, "model": m, "batch": b, "threads": t, "size": spec.get("size", 224)}
            cmds = {}
            cmds["convnet"] = ([CONVNET, "bench", *model_args(m, spec), "--batch", str(b), "--threads", str(t),
                                "--runs", str(runs), "--warmup", str(warm), "--json"]
                               + (["--train"] if mode == "train" else []), None, None)
            # PyTorch: probe the variants, then time the fastest alone
            torch_env = dict(TORCH_ENV, OMP_NUM_THREADS=str(t))
            cands = torch_variants(m, mode, b)
            variant, probed = cands[0], None
            if probe and len(cands) > 1:
                pj, _, err = run_proc([PY, TORCH_BENCH, mode, *model_args(m, spec), "--batch", str(b),
                                       "--threads", str(t), "--warmup", str(probe[0]), "--runs", str(probe[1]),
                                       "--variant", ",".join(cands)], torch_env)
                if pj:
                    variant, probed = pj["variant"], pj["variant_median_ms"]
                    log(f"{name} pytorch probe: " + ", ".join(f"{v} {ms:.1f} ms" for v, ms in probed.items()))
                else:
                    log(f"{name} pytorch probe failed: {err}")
            cmds["pytorch"] = ([PY, TORCH_BENCH, mode, *model_args(m, spec), "--batch", str(b), "--threads", str(t),
                                "--warmup", str(warm), "--runs", str(runs), "--variant", variant], torch_env, variant)
            row["pytorch_probe_ms"] = probed
            # ONNX Runtime
            if mode == "infer":
                path, err = onnx[(m, b)]
                if path:
                    cmds["onnxruntime"] = (["node", ORT_BENCH, "--model", path, "--batch", str(b), "--threads", str(t),
                                            "--warmup", str(warm), "--runs", str(runs), "--channels", "3",
                                            "--size", "224"], None, None)
                else:
                    row["onnxruntime"] = {"error": f"export failed: {err}"}
            rounds = {who: [] for who in cmds}
            for rd in range(a.rounds):
                tag = f"{name}" + (f" round {rd + 1}/{a.rounds}" if a.rounds > 1 else "")
                for who, (cmd, env, var) in cmds.items():
                    rounds[who].append(measure(tag, who, cmd, env, var))
            for who, rs in rounds.items():
                row[who] = combine(rs)
            results.append(row)

    # the ceiling once more at the end (the machine is shared): the higher of the two counts
    for t, r in fma_peak(threads, 0.1 if a.quick else 0.3).items():
        if t not in peak or widest(r) > widest(peak[t]):
            peak[t] = r
    for t, r in sorted(peak.items()):
        log(f"  FMA peak, {t} thread(s), best of start and end: {widest(r) / 1e9:.1f} GFLOP/s")
    elapsed = time.time() - t_start
    meta = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "quick": a.quick,
        "rounds": a.rounds,
        "elapsed_s": elapsed,
        "load": [load_start, loadavg()],
        "convnet_commit": commit,
        "versions": versions(results),
        "peak": {str(t): r for t, r in peak.items()},
        "macs": {m: {"macs": v[0], "source": v[1]} for m, v in macs.items()},
    }
    with open(os.path.join(OUT, "last.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    text = render(meta, results, peak, macs, threads)
    print(text)
    log(f"bench_peers: done in {elapsed / 60:.1f} min")
    if append:
        path = os.path.join(ROOT, "bench", "RESULTS.md")
        with open(path, "a") as f:
            f.write("\n" + text)
        log(f"bench_peers: appended to {os.path.relpath(path, ROOT)}")


def combine(rounds):
    """One peer's result over the rounds: the median of the rounds' medians (the upper middle
    one for an even count), the largest peak memory; every round kept under "rounds"."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    if len(rounds) == 1:
        return rounds[0]
    mid = sorted(ok, key=lambda r: r["median_ms"])[len(ok) // 2]
    r = dict(mid)
    r["rss_mb"] = max((x["rss_mb"] for x in ok if x.get("rss_mb")), default=mid.get("rss_mb"))
    r["rounds"] = rounds
    return r


def measure(name, who, cmd, env, variant):
    j, rss, err = run_proc(cmd, env)
    if not j:
        log(f"{name} {who}: n/a ({err})")
        return {"error": err, "rss_mb": rss}
    r = {"median_ms": j["median_ms"], "img_per_s": j["img_per_s"], "rss_mb": rss,
         "runs": j.get("runs"), "min_ms": j.get("min_ms"), "max_ms": j.get("max_ms")}
    for key in ("torch", "onnxruntime", "node"):
        if key in j:
            r[key] = j[key]
    if variant:
        r["variant"] = variant
    rs = f", {rss:.0f} MB" if rss else ""
    log(f"{name} {who}{' (' + variant + ')' if variant else ''}: {j['median_ms']:.1f} ms, "
        f"{j['img_per_s']:.1f} img/s{rs}")
    return r


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "src",
                                "include"], capture_output=True, text=True).stdout.strip()
        return rev + (" + uncommitted changes in src/" if dirty else "")
    except OSError:
        return "?"


def versions(results):
    v = {}
    for r in results:
        for key, src in (("torch", "pytorch"), ("onnxruntime", "onnxruntime"), ("node", "onnxruntime")):
            if key not in v and key in r.get(src, {}):
                v[key] = r[src][key]
    return v


def ratio(conv, peer, latency):
    if not conv or not peer or "error" in conv or "error" in peer:
        return None
    if latency:
        return peer["median_ms"] / conv["median_ms"]
    return conv["img_per_s"] / peer["img_per_s"]


def value(r, latency):
    if not r or "error" in r:
        return "n/a"
    return fmt(r["median_ms"] if latency else r["img_per_s"])


def xr(v):
    return "n/a" if v is None else f"{v:.2f}x"


def xrr(conv, peer, latency):
    """The ratio, and with rounds the range of the rounds' own ratios (convnet's round i against
    the peer's round i, which ran right after it)."""
    text = xr(ratio(conv, peer, latency))
    if conv and peer and "rounds" in conv and "rounds" in peer:
        rs = [ratio(c, q, latency) for c, q in zip(conv["rounds"], peer["rounds"])]
        rs = [x for x in rs if x is not None]
        if len(rs) > 1:
            text += f" ({min(rs):.2f}-{max(rs):.2f})"
    return text


def render(meta, results, peak, macs, threads):
    L = []
    q = " (--quick: few runs, PyTorch variants not probed)" if meta["quick"] else ""
    L.append(f"## {meta['date'][:10]}: convnet against PyTorch and ONNX Runtime (issue 4){q}")
    L.append("")
    ver = meta["versions"]
    peers = [f"PyTorch {ver['torch']} (Debian python3-torch)"] if "torch" in ver else []
    if "onnxruntime" in ver:
        peers.append(f"ONNX Runtime {ver['onnxruntime']} (npm onnxruntime-node, Node.js {ver.get('node', '?')})")
    L.append(f"CPU: {meta['cpu']}, {meta['cores']} cores. `bash bench/bench_peers.sh"
             f"{' --quick' if meta['quick'] else ''}"
             f"{' --rounds ' + str(meta['rounds']) if meta.get('rounds', 1) > 1 else ''}` at {meta['date']}, {meta['elapsed_s'] / 60:.1f} min; "
             f"convnet {meta['convnet_commit']}" + "".join(", " + p for p in peers) + ".")
    ld = meta.get("load") or [None, None]
    if None not in ld:
        L.append(f"1-minute load average of the machine (shared with other work) at start / end: "
                 f"{ld[0]:.1f} / {ld[1]:.1f}.")
    nr = meta.get("rounds", 1)
    L.append("Every number is the median of its timed runs after warm-up; each row's three "
             "measurements ran back to back, each in its own process"
             + (f"; {nr} such rounds in a row, and each number is the median over them (the "
                "round of the median img/s; in brackets, the range of the rounds' own ratios)"
                if nr > 1 else "") + ". Ratios are convnet's speed "
             "relative to the peer: **>1 = convnet faster** (latency: peer ms / convnet ms; "
             "throughput: convnet img/s / peer img/s).")
    L.append("")
    if peak:
        parts = [(f"{t} thread{'s' if t > 1 else ''}: AVX-512 {peak[t]['avx512_flops'] / 1e9:.0f} GFLOP/s "
                  f"({peak[t]['avx512_flops_per_thread'] / 1e9:.0f} per core), AVX2 {peak[t]['avx2_flops'] / 1e9:.0f}")
                 if peak[t]["avx512_flops"] else
                 (f"{t} thread{'s' if t > 1 else ''}: AVX2 {peak[t]['avx2_flops'] / 1e9:.0f} GFLOP/s "
                  f"({peak[t]['avx2_flops_per_thread'] / 1e9:.0f} per core; no AVX-512 on this CPU)")
                 for t in sorted(peak)]
        L.append("Machine ceiling (`bench/peers/fma_peak.c`, FP32 FMA chains, best of a measurement at "
                 "the start and one at the end): " + "; ".join(parts) + ".")
        L.append("")

    inf = [r for r in results if r["mode"] == "infer"]
    if inf:
        L.append("Inference, float32 224x224 (batch 1: latency in ms, lower is better; batch 16: "
                 "images/s, higher is better):")
        L.append("")
        L.append("| model | batch | threads | convnet | PyTorch | ONNX Runtime | vs PyTorch (>1 = convnet faster) "
                 "| vs ONNX Runtime (>1 = convnet faster) | PyTorch mode |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in inf:
            lat = r["batch"] == 1
            unit = " ms" if lat else " img/s"
            L.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {value(r['convnet'], lat)}{unit} "
                     f"| {value(r['pytorch'], lat)}{unit} | {value(r.get('onnxruntime'), lat)}{unit} "
                     f"| {xrr(r['convnet'], r['pytorch'], lat)} "
                     f"| {xrr(r['convnet'], r.get('onnxruntime'), lat)} "
                     f"| {r['pytorch'].get('variant', 'n/a')} |")
        L.append("")
    tr = [r for r in results if r["mode"] == "train"]
    if tr:
        L.append("Training, images/s (forward, cross-entropy, backward, SGD step with momentum 0.9, "
                 "Nesterov, weight decay 5e-4; BatchNorm in train mode; ONNX Runtime has no training here):")
        L.append("")
        L.append("| model | input | batch | threads | convnet img/s | PyTorch img/s | vs PyTorch (>1 = convnet faster) "
                 "| PyTorch mode |")
        L.append("|---|---|---:|---:|---:|---:|---:|---|")
        for r in tr:
            spec = MODELS[r["model"]]["train"]
            inp = f"{spec.get('in_channels', 3)}x{r['size']}x{r['size']}"
            L.append(f"| {r['model']} | {inp} | {r['batch']} | {r['threads']} | {value(r['convnet'], False)} "
                     f"| {value(r['pytorch'], False)} | {xrr(r['convnet'], r['pytorch'], False)} "
                     f"| {r['pytorch'].get('variant', 'n/a')} |")
        L.append("")

    L.append("Achieved FLOP/s as a share of the measured FMA peak of the CPU's widest vectors (AVX-512, else AVX2) at the same thread count "
             "(FLOPs = 2 x MACs of the Conv2d/Linear layers per image; training = 3 x forward), and "
             "peak resident memory of each process (`/usr/bin/time -v`, MB; PyTorch's includes "
             "the Python interpreter and libtorch, ONNX Runtime's Node.js):")
    L.append("")
    L.append("| workload | threads | convnet GFLOP/s | PyTorch GFLOP/s | ONNX Runtime GFLOP/s "
             "| convnet MB | PyTorch MB | ONNX Runtime MB |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mac = macs.get(r["model"], (None, None))[0]
        mult = 2 if r["mode"] == "infer" else 6
        cells = []
        for who in ("convnet", "pytorch", "onnxruntime"):
            x = r.get(who)
            if r["mode"] == "train" and who == "onnxruntime":
                cells.append("-")
            elif not x or "error" in x or not mac:
                cells.append("n/a")
            else:
                fl = mult * mac * x["img_per_s"]
                p = widest(peak[r["threads"]]) if r["threads"] in peak else None
                cells.append(f"{fl / 1e9:.0f} ({100 * fl / p:.0f} %)" if p else f"{fl / 1e9:.0f}")
        mem = []
        for who in ("convnet", "pytorch", "onnxruntime"):
            x = r.get(who)
            if r["mode"] == "train" and who == "onnxruntime":
                mem.append("-")
            else:
                mem.append(f"{x['rss_mb']:.0f}" if x and x.get("rss_mb") else "n/a")
        wl = f"{r['model']} {'inference' if r['mode'] == 'infer' else 'training'} batch {r['batch']}"
        L.append(f"| {wl} | {r['threads']} | {' | '.join(cells)} | {' | '.join(mem)} |")
    L.append("")
    srcs = ", ".join(f"{m} {v[0] / 1e6:.0f} M ({v[1]})" for m, v in macs.items() if v[0])
    if srcs:
        L.append(f"MACs per image: {srcs}.")
        L.append("")
    fails = []
    for r in results:
        for who in ("convnet", "pytorch", "onnxruntime"):
            x = r.get(who)
            if x and "error" in x:
                fails.append(f"{r['model']} {r['mode']} batch {r['batch']} threads {r['threads']} {who}: {x['error']}")
    if fails:
        L.append("n/a entries: " + "; ".join(dict.fromkeys(re.sub(r" threads \d+", "", f) for f in fails)) + ".")
        L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
