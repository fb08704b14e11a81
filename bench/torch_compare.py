#!/usr/bin/python3
"""Side by side, einet and PyTorch (Debian's python3-torch, CPU) running the same multi-exit
architecture with the same weights and thread count: batch-1 latency, batch-64 forward and
batch-128 training throughput, each printed as a ratio einet / PyTorch, and checks that both
compute the same predictions, per exit and sample by sample.

    /usr/bin/python3 bench/torch_compare.py [--model FILE] [--threads N[,N...]]
        [--samples N] [--rounds R] [--skip-batch1] [--cpu-time]

PyTorch is a benchmark-only dependency: nothing in the build or the tests needs it.
Batch 1: both sides run every conv part and every branch of every sample, as the tiers do
(einet eval). Batch 64: the whole forward, every exit, with batch norms folded into the
convs on both sides, PyTorch under torch.inference_mode() both eager and torch.jit.freeze'd
(its best mode counts). Training: one step of batch 128 (forward and backward of every exit,
the sum of their cross-entropies, SGD with Nesterov momentum 0.9 and weight decay 5e-4), as
einet train takes it. The machine is shared: the two sides take turns, round by round
(build/bin/bench_nn --json --reps 1 for einet, then the same measurements in PyTorch), and
each figure is the median of its rounds.

Predictions: einet's batch-64 forward (bench_nn --predict) against PyTorch's, image by
image and exit by exit; a differing argmax counts as a failure unless PyTorch itself sees a
tie there (its top two probabilities within 1e-6), which float rounding may break either way."""
import argparse, gzip, json, os, struct, subprocess, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    """Header and tensors of a safetensors file (a tiny format: no library needed)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    data = raw[8 + hlen:]
    tensors = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:en]), dtype=torch.float32)
        tensors[name] = t.reshape(e["shape"])
    return meta, tensors


def make_layer(spec, in_shape):
    c, h, w = in_shape
    t = spec["type"]
    if t == "conv":
        k, s, p = spec["k"], spec.get("stride", 0) or 1, spec.get("pad", 0)
        m = nn.Conv2d(c, spec["out"], k, s, p)
        return m, (spec["out"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    if t == "bn":
        return nn.BatchNorm2d(c), in_shape
    if t == "relu":
        return nn.ReLU(), in_shape
    if t == "maxpool":
        k, s, p = spec["k"], spec.get("stride", 0) or spec["k"], spec.get("pad", 0)
        return nn.MaxPool2d(k, s, p), (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    if t == "avgpool":
        if spec.get("size"):
            return nn.AdaptiveAvgPool2d(spec["size"]), (c, spec["size"], spec["size"])
        k, s = spec["k"], spec.get("stride", 0) or spec["k"]
        return nn.AvgPool2d(k, s), (c, (h - k) // s + 1, (w - k) // s + 1)
    if t == "gap":
        return nn.AdaptiveAvgPool2d(1), (c, 1, 1)
    if t == "flatten":
        return nn.Flatten(), (c * h * w, 1, 1)
    if t == "dense":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, spec["out"])), (spec["out"], 1, 1)
    raise ValueError("unknown layer type " + t)


def build_part(specs, shape, prefix, tensors):
    layers = []
    for i, spec in enumerate(specs):
        m, shape = make_layer(spec, shape)
        target = m[1] if isinstance(m, nn.Sequential) else m
        names = [("weight", "weight"), ("bias", "bias")]
        if spec["type"] == "bn":
            names = [("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                     ("running_var", "running_var")]
        for attr, key in names:
            full = "%s.%d.%s" % (prefix, i, key)
            if full in tensors:
                dst = getattr(target, attr)
                dst.data.copy_(tensors[full].reshape(dst.shape))
        layers.append(m)
    return nn.Sequential(*layers).eval(), shape


def build(arch, tensors):
    """[conv part 0, branch 0, conv part 1, ...] as PyTorch modules with einet's weights."""
    shape, parts = tuple(arch["input"]), []
    for b, block in enumerate(arch["blocks"]):
        conv, shape = build_part(block["conv"], shape, "blocks.%d.conv" % b, tensors)
        branch, _ = build_part(block["branch"], shape, "blocks.%d.branch" % b, tensors)
        parts += [conv, branch]
    return parts


def fold(seq):
    """Batch norm folded into the conv before it, as einet does for inference."""
    mods = list(seq)
    out, i = [], 0
    while i < len(mods):
        if isinstance(mods[i], nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
            out.append(torch.nn.utils.fusion.fuse_conv_bn_eval(mods[i], mods[i + 1]))
            i += 2
        else:
            out.append(mods[i])
            i += 1
    return nn.Sequential(*out).eval()


def load_images(n):
    d = os.environ.get("EINET_DATA_DIR") or "/usr/share/datasets/fashion-mnist"
    with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = list(f.read()[8:8 + n])
    x = torch.frombuffer(bytearray(raw[16:16 + n * 784]), dtype=torch.uint8).float() / 255.0
    return x.reshape(n, 1, 28, 28), labels


class Net(nn.Module):
    """Every conv part and every branch, returning each exit's logits."""

    def __init__(self, parts):
        super().__init__()
        self.convs = nn.ModuleList(parts[0::2])
        self.branches = nn.ModuleList(parts[1::2])

    def forward(self, x):
        feats = []
        for c in self.convs:
            x = c(x)
            feats.append(x)
        outs = []
        for i, b in enumerate(self.branches):
            outs.append(b(feats[i]))
        return outs


CLOCK = time.perf_counter  # time.process_time with --cpu-time


def rate(fn, images, seconds):
    """Images per second of fn() called for about `seconds` (after one warm-up call)."""
    fn()
    t0, n = CLOCK(), 0
    while True:
        fn()
        n += 1
        el = CLOCK() - t0
        if el >= seconds:
            return images * n / el


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def torch_train_step(tparts, opt, xb, yb):
    opt.zero_grad()
    x, loss = xb, 0
    for k in range(len(tparts) // 2):
        x = tparts[2 * k](x)
        loss = loss + F.cross_entropy(tparts[2 * k + 1](x), yb)
    loss.backward()
    opt.step()


def batch1(a, arch, parts, x, labels):
    """The per-exit batch-1 comparison against einet eval (as before)."""
    n_exits = len(arch["blocks"])
    correct = [0] * n_exits
    conv_t, branch_t = [0.0] * n_exits, [0.0] * n_exits
    with torch.inference_mode():
        for _ in range(50):  # warm-up
            h = x[:1]
            for k in range(n_exits):
                h = parts[2 * k](h)
                parts[2 * k + 1](h)
        for s in range(a.samples):
            h = x[s:s + 1]
            for k in range(n_exits):
                t0 = time.perf_counter()
                h = parts[2 * k](h)
                t1 = time.perf_counter()
                p = F.softmax(parts[2 * k + 1](h), dim=1)
                t2 = time.perf_counter()
                conv_t[k] += t1 - t0
                branch_t[k] += t2 - t1
                correct[k] += int(p.argmax(1).item() == labels[s])
    torch_ms = 1e3 * (sum(conv_t) + sum(branch_t)) / a.samples
    torch_acc = [c / a.samples for c in correct]
    out = subprocess.run([a.einet, "eval", "--model", a.model, "--json", "--samples", str(a.samples),
                          "--threads", str(a.threads_now)], check=True, capture_output=True, text=True)
    ev = json.loads(out.stdout)
    einet_ms = sum(e["conv_ms"] + e["branch_ms"] for e in ev["exits"])
    einet_acc = [e["accuracy"] for e in ev["exits"]]
    flops = sum(e["conv_mflop"] + e["branch_mflop"] for e in ev["exits"])
    print("batch 1, %d test images, every conv part and branch timed on its own (einet eval):"
          % a.samples)
    print("exit  einet acc  torch acc  einet conv+branch ms  torch conv+branch ms")
    for k in range(n_exits):
        e = ev["exits"][k]
        print("%4d  %9.4f  %9.4f  %20.4f  %20.4f" % (k + 1, einet_acc[k], torch_acc[k],
              e["conv_ms"] + e["branch_ms"], 1e3 * (conv_t[k] + branch_t[k]) / a.samples))
    print("whole network, batch 1: einet %.3f ms (%.1f GFLOP/s), PyTorch %.3f ms (%.1f GFLOP/s); "
          "einet/PyTorch speed ratio %.2f" % (einet_ms, flops / einet_ms, torch_ms, flops / torch_ms,
                                              torch_ms / einet_ms))
    worst = max(abs(u - v) for u, v in zip(einet_acc, torch_acc))
    print("largest per-exit accuracy difference einet vs PyTorch: %.4f" % worst)
    return worst <= 0.002


def predictions(a, net, x):
    """einet's batch-64 predictions against PyTorch's, sample by sample and exit by exit."""
    out = subprocess.run([a.bench_nn, "--predict", str(a.samples), "--batch", "64", "--model",
                          a.model], check=True, capture_output=True, text=True)
    rows = [line.split() for line in out.stdout.splitlines()]
    n_exits = len(net.branches)
    with torch.inference_mode():
        probs = []
        for first in range(0, a.samples, 64):
            probs.append(torch.stack([F.softmax(z, 1) for z in net(x[first:first + 64])], 1))
        probs = torch.cat(probs)  # [samples, exits, K]
    K = probs.shape[2]
    differ, ties, worst = 0, 0, 0.0
    for s, row in enumerate(rows):
        pe = torch.tensor([float(v) for v in row[n_exits:]]).reshape(n_exits, K)
        worst = max(worst, (pe - probs[s]).abs().max().item())
        for e in range(n_exits):
            if int(row[e]) != int(probs[s, e].argmax()):
                top = probs[s, e].topk(2).values
                if (top[0] - top[1]).item() <= 1e-6:
                    ties += 1
                else:
                    differ += 1
    print("predictions, batch 64, %d images x %d exits: %d differ, %d PyTorch-side ties; "
          "largest probability difference %.2e" % (len(rows), n_exits, differ, ties, worst))
    return differ == 0 and len(rows) == a.samples


def speed(a, arch, tensors, threads):
    """Batch-1 and batch-64 forward and batch-128 training, einet and PyTorch taking turns."""
    torch.set_num_threads(threads)
    net = Net([fold(p) for p in build(arch, tensors)]).eval()
    with torch.inference_mode():
        jit = torch.jit.freeze(torch.jit.script(net))
    tparts = build(arch, tensors)
    for p in tparts:
        p.train()
    tnet = nn.ModuleList(tparts)
    opt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    gen = torch.Generator().manual_seed(7)
    x1, x64 = torch.rand(1, *arch["input"], generator=gen), torch.rand(64, *arch["input"], generator=gen)
    xb = torch.rand(128, *arch["input"], generator=gen)
    yb = torch.randint(0, arch["classes"], (128,), generator=gen)
    keys = ["b1_eager", "b1_jit", "b64_eager", "b64_jit", "train"]
    t = {k: [] for k in keys}
    e = {"b1": [], "b64": [], "train": [], "peak": [], "of_peak": []}
    for r in range(a.rounds):
        out = subprocess.run([a.bench_nn, "--json", "--reps", "1", "--threads", str(threads),
                              "--model", a.model] + (["--cpu-time"] if a.cpu_time else []),
                             check=True, capture_output=True, text=True)
        j = json.loads(out.stdout)
        e["b1"].append(j["forward_b1_img_s"])
        e["b64"].append(j["forward_b64_img_s"])
        e["train"].append(j["train_b128_img_s"])
        e["peak"].append(j["sgemm_peak_gflops"])
        e["of_peak"].append(j["forward_b64_of_peak"])
        with torch.inference_mode():
            t["b1_eager"].append(rate(lambda: net(x1), 1, 0.3))
            t["b1_jit"].append(rate(lambda: jit(x1), 1, 0.3))
            t["b64_eager"].append(rate(lambda: net(x64), 64, 0.3))
            t["b64_jit"].append(rate(lambda: jit(x64), 64, 0.3))
        t["train"].append(rate(lambda: torch_train_step(tparts, opt, xb, yb), 128, 0.5))
    T = {k: median(v) for k, v in t.items()}
    E = {k: median(v) for k, v in e.items()}
    b1 = max(T["b1_eager"], T["b1_jit"])
    b64 = max(T["b64_eager"], T["b64_jit"])
    print("\n%d thread(s), medians of %d rounds (images/s of %s time; PyTorch's best mode counts):"
          % (threads, a.rounds, "CPU" if a.cpu_time else "wall"))
    print("  forward batch 1   : einet %7.0f  PyTorch %7.0f (eager %.0f, jit %.0f)  ratio %.2f"
          % (E["b1"], b1, T["b1_eager"], T["b1_jit"], E["b1"] / b1))
    print("  forward batch 64  : einet %7.0f  PyTorch %7.0f (eager %.0f, jit %.0f)  ratio %.2f"
          % (E["b64"], b64, T["b64_eager"], T["b64_jit"], E["b64"] / b64))
    print("  training batch 128: einet %7.0f  PyTorch %7.0f  ratio %.2f"
          % (E["train"], T["train"], E["train"] / T["train"]))
    print("  einet batch-64 forward at %.0f%% of the sgemm peak (%.1f GFLOP/s) measured in the same rounds"
          % (100 * E["of_peak"], E["peak"]))
    return net


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(root, "models/fmnist-8exit.safetensors"))
    ap.add_argument("--threads", default="1", help="one count or a list, e.g. 1,2")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-batch1", action="store_true",
                    help="leave out the per-exit batch-1 comparison against einet eval")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread only: both sides timed on their process's CPU clock "
                         "(bench_nn --cpu-time, time.process_time), which other load on a "
                         "shared machine does not inflate")
    ap.add_argument("--einet", default=os.path.join(root, "build/bin/einet"))
    ap.add_argument("--bench-nn", default=os.path.join(root, "build/bin/bench_nn"))
    a = ap.parse_args()
    threads = [int(v) for v in a.threads.split(",")]
    if a.cpu_time:
        if threads != [1]:
            ap.error("--cpu-time times one thread only")
        global CLOCK
        CLOCK = time.process_time
    meta, tensors = read_safetensors(a.model)
    arch = json.loads(meta["arch"])
    x, labels = load_images(a.samples)
    ok = True
    print("model %s: %d exits" % (arch.get("name", "?"), len(arch["blocks"])))
    for n in threads:
        a.threads_now = n
        torch.set_num_threads(n)
        if not a.skip_batch1:
            print("\n%d thread(s)" % n)
            ok &= batch1(a, arch, [fold(p) for p in build(arch, tensors)], x, labels)
        net = speed(a, arch, tensors, n)
    print()
    ok &= predictions(a, net, x)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
