#!/usr/bin/python3
"""Side-by-side batch-1 latency of einet and PyTorch (Debian's python3-torch, CPU) running
the same multi-exit architecture with the same weights and thread count, plus a check that
both compute the same per-exit predictions.

    /usr/bin/python3 bench/torch_compare.py [--model FILE] [--threads N] [--samples N]

PyTorch is a benchmark-only dependency: nothing in the build or the tests needs it.
Both sides run every conv part and every branch of every sample at batch 1, as the tiers
do; PyTorch gets its batch norms folded into the convs, as einet does, and runs under
torch.inference_mode()."""
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


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(root, "models/fmnist-8exit.safetensors"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--einet", default=os.path.join(root, "build/bin/einet"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    meta, tensors = read_safetensors(a.model)
    arch = json.loads(meta["arch"])
    parts = [fold(p) for p in build(arch, tensors)]
    x, labels = load_images(a.samples)
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
                          "--threads", str(a.threads)], check=True, capture_output=True, text=True)
    ev = json.loads(out.stdout)
    einet_ms = sum(e["conv_ms"] + e["branch_ms"] for e in ev["exits"])
    einet_acc = [e["accuracy"] for e in ev["exits"]]
    flops = sum(e["conv_mflop"] + e["branch_mflop"] for e in ev["exits"])

    print("model %s: %d exits, %.1f MFLOP per image (all exits), %d thread(s), %d test images, batch 1"
          % (arch.get("name", "?"), n_exits, flops, a.threads, a.samples))
    print("exit  einet acc  torch acc  einet conv+branch ms  torch conv+branch ms")
    for k in range(n_exits):
        e = ev["exits"][k]
        print("%4d  %9.4f  %9.4f  %20.4f  %20.4f" % (k + 1, einet_acc[k], torch_acc[k],
              e["conv_ms"] + e["branch_ms"], 1e3 * (conv_t[k] + branch_t[k]) / a.samples))
    print("whole network, batch 1: einet %.3f ms (%.1f GFLOP/s), PyTorch %.3f ms (%.1f GFLOP/s); "
          "PyTorch/einet time ratio %.2f" % (einet_ms, flops / einet_ms, torch_ms, flops / torch_ms,
                                              torch_ms / einet_ms))
    worst = max(abs(u - v) for u, v in zip(einet_acc, torch_acc))
    print("largest per-exit accuracy difference einet vs PyTorch: %.4f" % worst)
    return 0 if worst <= 0.002 else 1


if __name__ == "__main__":
    sys.exit(main())
