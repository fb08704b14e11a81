"""einet's Python client: requests, answers, results, statistics, model information and
fault injection over the coordinator's client endpoint (docs/client.md).

    from einet_client import Client
    with Client("tcp://127.0.0.1:5600") as c:
        info = c.model_info()
        answer = c.infer(image, deadline_ms=50)
"""
from .client import Client, EinetError, Refused, Timeout, PROTOCOL_VERSION, read_cert

__all__ = ["Client", "EinetError", "Refused", "Timeout", "PROTOCOL_VERSION", "read_cert"]
