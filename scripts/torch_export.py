#!/usr/bin/env python3
"""Moves a multi-exit model from PyTorch into einet: builds the PyTorch model an einet
architecture file describes, and writes a trained one as an einet model file (safetensors).

Only the user's side needs PyTorch; einet's build and tests never do. The naming part
(which einet tensor each PyTorch state-dict entry becomes) is plain Python, so the suite
checks it against model files einet wrote itself (tests/test_torch_export.py).

    # an untrained PyTorch model of an architecture, to train in PyTorch:
    import torch_export as te
    arch = te.load_arch("configs/models/fmnist-resnet-6exit.json")
    model = te.build_model(arch)            # torch.nn.Module; model(x) -> list of logits
    ...train...
    te.export(model, "configs/models/fmnist-resnet-6exit.json", "my.safetensors")

    # or from the command line, a state dict saved with torch.save(model.state_dict(), f):
    scripts/torch_export.py --arch configs/models/fmnist-resnet-6exit.json \
        --state-dict trained.pt --out my.safetensors

Naming (docs/nn.md): the model is a ModuleList `blocks` of modules with two Sequentials,
`conv` and `branch`, indexed like the architecture file's layers, so PyTorch's names are
einet's: blocks.<k>.<conv|branch>.<i>.<param>. A residual layer is a module with the
Sequentials `path` and `shortcut` (empty: the identity): blocks.<k>.conv.<i>.path.<j>.weight.
Batch norms are renamed weight -> gamma and bias -> beta (running_mean and running_var
keep their names) and num_batches_tracked, an int64 counter einet has no use for, is
dropped. Every tensor is written as little-endian float32.
"""
import argparse
import json
import struct
import sys

# ---- naming: the standard library only ----

BN_RENAME = {"weight": "gamma", "bias": "beta"}
DROPPED = ("num_batches_tracked",)


def load_arch(path):
    with open(path) as f:
        return json.load(f)


def _window_out(n, k, stride, pad):
    return (n + 2 * pad - k) // stride + 1


def _chain(layers, shape, prefix, out):
    """Adds (torch_name, einet_name, shape, is_bn) of every parameter of a chain of layers
    on input shape [c, h, w] to out; returns the chain's output shape."""
    c, h, w = shape
    for i, l in enumerate(layers):
        t = l["type"]
        p = "%s.%d." % (prefix, i)
        if t == "conv":
            k, s, pad, g = l["k"], l.get("stride", 0) or 1, l.get("pad", 0), l.get("groups", 0) or 1
            out.append((p + "weight", p + "weight", [l["out"], c // g, k, k], False))
            out.append((p + "bias", p + "bias", [l["out"]], False))
            c, h, w = l["out"], _window_out(h, k, s, pad), _window_out(w, k, s, pad)
        elif t == "bn":
            for tn in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                out.append((p + tn, None if tn in DROPPED else p + BN_RENAME.get(tn, tn),
                            [] if tn in DROPPED else [c], True))
        elif t == "dense":
            out.append((p + "weight", p + "weight", [l["out"], c * h * w], False))
            out.append((p + "bias", p + "bias", [l["out"]], False))
            c, h, w = l["out"], 1, 1
        elif t == "maxpool":
            k, pad = l["k"], l.get("pad", 0)
            s = l.get("stride", 0) or k
            h, w = _window_out(h, k, s, pad), _window_out(w, k, s, pad)
        elif t == "avgpool":
            if l.get("size", 0):
                h = w = l["size"]
            else:
                k = l["k"]
                s = l.get("stride", 0) or k
                h, w = _window_out(h, k, s, 0), _window_out(w, k, s, 0)
        elif t == "gap":
            h = w = 1
        elif t == "flatten":
            c, h, w = c * h * w, 1, 1
        elif t == "residual":
            a = _chain(l["path"], [c, h, w], p + "path", out)
            b = _chain(l.get("shortcut", []), [c, h, w], p + "shortcut", out)
            if a != b:
                raise ValueError("%s: the path gives %s but the shortcut %s" % (p[:-1], a, b))
            c, h, w = a
        elif t in ("relu", "dropout"):
            pass
        else:
            raise ValueError("%s: unknown layer type %r" % (p[:-1], t))
    return [c, h, w]


def parameter_table(arch):
    """[(torch_name, einet_name or None when dropped, einet shape, is_bn)] of every entry of
    the state dict of build_model(arch), in order."""
    out, shape = [], list(arch["input"])
    for k, b in enumerate(arch["blocks"]):
        feat = _chain(b["conv"], shape, "blocks.%d.conv" % k, out)
        _chain(b["branch"], feat, "blocks.%d.branch" % k, out)
        shape = feat
    return out


def einet_name(arch, torch_name):
    """The einet tensor a state-dict entry becomes, or None when it is dropped."""
    for tn, en, _, _ in parameter_table(arch):
        if tn == torch_name:
            return en
    raise KeyError("%s is not a parameter of this architecture" % torch_name)


def write_safetensors(path, tensors, metadata):
    """tensors: [(name, shape, little-endian float32 bytes)]; metadata: {str: str}."""
    header, off = {"__metadata__": metadata}, 0
    for name, shape, data in tensors:
        n = 1
        for d in shape:
            n *= d
        if len(data) != 4 * n:
            raise ValueError("%s: %d bytes for shape %s" % (name, len(data), shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, data in tensors:
            f.write(data)


# ---- PyTorch: only here on ----

def _torch():
    try:
        import torch
        return torch
    except ImportError:
        sys.exit("torch_export: PyTorch is needed for this (pip install torch); einet itself "
                 "does not need it")


def build_model(arch):
    """The PyTorch multi-exit model of an architecture (dict): forward(x) gives the list of
    every exit's logits."""
    torch = _torch()
    nn = torch.nn

    class Dense(nn.Linear):  # einet's dense flattens its input
        def forward(self, x):
            return super().forward(x.flatten(1))

    class Residual(nn.Module):
        def __init__(self, path, shortcut):
            super().__init__()
            self.path, self.shortcut = path, shortcut  # an empty Sequential is the identity

        def forward(self, x):
            return self.path(x) + self.shortcut(x)

    def chain(layers, shape):
        mods, (c, h, w) = [], shape
        for l in layers:
            t = l["type"]
            if t == "conv":
                k, s, pad = l["k"], l.get("stride", 0) or 1, l.get("pad", 0)
                mods.append(nn.Conv2d(c, l["out"], k, s, pad, groups=l.get("groups", 0) or 1))
            elif t == "bn":
                mods.append(nn.BatchNorm2d(c, eps=1e-5, momentum=0.1))
            elif t == "relu":
                mods.append(nn.ReLU())
            elif t == "dropout":
                mods.append(nn.Dropout(l["p"]))
            elif t == "maxpool":
                mods.append(nn.MaxPool2d(l["k"], l.get("stride", 0) or l["k"], l.get("pad", 0)))
            elif t == "avgpool":
                mods.append(nn.AdaptiveAvgPool2d(l["size"]) if l.get("size", 0) else
                            nn.AvgPool2d(l["k"], l.get("stride", 0) or l["k"]))
            elif t == "gap":
                mods.append(nn.AdaptiveAvgPool2d(1))
            elif t == "flatten":
                mods.append(nn.Flatten())
            elif t == "dense":
                mods.append(Dense(c * h * w, l["out"]))
            elif t == "residual":
                p, _ = chain(l["path"], [c, h, w])
                q, _ = chain(l.get("shortcut", []), [c, h, w])
                mods.append(Residual(p, q))
            c, h, w = _chain([l], [c, h, w], "x", [])
        return nn.Sequential(*mods), [c, h, w]

    class Block(nn.Module):
        def __init__(self, conv, branch):
            super().__init__()
            self.conv, self.branch = conv, branch

    class MultiExit(nn.Module):
        def __init__(self):
            super().__init__()
            blocks, shape = [], list(arch["input"])
            for b in arch["blocks"]:
                conv, shape2 = chain(b["conv"], shape)
                branch, _ = chain(b["branch"], shape2)
                blocks.append(Block(conv, branch))
                shape = shape2
            self.blocks = nn.ModuleList(blocks)

        def forward(self, x):
            exits = []
            for b in self.blocks:
                x = b.conv(x)
                exits.append(b.branch(x))
            return exits

    return MultiExit()


def export(model_or_state, arch_path, out_path, info=None):
    """Writes a PyTorch model (or its state dict) of the architecture file arch_path as an
    einet model file. Every parameter must be there with its shape; nothing else may."""
    torch = _torch()
    with open(arch_path) as f:
        arch_text = f.read()
    arch = json.loads(arch_text)
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    table = parameter_table(arch)
    known = {tn for tn, _, _, _ in table}
    extra = sorted(set(state) - known)
    if extra:
        raise ValueError("not parameters of %s: %s" % (arch_path, ", ".join(extra[:5])))
    tensors = []
    for tn, en, shape, _ in table:
        if en is None:
            continue
        if tn not in state:
            raise ValueError("%s: missing from the state dict" % tn)
        t = state[tn].detach().to("cpu", torch.float32).contiguous()
        if list(t.shape) != shape:
            raise ValueError("%s: shape %s, einet expects %s" % (tn, list(t.shape), shape))
        tensors.append((en, shape, t.numpy().astype("<f4").tobytes()))
    meta = {"format": "einet-model", "version": "1", "arch": arch_text,
            "info": json.dumps(info or {"exported_by": "scripts/torch_export.py"})}
    write_safetensors(out_path, tensors, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, help="einet architecture file (JSON)")
    ap.add_argument("--state-dict", help="torch.save()d state dict of build_model(arch); "
                    "without it the untrained model's initial weights are written")
    ap.add_argument("--out", required=True, help="einet model file to write")
    a = ap.parse_args()
    torch = _torch()
    model = build_model(load_arch(a.arch))
    if a.state_dict:
        model.load_state_dict(torch.load(a.state_dict, map_location="cpu"))
    export(model, a.arch, a.out)
    print("wrote %s" % a.out)


if __name__ == "__main__":
    main()
