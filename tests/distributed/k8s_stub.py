"""A STUB of the few Kubernetes API endpoints that `alignpipe.trainjob.submit_and_wait` calls.

This is not a Kubernetes API server and does not validate objects: it stores what is POSTed, answers GETs
of the job with a scripted sequence of `status` blocks, lists scripted pods by label and serves their
logs, and records every request (method, path, query, JSON body) so tests can check what the client sent.
It listens on 127.0.0.1 on a free port.

Routes:
  POST   /apis/{group}/{version}/namespaces/{ns}/{plural}              create the job (201, uid added; 409 if it exists)
  GET    /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}       job + next scripted status
  DELETE /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}       delete (200 Status)
  POST   /api/v1/namespaces/{ns}/configmaps                            create (201)
  GET    /api/v1/namespaces/{ns}/pods?labelSelector=k=v                scripted pods with that label
  GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&tailLines=  scripted log text
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None


@dataclass
class Pod:
    name: str
    labels: dict[str, str]
    phase: str
    log: str
    container: str = "node"


@dataclass
class Script:
    """What the stub answers: job statuses in order (the last one repeats), pods, and forced errors."""

    statuses: list[dict] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    create_error: tuple[int, str] | None = None  # (HTTP status, message) for the job POST
    get_errors: int = 0  # answer this many job GETs with 500 first


def condition(type_: str, reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": "True", "reason": reason or type_, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


class KubeStub:
    def __init__(self, script: Script):
        self.script = script
        self.requests: list[Request] = []
        self.objects: dict[str, dict] = {}
        self.config_maps: dict[str, dict] = {}
        self.deleted: list[str] = []
        self._gets = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, payload, content_type: str = "application/json"):
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with stub._lock:
                    stub.requests.append(Request(method, parts.path, parse_qs(parts.query), body))
                    code, payload, ctype = stub._route(method, parts.path, parse_qs(parts.query), body)
                self._reply(code, payload, ctype)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

            def do_PATCH(self):
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "KubeStub":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def api_client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    # ---- routing ----

    @staticmethod
    def _status(code: int, reason: str, message: str):
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                      "message": message, "code": code}, "application/json"

    def _route(self, method: str, path: str, query: dict, body):
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?", path)
        if m:
            _, _, ns, _, name = m.groups()
            if method == "POST" and name is None:
                if self.script.create_error:
                    code, msg = self.script.create_error
                    return self._status(code, "NotFound" if code == 404 else "Error", msg)
                if body["metadata"]["name"] in self.objects and body["metadata"]["name"] not in self.deleted:
                    return self._status(409, "AlreadyExists", f"{body['metadata']['name']} already exists")
                obj = json.loads(json.dumps(body))
                obj["metadata"]["uid"] = str(uuid.uuid4())
                self.objects[obj["metadata"]["name"]] = obj
                return 201, obj, "application/json"
            if name not in self.objects or name in self.deleted:
                return self._status(404, "NotFound", f"{name} not found")
            if method == "GET":
                if self.script.get_errors > 0:
                    self.script.get_errors -= 1
                    return self._status(500, "InternalError", "etcd is having a bad day")
                statuses = self.script.statuses or [{}]
                status = statuses[min(self._gets, len(statuses) - 1)]
                self._gets += 1
                return 200, {**self.objects[name], "status": status}, "application/json"
            if method == "DELETE":
                self.deleted.append(name)
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}, "application/json"
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/configmaps", path)
        if m and method == "POST":
            self.config_maps[body["metadata"]["name"]] = body
            return 201, body, "application/json"
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if m and method == "GET":
            selector = (query.get("labelSelector") or [""])[0]
            key, _, value = selector.partition("=")
            items = [{"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": p.name, "namespace": m.group(1), "labels": p.labels},
                      "spec": {"containers": [{"name": p.container, "image": "x"}]},
                      "status": {"phase": p.phase}}
                     for p in self.script.pods if p.labels.get(key) == value]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, "application/json"
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)
        if m and method == "GET":
            pod = next((p for p in self.script.pods if p.name == m.group(2)), None)
            if pod is None:
                return self._status(404, "NotFound", f"pod {m.group(2)} not found")
            container = (query.get("container") or [pod.container])[0]
            if container != pod.container:
                return self._status(400, "BadRequest", f"container {container} is not valid for pod {pod.name}")
            lines = pod.log.splitlines()
            tail = int((query.get("tailLines") or ["0"])[0])
            text = "\n".join(lines[-tail:] if tail else lines) + "\n"
            return 200, text, "text/plain"
        return self._status(404, "NotFound", f"stub has no route for {method} {path}")
