#!/usr/bin/env python3
"""scripts/torch_export.py's naming against model files einet wrote itself, with Python's
standard library only (no PyTorch): for each architecture, the einet names and shapes the
exporter maps PyTorch's state dict to must be exactly the tensors in einet's file, and a
file the exporter's writer makes from those tensors must load and evaluate in einet like
the original. Exit 77 (skipped) without the Fashion-MNIST data einet train needs."""
import json
import os
import struct
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "scripts"))
import torch_export as te  # noqa: E402

EINET = os.path.join(os.environ.get("EINET_BIN", os.path.join(SRC, "build", "bin")), "einet")
DATA = "/usr/share/datasets/fashion-mnist"

# Every layer kind and option the exporter maps: grouped, depthwise and strided convs, a
# residual unit nested in another's path, 1x1 conv shortcuts, dropout, the pools, flatten.
TEST_ARCH = {
    "name": "export-test", "input": [1, 28, 28], "classes": 10,
    "blocks": [
        {"conv": [{"type": "conv", "out": 8, "k": 3, "pad": 1}, {"type": "bn"}, {"type": "relu"},
                  {"type": "maxpool", "k": 3, "stride": 2, "pad": 1}],
         "branch": [{"type": "avgpool", "k": 2}, {"type": "flatten"}, {"type": "dropout", "p": 0.3},
                    {"type": "dense", "out": 10}]},
        {"conv": [{"type": "residual",
                   "path": [{"type": "residual",
                             "path": [{"type": "conv", "out": 8, "k": 3, "pad": 1, "groups": 2},
                                      {"type": "bn"}]},
                            {"type": "relu"},
                            {"type": "conv", "out": 16, "k": 3, "stride": 2, "pad": 1, "groups": 8},
                            {"type": "bn"}],
                   "shortcut": [{"type": "conv", "out": 16, "k": 1, "stride": 2}, {"type": "bn"}]},
                  {"type": "relu"}],
         "branch": [{"type": "gap"}, {"type": "dense", "out": 10}]},
    ],
}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def read_tensors(path):
    header, base = read_header(path)
    with open(path, "rb") as f:
        blob = f.read()
    out = []
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out.append((name, v["shape"], blob[base + a:base + b]))
    return header["__metadata__"], out


def check_naming(path):
    header, _ = read_header(path)
    meta = header["__metadata__"]
    assert meta["format"] == "einet-model", meta["format"]
    arch = json.loads(meta["arch"])
    table = te.parameter_table(arch)
    want = {en: shape for _, en, shape, _ in table if en is not None}
    have = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    assert not missing and not unexpected, "%s: exporter names missing from einet's file %s, " \
        "einet's tensors the exporter does not make %s" % (path, missing[:5], unexpected[:5])
    for name, shape in want.items():
        assert have[name] == shape, "%s: %s is %s in einet's file, %s by the exporter" % (
            path, name, have[name], shape)
        assert header[name]["dtype"] == "F32"
    # every batch norm: PyTorch's weight/bias renamed, num_batches_tracked dropped
    bn = [(tn, en) for tn, en, _, is_bn in table if is_bn]
    for tn, en in bn:
        leaf = tn.rsplit(".", 1)[1]
        want_leaf = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean",
                     "running_var": "running_var", "num_batches_tracked": None}[leaf]
        assert (en is None) == (want_leaf is None)
        assert en is None or en.rsplit(".", 1)[1] == want_leaf
        assert te.einet_name(arch, tn) == en
    return arch, len(want), len(bn) // 5


def einet(*args):
    r = subprocess.run([EINET] + list(args), cwd=SRC, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    if r.returncode != 0:
        sys.exit("einet %s: exit %d\n%s" % (" ".join(args), r.returncode, r.stderr))
    return r.stdout


def eval_json(path):
    o = json.loads(einet("eval", "--model", path, "--samples", "40", "--json"))
    return [(e["accuracy"], e["mean_confidence"]) for e in o["exits"]]


def main():
    if not os.path.isdir(DATA):
        print("SKIP: no Fashion-MNIST at %s" % DATA, file=sys.stderr)
        return 77
    # removed when the run ends, passed or failed (it holds two trained models)
    with tempfile.TemporaryDirectory(prefix="einet-test-export-") as tmp:
        return check_all(tmp)


def check_all(tmp):
    files = [os.path.join(SRC, "models", f) for f in
             ("fmnist-8exit.safetensors", "fmnist-resnet-6exit.safetensors")]
    files = [f for f in files if os.path.exists(f)]
    arch_files = [os.path.join(SRC, "configs", "models", "fmnist-resnet-6exit.json"),
                  os.path.join(tmp, "export-test.json")]
    with open(arch_files[1], "w") as f:
        json.dump(TEST_ARCH, f)
    for i, a in enumerate(arch_files):  # einet writes a model of each
        out = os.path.join(tmp, "m%d.safetensors" % i)
        einet("train", "--arch", a, "--epochs", "1", "--limit", "64", "--val", "64", "--batch",
              "32", "--threads", "1", "--out", out)
        files.append(out)
    for path in files:
        arch, n, nbn = check_naming(path)
        # the exporter's writer: einet's tensors under the exporter's names load alike
        meta, tensors = read_tensors(path)
        by_name = dict((nm, (sh, d)) for nm, sh, d in tensors)
        again = os.path.join(tmp, "again.safetensors")
        te.write_safetensors(again, [(en, shape, by_name[en][1]) for _, en, shape, _ in
                                     te.parameter_table(arch) if en is not None], meta)
        a, b = eval_json(path), eval_json(again)
        assert a == b, "%s: einet eval %s, after the exporter's writer %s" % (path, a, b)
        print("ok %s: %d tensors, %d batch norms renamed, evaluation equal" % (
            os.path.relpath(path, SRC) if path.startswith(SRC) else os.path.basename(path), n, nbn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
