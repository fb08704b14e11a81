"""The client: one ZeroMQ DEALER socket to the coordinator's `clients` endpoint, speaking
the Envelope protocol of proto/messages.proto (docs/protocol.md) through the protobuf
modules generated at build time into the `einet_proto` package (never committed).

Every call that expects a reply waits for the message whose reply_to is its request's seq;
answers of submitted requests that arrive meanwhile are kept for await_answer(), so
submit/await pipelines and queries can be mixed freely on one client."""
import array
import itertools
import re
import sys
import time

import zmq

from einet_proto import messages_pb2 as pb

PROTOCOL_VERSION = pb.PROTOCOL_VERSION

STATUS_NAMES = {pb.STATUS_NONE: "none", pb.STATUS_COMPLETE: "complete",
                pb.STATUS_DEADLINE: "deadline", pb.STATUS_LINK: "link",
                pb.STATUS_REJECTED: "rejected", pb.STATUS_DEVICE_EE: "device-ee",
                pb.STATUS_SHUTDOWN: "shutdown", pb.STATUS_EARLY: "early"}
TIER_NAMES = {pb.TIER_NONE: "none", pb.TIER_DEVICE: "device", pb.TIER_EDGE: "edge",
              pb.TIER_CLOUD: "cloud"}
TIERS = {v: k for k, v in TIER_NAMES.items()}
LINKS = {"device-edge": pb.LINK_DEVICE_EDGE, "edge-cloud": pb.LINK_EDGE_CLOUD}


STOP_KINDS = {"none": pb.STOP_NONE, "confidence": pb.STOP_CONFIDENCE,
              "entropy": pb.STOP_ENTROPY, "einet": pb.STOP_EINET}


def parse_stop(rule):
    """A stop rule as `einet infer --stop` takes it: (kind, threshold). ValueError names
    what is wrong."""
    kind, _, value = str(rule).partition(":")
    if kind not in STOP_KINDS:
        raise ValueError(f"stop rule '{rule}': unknown kind '{kind}' (none, confidence:T, "
                         "entropy:T, einet:A)")
    if kind == "none":
        if value:
            raise ValueError(f"stop rule '{rule}': none takes no threshold")
        return STOP_KINDS[kind], 0.0
    try:
        t = float(value)
    except ValueError:
        raise ValueError(f"stop rule '{rule}': '{value}' is not a number") from None
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"stop rule '{rule}': threshold {t} is not in [0, 1]")
    return STOP_KINDS[kind], t


class EinetError(Exception):
    """Anything that went wrong talking to the coordinator."""


class Timeout(EinetError):
    """No reply within the timeout."""


class Refused(EinetError):
    """The coordinator refused a message with an Error: code is an ErrorCode value,
    code_name its name ("ERROR_FORMAT"), message its text."""

    def __init__(self, code, message):
        self.code = code
        self.code_name = pb.ErrorCode.Name(code) if code in pb.ErrorCode.values() else str(code)
        self.message = message
        super().__init__(f"refused ({self.code_name}): {message}")


def read_cert(path, secret=False):
    """The Z85 public key (and, with secret, the secret key) of a CZMQ certificate file as
    `einet keygen` writes them (docs/security.md)."""
    with open(path) as f:
        text = f.read()
    keys = dict(re.findall(r'^\s*(public-key|secret-key)\s*=\s*"([^"]{40})"', text, re.M))
    if "public-key" not in keys or (secret and "secret-key" not in keys):
        what = "secret certificate (NAME.key_secret)" if secret else "certificate"
        raise EinetError(f"{path}: not a CURVE {what}")
    return keys["public-key"].encode(), keys.get("secret-key", "").encode()


def _answer_dict(a):
    d = {"request_id": a.request_id, "client_id": a.client_id,
         "status": STATUS_NAMES.get(a.status, str(a.status)), "reason": a.reason,
         "exit": a.exit, "tier": TIER_NAMES.get(a.tier, str(a.tier)), "class": a.class_id,
         "confidence": a.confidence, "latency_ms": a.latency_us / 1000.0,
         "probs": list(a.probs)}
    if a.HasField("label"):
        d["label"] = a.label
    return d


def _tensor_bytes(image):
    """float32 little-endian bytes of image: bytes as they are, an object with tobytes()
    (a numpy array, converted to float32 first), or any flat iterable of numbers."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if hasattr(image, "astype") and hasattr(image, "tobytes"):
        return image.astype("<f4").tobytes()
    a = array.array("f", (float(x) for x in image))
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


class Client:
    """A connection to one coordinator. timeout_ms bounds every wait for a reply (queries)
    and, in await_answer(), for an answer after its deadline (or after sending). On a
    cluster with keys (docs/security.md) give key, your secret certificate
    (`einet keygen --out DIR NAME` makes DIR/NAME.key_secret), and server_key, the
    coordinator's public certificate: the connection then runs CURVE."""

    def __init__(self, endpoint, timeout_ms=5000, context=None, key=None, server_key=None):
        if (key is None) != (server_key is None):
            raise ValueError("key and server_key go together (a cluster with keys needs both)")
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if key is not None:
            public, secret = read_cert(key, secret=True)
            self._sock.curve_publickey = public
            self._sock.curve_secretkey = secret
            self._sock.curve_serverkey = read_cert(server_key)[0]
        self._sock.connect(endpoint)
        self._seq = itertools.count(1)
        self._pending = {}   # seq of a request -> its deadline_ms (None) while unanswered
        self._answers = {}   # seq -> answer dict, arrived but not yet awaited
        self._replies = {}   # seq -> Envelope, replies to queries not yet taken
        self._ids = {}       # seq of a request -> the id its `accepted` gave
        self._shape = None

    def close(self):
        self._sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- sending and receiving ----

    def _send(self, env, tensor=None):
        env.version = PROTOCOL_VERSION
        env.seq = next(self._seq)
        frames = [env.SerializeToString()]
        if tensor is not None:
            frames.append(tensor)
        self._sock.send_multipart(frames, copy=True)
        return env.seq

    def _recv_one(self, timeout_ms):
        if not self._sock.poll(max(0, int(timeout_ms))):
            return False
        frames = self._sock.recv_multipart()
        env = pb.Envelope()
        env.ParseFromString(frames[0])
        body = env.WhichOneof("body")
        if body in ("answer", "error") and env.reply_to in self._pending:
            del self._pending[env.reply_to]  # a request is answered, or refused outright
            self._ids.pop(env.reply_to, None)
            self._answers[env.reply_to] = (_answer_dict(env.answer) if body == "answer"
                                           else Refused(env.error.code, env.error.message))
        elif body == "accepted":
            if env.reply_to in self._pending:  # the acknowledgement: the request's id
                self._ids[env.reply_to] = env.accepted.request_id
        else:
            self._replies[env.reply_to] = env
        return True

    def _wait(self, have, timeout_ms):
        until = time.monotonic() + timeout_ms / 1000.0
        while not have():
            left = (until - time.monotonic()) * 1000.0
            if left <= 0:
                return False
            self._recv_one(left)
        return True

    def _query(self, env, reply_body):
        what = env.WhichOneof("body")
        seq = self._send(env)
        if not self._wait(lambda: seq in self._replies, self.timeout_ms):
            raise Timeout(f"no reply to {what} from {self.endpoint} within {self.timeout_ms} ms")
        rep = self._replies.pop(seq)
        body = rep.WhichOneof("body")
        if body == "error":
            raise Refused(rep.error.code, rep.error.message)
        if body != reply_body:
            raise EinetError(f"{what} answered with {body}, not {reply_body}")
        return getattr(rep, reply_body)

    # ---- requests and answers ----

    def submit(self, image, deadline_ms=None, label=None, client_id=0, shape=None, stop=None):
        """Sends one request and returns its handle (for await_answer). image: float32
        values of one input (see _tensor_bytes); shape defaults to the model's
        [1, C, H, W] (asked once with model_info). deadline_ms: the coordinator answers
        `deadline` with the deepest exit so far when it passes. label: the true class,
        for the coordinator's accuracy statistics. stop: the request's stop rule, as
        `einet infer --stop` spells it ("none", "confidence:T", "entropy:T", "einet:A");
        None: the cluster's rule (docs/elastic.md)."""
        if shape is None:
            if self._shape is None:
                self._shape = [1] + list(self.model_info()["input_shape"])
            shape = self._shape
        env = pb.Envelope()
        r = env.request
        r.client_id = client_id
        r.input.shape.extend(shape)
        r.input.dtype = 0
        if deadline_ms is not None:
            r.deadline_ms = int(deadline_ms)
        if label is not None:
            r.label = int(label)
        if stop is not None:
            r.stop.kind, r.stop.threshold = parse_stop(stop)
        seq = self._send(env, _tensor_bytes(image))
        self._pending[seq] = deadline_ms
        return seq

    def await_answer(self, handle, timeout_ms=None):
        """The answer of a submitted request (a dict: request_id, status, reason, exit,
        tier, class, confidence, latency_ms, probs, label), waiting at most timeout_ms
        (default: the request's deadline plus the client's timeout). Raises Refused when the
        coordinator refused the message itself (e.g. a tensor frame of the wrong size)."""
        if timeout_ms is None:
            timeout_ms = (self._pending.get(handle) or 0) + self.timeout_ms
        if handle not in self._pending and handle not in self._answers:
            raise EinetError(f"unknown or already awaited handle {handle}")
        if not self._wait(lambda: handle in self._answers, timeout_ms):
            raise Timeout(f"no answer to request {handle} within {timeout_ms} ms")
        answer = self._answers.pop(handle)
        if isinstance(answer, Refused):  # the message itself was refused (a bad tensor frame)
            raise answer
        return answer

    def await_any(self, timeout_ms=None):
        """(handle, answer) of the next answer to arrive among those submitted (answer is a
        Refused exception, not raised, for a request the coordinator refused outright)."""
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        if not self._wait(lambda: self._answers, timeout_ms):
            raise Timeout(f"no answer within {timeout_ms} ms")
        handle = next(iter(self._answers))
        return handle, self._answers.pop(handle)

    def request_id(self, handle, timeout_ms=None):
        """The coordinator's id of a submitted request, from its acknowledgement (for
        result(), also after a coordinator restart); None once the answer has come, or when
        no acknowledgement came within timeout_ms."""
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        self._wait(lambda: handle in self._ids or handle not in self._pending, timeout_ms)
        return self._ids.get(handle)

    def infer(self, image, **kw):
        """submit() then await_answer()."""
        return self.await_answer(self.submit(image, **kw))

    # ---- queries ----

    def result(self, request_id):
        """What the coordinator knows of request_id: {"found", "pending", "answer"}."""
        env = pb.Envelope()
        env.result_query.request_id = request_id
        r = self._query(env, "result_reply")
        return {"found": r.found, "pending": r.pending, "undelivered": r.undelivered,
                "answer": _answer_dict(r.answer) if r.HasField("answer") else None}

    def stats(self, reset=False):
        """The coordinator's statistics (stats_reply as a dict of plain values)."""
        env = pb.Envelope()
        env.stats_query.reset = reset
        s = self._query(env, "stats_reply")
        return {
            "requests": s.requests,
            "by_status": {STATUS_NAMES.get(i, str(i)): n for i, n in enumerate(s.by_status)},
            "by_exit": list(s.by_exit),
            "by_tier": {TIER_NAMES.get(i, str(i)): n for i, n in enumerate(s.by_tier)},
            "labelled": s.labelled, "correct": s.correct,
            "latency_ms": {"p50": s.latency_p50_ms, "p95": s.latency_p95_ms,
                           "p99": s.latency_p99_ms},
            "links": [{"link": {v: k for k, v in LINKS.items()}.get(l.link, str(l.link)),
                       "up": l.up, "latency_ms": l.latency_ms,
                       "bandwidth_mbps": l.bandwidth_mbps} for l in s.links],
            "nodes": [{"tier": TIER_NAMES.get(n.tier, str(n.tier)), "healthy": n.healthy,
                       "last_seen_ms": n.last_seen_us / 1000.0, "first_block": n.first_block,
                       "last_block": n.last_block, "in_flight": n.in_flight} for n in s.nodes],
            "bad_messages": s.bad_messages, "faults_seen": s.faults_seen,
            "uptime_s": s.uptime_us / 1e6,
        }

    def model_info(self):
        """The served model: {"protocol_version", "model", "input_shape" [C, H, W],
        "classes", "class_names", "exits": [{"exit", "tier"}]}."""
        env = pb.Envelope()
        env.model_info_query.SetInParent()
        m = self._query(env, "model_info_reply")
        info = {"protocol_version": m.protocol_version, "model": m.model,
                "input_shape": list(m.input_shape), "classes": m.classes,
                "class_names": list(m.class_names),
                "exits": [{"exit": e.exit, "tier": TIER_NAMES.get(e.tier, str(e.tier))}
                          for e in m.exits]}
        self._shape = [1] + info["input_shape"]
        return info

    def fault(self, link=None, down_ms=0, delay_ms=0, loss_pct=0.0, kill=None, clear=False):
        """Injects a fault (docs/protocol.md): on link ("device-edge", "edge-cloud") drop
        everything for down_ms, add delay_ms, lose loss_pct percent, or clear; or kill a
        tier ("device", "edge", "cloud"). Returns the coordinator's ack detail; raises
        EinetError when it says no."""
        env = pb.Envelope()
        f = env.fault
        if link is not None:
            if link not in LINKS:
                raise ValueError(f"link must be one of {', '.join(LINKS)}, not {link!r}")
            f.link = LINKS[link]
        if kill is not None:
            if kill not in ("device", "edge", "cloud"):
                raise ValueError(f"kill must be device, edge or cloud, not {kill!r}")
            f.kill = TIERS[kill]
        f.down_ms, f.delay_ms, f.loss_pct, f.clear = down_ms, delay_ms, loss_pct, clear
        ack = self._query(env, "ack")
        if not ack.ok:
            raise EinetError(f"fault not applied: {ack.detail}")
        return ack.detail
