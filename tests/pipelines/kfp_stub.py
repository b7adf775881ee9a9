"""A STUB of the few Kubeflow Pipelines v2beta1 REST endpoints `alignpipe submit/upload` call (not a KFP server).

Runs on 127.0.0.1 on a free port, records every request (method, path, query, headers, body) and answers
with the minimal JSON kfp.Client needs. Pipelines it "knows" are listed in `existing` (name -> id).
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class KfpStub:
    def __init__(self, existing: dict[str, str] | None = None):
        self.requests: list[dict] = []
        self.existing = dict(existing or {})
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                u = urlparse(self.path)
                rec = {"method": self.command, "path": u.path, "query": parse_qs(u.query),
                       "headers": dict(self.headers), "body": raw}
                stub.requests.append(rec)
                return rec

            def do_GET(self):
                rec = self._record()
                if rec["path"] == "/apis/v2beta1/healthz":
                    return self._reply(200, {"multi_user": False})
                if rec["path"] == "/apis/v2beta1/experiments":
                    return self._reply(200, {"experiments": [], "total_size": 0})
                if rec["path"] == "/apis/v2beta1/pipelines":
                    flt = json.loads(rec["query"].get("filter", ["{}"])[0])
                    names = [p.get("stringValue") for p in flt.get("predicates", []) if p.get("key") == "display_name"]
                    hits = [{"pipeline_id": stub.existing[n], "display_name": n} for n in names if n in stub.existing]
                    return self._reply(200, {"pipelines": hits, "total_size": len(hits)})
                return self._reply(404, {"error": "not in the stub"})

            def do_POST(self):
                rec = self._record()
                if rec["path"] == "/apis/v2beta1/experiments":
                    body = json.loads(rec["body"])
                    return self._reply(200, {"experiment_id": "exp-1", "display_name": body.get("display_name")})
                if rec["path"] == "/apis/v2beta1/runs":
                    return self._reply(200, {"run_id": "run-1", "display_name": json.loads(rec["body"]).get("display_name")})
                if rec["path"] == "/apis/v2beta1/pipelines/upload":
                    name = rec["query"].get("name", [""])[0]
                    pid = stub.existing.setdefault(name, f"p-{uuid.uuid4().hex[:6]}")
                    return self._reply(200, {"pipeline_id": pid, "display_name": name})
                if rec["path"] == "/apis/v2beta1/pipelines/upload_version":
                    return self._reply(200, {"pipeline_id": rec["query"].get("pipelineid", [""])[0],
                                             "pipeline_version_id": f"v-{uuid.uuid4().hex[:6]}"})
                return self._reply(404, {"error": "not in the stub"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "KfpStub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]
