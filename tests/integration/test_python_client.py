#!/usr/bin/python3
"""The Python client (clients/python/einet_client) against a real three-tier cluster on
loopback, started with deploy/local.sh: model_info, pipelined submit/await checked against
`einet infer` (the C client) on the same images, result and stats queries, a fault with a
deadline, and every refusal reason: non-finite input, wrong shape, garbage bytes, a missing
version, a REQ socket. Waits are polls with wide limits. Exit 77 (skip, saying why) when
python3-zmq, python3-protobuf or the generated einet_proto modules are missing."""
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("EINET_BIN", os.path.join(SRC, "build", "bin"))
PYDIR = os.environ.get("EINET_PYTHON_DIR", os.path.join(os.path.dirname(BIN), "python"))
sys.path[:0] = [PYDIR, os.path.join(SRC, "clients", "python")]


def skip(why):
    print(f"SKIP: {why}", file=sys.stderr)
    sys.exit(77)


try:
    import zmq
    from einet_proto import messages_pb2 as pb
    from einet_client import Client, EinetError, Refused, Timeout
except ImportError as e:
    skip(f"{e} (apt-get install python3-zmq python3-protobuf protobuf-compiler; build first)")

MODEL = os.environ.get("EINET_TEST_MODEL", os.path.join(SRC, "models", "fmnist-8exit.safetensors"))
DATA = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
for p in ("einet", "einet-node", "einet-coord"):
    if not os.access(os.path.join(BIN, p), os.X_OK):
        skip(f"{BIN}/{p} is not built")
if not os.path.exists(MODEL):
    skip(f"no model file {MODEL}")
if not os.path.exists(DATA):
    skip(f"no Fashion-MNIST test set at {DATA} (apt-get install dataset-fashion-mnist)")

failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures += 1


def images(n):
    """The first n test images as float32 lists, pixel / 255 (as `einet infer` sends)."""
    with gzip.open(DATA) as f:
        f.read(16)
        raw = f.read(784 * n)
    return [[raw[i * 784 + k] / 255.0 for k in range(784)] for i in range(n)]


def write_configs(d, base, cluster="fmnist-3tier"):
    ports = {"5600": base, "5601": base + 1, "5611": base + 2, "5612": base + 3,
             "5620": base, "5621": base + 1, "5631": base + 2, "5632": base + 3}
    os.makedirs(d)
    for name in ("coordinator", "device", "edge", "cloud"):
        lines = []
        for line in open(os.path.join(SRC, "configs", cluster, name + ".ini")):
            if line.startswith("model"):
                line = f"model = {MODEL}\n"
            if line.startswith("predictor"):
                line = line.replace("../../", SRC + "/")
            if line.startswith("heartbeat_timeout_ms"):
                line = "heartbeat_timeout_ms = 3000\n"
            for old, new in ports.items():
                line = line.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
            lines.append(line)
        open(os.path.join(d, name + ".ini"), "w").write("".join(lines))
    return f"tcp://127.0.0.1:{base}"


def poll(what, fn, seconds=60):
    until = time.monotonic() + seconds
    while True:
        v = fn()
        if v or time.monotonic() > until:
            return v
        time.sleep(0.25)


def raw_exchange(ep, sock_type, frames, timeout_ms=20000):
    """Sends frames on a fresh socket; the reply's Envelope (None when nothing came)."""
    s = zmq.Context.instance().socket(sock_type)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    s.send_multipart(frames)
    env = None
    if s.poll(timeout_ms):
        env = pb.Envelope()
        env.ParseFromString(s.recv_multipart()[-1])
    s.close(0)
    return env


def test_model_info(c):
    info = c.model_info()
    check(info["protocol_version"] == pb.PROTOCOL_VERSION == 1, f"protocol version {info['protocol_version']}")
    check(info["model"] == "fmnist-8exit", f"model name {info['model']!r}")
    check(info["input_shape"] == [1, 28, 28], f"input shape {info['input_shape']}")
    check(info["classes"] == 10, f"classes {info['classes']}")
    check(len(info["class_names"]) == 10 and info["class_names"][1] == "Trouser"
          and info["class_names"][9] == "Ankle boot", f"class names {info['class_names']}")
    want = ["device"] * 2 + ["edge"] * 3 + ["cloud"] * 3
    tiers = poll("exit tiers", lambda: [e["tier"] for e in c.model_info()["exits"]] == want and want)
    info = c.model_info()
    check([e["exit"] for e in info["exits"]] == list(range(1, 9)) and tiers == want,
          f"exits and their tiers {info['exits']}")


def reference(ep, tmp, n):
    """`einet infer` (the C client) on the first n images: index -> answer."""
    out = subprocess.run([os.path.join(BIN, "einet"), "infer", "--coordinator", ep, "--count",
                          str(n), "--json", "--quiet", "--timeout-ms", "20000"],
                         capture_output=True, text=True, timeout=300)
    check(out.returncode == 0, f"einet infer exit {out.returncode} {out.stderr.strip()}")
    return {a["index"]: a for a in map(json.loads, out.stdout.splitlines())}


def test_submit_await(c, ep, tmp):
    n = 30
    ref = reference(ep, tmp, n)
    imgs = images(n)
    handles = [c.submit(img, label=None, client_id=i) for i, img in enumerate(imgs)]
    answers = [c.await_answer(h, timeout_ms=60000) for h in handles]
    check(all(a["status"] == "complete" for a in answers),
          f"{n} answers, statuses {sorted(set(a['status'] for a in answers))}")
    same = [i for i in range(n) if ref[i]["status"] == "complete" and answers[i]["status"] == "complete"]
    agree = [i for i in same if answers[i]["class"] == ref[i]["class"] and answers[i]["exit"] == ref[i]["exit"]
             and abs(answers[i]["confidence"] - ref[i]["confidence"]) < 1e-5]
    check(len(same) > 0 and agree == same,
          f"class, exit and confidence equal to einet infer's on {len(agree)} of {len(same)} complete answers")
    check([a["client_id"] for a in answers] == list(range(n)), "client ids echoed in order of handles")
    r = c.result(answers[3]["request_id"])
    check(r["found"] and not r["pending"] and r["answer"]["class"] == answers[3]["class"]
          and r["answer"]["status"] == "complete", f"result of request {answers[3]['request_id']}")
    check(not c.result(10 ** 12)["found"], "an unknown request id is not found")
    s = c.stats()
    check(s["requests"] == 2 * n and s["by_status"]["complete"] >= n,
          f"stats: {s['requests']} requests (the C client's {n} and these {n})")
    return imgs


def test_deadline_and_fault(c, imgs):
    c.fault(link="edge-cloud", delay_ms=1500)
    a = c.infer(imgs[0], deadline_ms=200)
    check(a["status"] == "deadline" and a["exit"] <= 5 and a["tier"] != "cloud",
          f"edge-cloud delayed 1.5 s, deadline 200 ms: {a['status']} from exit {a['exit']} ({a['tier']})")
    c.fault(link="edge-cloud", clear=True)
    got = poll("complete after clear", lambda: c.infer(imgs[1], deadline_ms=None)["status"] == "complete")
    check(bool(got), "complete again once the fault is cleared")
    try:
        c.fault(link="sideways")
        check(False, "a bad link name is refused")
    except ValueError:
        check(True, "a bad link name is refused")


def test_stop_rule(c, ep, imgs):
    """A request's stop rule: answered `early` where `einet infer --stop` with the same rule
    answers, same exit, tier, class and confidence; `none` goes to the final exit."""
    n = 10
    for rule in ("confidence:0.9", "entropy:0.2"):
        rc, ref, err = einet_infer(ep, "--count", str(n), "--stop", rule)
        check(rc == 0 and len(ref) == n, f"einet infer --stop {rule}: exit {rc} {err}")
        ref = {a["index"]: a for a in ref}
        answers = [c.infer(imgs[i], stop=rule) for i in range(n)]
        same = [i for i in range(n) if i in ref and answers[i]["status"] == ref[i]["status"]
                and answers[i]["exit"] == ref[i]["exit"] and answers[i]["tier"] == ref[i]["tier"]
                and answers[i]["class"] == ref[i]["class"]
                and abs(answers[i]["confidence"] - ref[i]["confidence"]) < 1e-5]
        early = sum(a["status"] == "early" for a in answers)
        check(len(same) == n and early > 0,
              f"stop {rule}: {early} of {n} early, {len(same)} of {n} as einet infer --stop")
    a = c.infer(imgs[0], stop="none")
    check(a["status"] == "complete" and a["exit"] == 8, f"stop none: {a['status']} at exit {a['exit']}")
    for bad in ("sometimes:0.5", "confidence:1.5", "entropy:x", "none:0.1"):
        try:
            c.submit(imgs[0], stop=bad)
            check(False, f"stop rule '{bad}' is refused")
        except ValueError as e:
            check(bad.split(":")[0] in str(e) or "threshold" in str(e), f"stop rule '{bad}': {e}")


def test_refusals(c, ep):
    nan = [float("nan")] * 784
    a = c.infer(nan)
    check(a["status"] == "rejected" and "non-finite" in a["reason"],
          f"all-NaN image: {a['status']}: {a['reason']}")
    inf = [0.0] * 783 + [math.inf]
    a = c.infer(inf)
    check(a["status"] == "rejected" and "non-finite" in a["reason"] and "783" in a["reason"],
          f"one infinity: {a['status']}: {a['reason']}")
    a = c.infer([0.5] * 729, shape=[1, 1, 27, 27])
    check(a["status"] == "rejected" and a["reason"].startswith("request.input"),
          f"27x27 image: {a['status']}: {a['reason']}")
    try:
        c.infer([0.5] * 100, shape=[1, 1, 28, 28])
        check(False, "a tensor frame of 100 floats for [1,1,28,28] is refused")
    except Refused as e:
        check(e.code == pb.ERROR_SHAPE or e.code == pb.ERROR_FORMAT,
              f"a tensor frame of 100 floats for [1,1,28,28]: Refused {e.code_name}: {e.message}")
    env = raw_exchange(ep, zmq.DEALER, [bytes([0xff, 0xff, 0xff, 0x07, 0x13])])
    check(env is not None and env.WhichOneof("body") == "error"
          and env.error.code == pb.ERROR_FORMAT and "malformed" in env.error.message,
          f"garbage bytes: {env and pb.ErrorCode.Name(env.error.code)}: {env and env.error.message}")
    q = pb.Envelope()
    q.seq = 7
    q.stats_query.reset = False
    env = raw_exchange(ep, zmq.DEALER, [q.SerializeToString()])
    check(env is not None and env.error.code == pb.ERROR_VERSION and "missing" in env.error.message
          and env.reply_to == 7 and env.error.version == pb.PROTOCOL_VERSION,
          f"no version: {env and pb.ErrorCode.Name(env.error.code)}: {env and env.error.message}")
    q.version = pb.PROTOCOL_VERSION
    env = raw_exchange(ep, zmq.REQ, [q.SerializeToString()])
    check(env is not None and env.error.code == pb.ERROR_UNSUPPORTED and "DEALER" in env.error.message,
          f"REQ socket: {env and pb.ErrorCode.Name(env.error.code)}: {env and env.error.message}")
    ack = pb.Envelope()
    ack.version = pb.PROTOCOL_VERSION
    ack.ack.ok = True
    env = raw_exchange(ep, zmq.DEALER, [ack.SerializeToString()])
    check(env is not None and env.error.code == pb.ERROR_FORMAT
          and "not a message the clients socket takes" in env.error.message,
          f"an ack sent to the coordinator: {env and env.error.message}")
    s = c.stats()
    check(s["bad_messages"] == 5, f"stats count {s['bad_messages']} refused messages (5 sent)")


def write_png(path, w, h, pixels, channels=1):
    """An 8-bit PNG (gray, or RGB for channels 3) of w x h pixels (row-major bytes)."""
    stride = w * channels
    raw = b"".join(b"\x00" + bytes(pixels[y * stride:(y + 1) * stride]) for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if channels == 1 else 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def write_npy(path, values, shape, descr="<f4"):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    fmt = {"<f4": "<%df", "<f8": "<%dd"}[descr] % len(values)
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
                + struct.pack(fmt, *values))


def einet_infer(ep, *args):
    out = subprocess.run([os.path.join(BIN, "einet"), "infer", "--coordinator", ep, "--json",
                          "--quiet", "--timeout-ms", "20000", *args],
                         capture_output=True, text=True, timeout=300)
    return out.returncode, [json.loads(l) for l in out.stdout.splitlines()], out.stderr.strip()


def test_infer_input(c, ep, tmp):
    """einet infer --input: PNG and .npy files give the answers the Python client gets for
    the same pixels; bad files are one clear error each and nothing is sent."""
    with gzip.open(DATA) as f:
        f.read(16)
        raw = f.read(784 * 3)
    px = [raw[i * 784:(i + 1) * 784] for i in range(3)]
    gray, npy, rgb = (os.path.join(tmp, n) for n in ("gray.png", "img.npy", "rgb.png"))
    write_png(gray, 28, 28, px[0])
    write_npy(npy, [b / 255.0 for b in px[1]], (1, 28, 28))
    write_png(rgb, 28, 28, bytes(v for b in px[2] for v in (b, b, b)), channels=3)
    rc, answers, err = einet_infer(ep, "--input", gray, npy, rgb)
    check(rc == 0 and [a["input"] for a in answers if True] and len(answers) == 3,
          f"einet infer --input gray.png img.npy rgb.png: exit {rc}, {len(answers)} answers {err}")
    by_index = {a["index"]: a for a in answers}
    for i in range(3):
        mine = c.infer([b / 255.0 for b in px[i]])
        theirs = by_index.get(i, {})
        same = (theirs.get("status") == mine["status"] == "complete" and theirs.get("class") == mine["class"]
                and theirs.get("exit") == mine["exit"])
        if i < 2:
            same = same and abs(theirs.get("confidence", -1) - mine["confidence"]) < 1e-5
        check(same, f"input {i} ({os.path.basename(theirs.get('input', '?'))}): class "
                    f"{theirs.get('class')} exit {theirs.get('exit')}, the Python client's {mine['class']} {mine['exit']}")
    before = c.stats()["requests"]
    big = os.path.join(tmp, "big.png")
    write_png(big, 32, 32, bytes((x * 7) % 256 for x in range(32 * 32)))
    f64 = os.path.join(tmp, "f64.npy")
    write_npy(f64, [0.5] * 784, (28, 28), descr="<f8")
    small = os.path.join(tmp, "small.npy")
    write_npy(small, [0.5] * 729, (27, 27))
    text = os.path.join(tmp, "notes.txt")
    open(text, "w").write("not an image\n")
    nan = os.path.join(tmp, "nan.npy")
    write_npy(nan, [0.0] * 100 + [float("nan")] + [0.0] * 683, (28, 28))
    cases = [(big, "32x32 pixels, the model takes 28x28"), (f64, "dtype '<f8', expected float32"),
             (small, "shape (27, 27), the model takes (1, 28, 28)"),
             (text, "not a PNG image or a .npy array"), (nan, "non-finite value (nan) at index 100"),
             (os.path.join(tmp, "missing.png"), "cannot open")]
    for path, want in cases:
        rc, answers, err = einet_infer(ep, "--input", gray, path)
        check(rc == 2 and not answers and want in err and path in err,
              f"{os.path.basename(path)}: exit {rc}: {err}")
    check(c.stats()["requests"] == before, "nothing was sent for the bad files")
    rc, answers, err = einet_infer(ep, "--resize", "--input", big)
    check(rc == 0 and len(answers) == 1 and answers[0]["status"] == "complete",
          f"--resize: the 32x32 image answered {answers and answers[0]['status']} {err}")


def test_hand_back_reason(tmp, base):
    """A node's hand-back carries its reason: a one-tier pipeline whose device is this test
    (a DEALER with routing id "device" on the coordinator's nodes socket) hands a task back
    with "compute failed" and then "full"; the client gets rejected with that reason, and
    an overload for "full"."""
    cfg = os.path.join(tmp, "one.ini")
    open(cfg, "w").write(f"[coordinator]\nclients = tcp://127.0.0.1:{base + 8}\n"
                         f"nodes = tcp://127.0.0.1:{base + 9}\ntiers = device\n"
                         f"heartbeat_timeout_ms = 3000\nmodel = {MODEL}\n")
    log = open(os.path.join(tmp, "one.log"), "w")
    coord = subprocess.Popen([os.path.join(BIN, "einet-coord"), "--config", cfg], stderr=log,
                             env=dict(os.environ, EINET_DATA_DIR="/nonexistent"))
    node = zmq.Context.instance().socket(zmq.DEALER)
    node.setsockopt(zmq.LINGER, 0)
    node.setsockopt(zmq.ROUTING_ID, b"device")
    node.connect(f"tcp://127.0.0.1:{base + 9}")
    seq = [0]

    def send(env):
        seq[0] += 1
        env.version, env.seq = pb.PROTOCOL_VERSION, seq[0]
        node.send(env.SerializeToString())

    def heartbeat():
        hb = pb.Envelope()
        hb.heartbeat.tier, hb.heartbeat.seq = pb.TIER_DEVICE, seq[0] + 1
        hb.heartbeat.first_block, hb.heartbeat.last_block = 1, 8
        send(hb)

    def next_task(seconds=60):
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            heartbeat()
            if node.poll(100):
                env = pb.Envelope()
                env.ParseFromString(node.recv_multipart()[0])
                if env.WhichOneof("body") == "task":
                    return env.task.request_id
        return None

    try:
        with Client(f"tcp://127.0.0.1:{base + 8}", timeout_ms=20000) as c:
            poll("device up", lambda: (heartbeat(), c.stats()["nodes"][0]["healthy"])[1])
            for reason, want in (("compute failed", "device: compute failed"),
                                 ("full", "busy: device holds max_inflight requests")):
                h = c.submit([0.5] * 784, shape=[1, 1, 28, 28])
                rid = next_task()
                back = pb.Envelope()
                back.cancel.request_id = rid or 0
                back.cancel.reason = reason
                send(back)
                a = c.await_answer(h, timeout_ms=60000)
                check(rid is not None and a["status"] == "rejected" and a["reason"] == want,
                      f"hand-back '{reason}': {a['status']}: {a['reason']}")
    finally:
        node.close(0)
        coord.terminate()
        coord.wait(timeout=60)
        log.close()


def test_keys(tmp, base):
    """The client on the cluster with keys (configs/fmnist-3tier-secure, CURVE everywhere):
    with a client key it is served and may not inject faults; with the operator key it may;
    without keys nothing gets through."""
    conf = os.path.join(tmp, "secure")
    ep = write_configs(conf, base, "fmnist-3tier-secure")
    env = dict(os.environ, EINET_BIN=BIN, EINET_RUN_DIR=os.path.join(tmp, "run-secure"))
    local = os.path.join(SRC, "deploy", "local.sh")
    up = subprocess.run([local, "up", conf], env=env, capture_output=True, text=True, timeout=300)
    keys = os.path.join(conf, "keys")
    try:
        check(up.returncode == 0, f"deploy/local.sh up (with keys) {up.stderr.strip()[-300:]}")
        if up.returncode != 0:
            return
        server = os.path.join(keys, "coordinator.key")
        with Client(ep, timeout_ms=20000, key=os.path.join(keys, "client.key_secret"),
                    server_key=server) as c:
            a = c.infer(images(1)[0])
            check(a["status"] == "complete", f"with a client key: {a['status']} from exit {a['exit']}")
            check(c.model_info()["model"] == "fmnist-8exit", "with a client key: model_info")
            try:
                c.fault(link="edge-cloud", clear=True)
                check(False, "a client key may not inject faults")
            except Refused as e:
                check("operator" in e.message, f"a client key may not inject faults: {e.message}")
        with Client(ep, timeout_ms=20000, key=os.path.join(keys, "operator.key_secret"),
                    server_key=server) as c:
            check("edge" in c.fault(link="edge-cloud", clear=True), "the operator key may")
        with Client(ep, timeout_ms=3000) as c:
            try:
                c.stats()
                check(False, "without keys nothing gets through")
            except Timeout:
                check(True, "without keys nothing gets through (no reply in 3 s)")
        try:
            Client(ep, key=os.path.join(keys, "client.key"), server_key=server)
            check(False, "a public certificate given as the secret key is refused")
        except EinetError as e:
            check("secret certificate" in str(e), f"a public certificate as key: {e}")
    finally:
        subprocess.run([local, "down", conf], env=env, capture_output=True, timeout=120)


def main():
    # Below 32768, where the ephemeral ports of outgoing connections begin.
    base = 20000 + (os.getpid() % 1200) * 10
    with tempfile.TemporaryDirectory(prefix="einet-pyclient-") as tmp:
        conf = os.path.join(tmp, "conf")
        ep = write_configs(conf, base)
        env = dict(os.environ, EINET_BIN=BIN, EINET_RUN_DIR=os.path.join(tmp, "run"))
        local = os.path.join(SRC, "deploy", "local.sh")
        up = subprocess.run([local, "up", conf], env=env, capture_output=True, text=True, timeout=300)
        try:
            if up.returncode != 0:
                print(up.stdout, up.stderr, file=sys.stderr)
                check(False, "deploy/local.sh up")
                return 1
            with Client(ep, timeout_ms=20000) as c:
                test_model_info(c)
                imgs = test_submit_await(c, ep, tmp)
                test_refusals(c, ep)
                test_infer_input(c, ep, tmp)
                test_stop_rule(c, ep, imgs)
                test_deadline_and_fault(c, imgs)
            test_hand_back_reason(tmp, base)
        finally:
            subprocess.run([local, "down", conf], env=env, capture_output=True, timeout=120)
        test_keys(tmp, base + 20)
    print("PASS" if failures == 0 else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
