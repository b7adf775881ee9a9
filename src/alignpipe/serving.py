"""Serving a registered model with KServe: the manifests, rendered from the template shipped in the package.

    >>> from alignpipe import serving
    >>> print(serving.render_kserve("models:/alignpipe-demo@champion", namespace="team-a",
    ...                             s3_endpoint="http://alignpipe-minio.team-a:9000"))

(`alignpipe model kserve MODEL` prints the same.) Two documents come out of ``templates/kserve.yaml``:

- a ``ServiceAccount`` whose ``secrets`` list holds the chart's S3 Secret (``secrets.s3.name``, default
  ``alignpipe-s3``, ``ALIGNPIPE_S3_SECRET``): KServe's storage initializer takes ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` from it, and the endpoint, https and region from the account's
  ``serving.kserve.io/s3-*`` annotations;
- an ``InferenceService`` (``serving.kserve.io/v1beta1``) on KServe's huggingface runtime with the vLLM
  backend, ``storageUri`` the model's ``s3://`` folder, and GPU requests and limits.

The model is a registered version (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, or without the
``models:/`` prefix), resolved through the MLflow Model Registry to its ``s3://`` source, or an ``s3://`` folder
given directly. A version registered from a local folder has no ``s3://`` source (its files live in MLflow's
artifact store) and is refused with a line saying so.
"""

from __future__ import annotations

import re
import urllib.parse
from importlib import resources
from typing import Any

from alignpipe import registry, settings, storage
from alignpipe.base import UserError

__all__ = ["ServingError", "TEMPLATE", "kserve_manifests", "render_kserve", "storage_uri"]

#: The template, inside the package.
TEMPLATE = "templates/kserve.yaml"
_PLACEHOLDER = re.compile(r"^\$\{([a-z0-9_]+)\}$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


class ServingError(UserError, ValueError):
    """A model or setting that cannot be served as asked; the message says what to change."""


def storage_uri(model: str, tracking_uri: str | None = None) -> tuple[str, dict[str, str]]:
    """The ``s3://`` folder KServe should read for ``model``, and what it is (name, version, ref)."""
    model = str(model).strip()
    if storage.is_remote(model):
        uri = "s3://" + model.split("://", 1)[1].strip("/")
        return uri, {"ref": uri, "name": "-".join(uri.split("://", 1)[1].split("/")[-2:]), "version": ""}
    ref = registry.parse_ref(model)
    with registry._bounded_http():
        mv, _ = registry.resolve(ref, tracking_uri)
    source = str(mv.source)
    if not storage.is_remote(source):
        raise ServingError(f"{ref} is version {mv.version}, whose source {source} is not an s3:// folder — KServe reads "
                           "s3:// URIs: register a model published to object storage (pipelines with --pipeline-root "
                           "s3://...), or `alignpipe model pull` it and serve the folder with vLLM")
    return "s3://" + source.split("://", 1)[1].strip("/"), {"ref": f"models:/{ref}", "name": ref.name,
                                                           "version": str(mv.version)}


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:45].rstrip("-")
    return name or "alignpipe-model"


def _endpoint(endpoint: str | None) -> tuple[str | None, str | None]:
    """(host[:port], "0"/"1") for KServe's annotations; (None, None) for AWS S3."""
    if not endpoint:
        return None, None
    p = urllib.parse.urlsplit(endpoint if "://" in endpoint else "http://" + endpoint)
    if not p.hostname:
        raise ServingError(f"S3 endpoint {endpoint!r} has no host — give host:port or http(s)://host:port")
    if p.hostname in _LOOPBACK:
        raise ServingError(f"S3 endpoint {endpoint} is this machine (a port-forward?), not what the cluster reaches — "
                           "pass the in-cluster one with --s3-endpoint, e.g. http://alignpipe-minio.NAMESPACE:9000")
    return p.netloc, "1" if p.scheme == "https" else "0"


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """Replace every whole-value ``${key}`` (in values and keys); a None value drops its key (and a mapping left
    empty by that drops too)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            k2, v2 = _fill(k, values), _fill(v, values)
            if v2 is not None and k2 is not None and not (v2 == {} and v):  # a mapping emptied by None values goes too
                out[k2] = v2
        return out
    if isinstance(node, list):
        return [x for x in (_fill(v, values) for v in node) if x is not None]
    if isinstance(node, str):
        m = _PLACEHOLDER.match(node)
        if m:
            if m.group(1) not in values:
                raise KeyError(f"{TEMPLATE}: no value for ${{{m.group(1)}}}")
            return values[m.group(1)]
        if "${" in node:
            raise KeyError(f"{TEMPLATE}: a placeholder must be a whole value: {node!r}")
    return node


def kserve_manifests(model: str, *, name: str | None = None, namespace: str = "default",
                     s3_secret: str | None = None, gpus: int = 1, s3_endpoint: str | None = None,
                     service_account: str | None = None, cpu: str = "4", memory: str = "32Gi",
                     max_model_len: int | None = None, extra_args: list[str] | None = None,
                     tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """The ServiceAccount and the InferenceService for ``model`` (see the module doc), as dicts.

    ``s3_secret`` defaults to ``ALIGNPIPE_S3_SECRET`` (the chart's ``secrets.s3.name``), ``s3_endpoint`` to the
    S3 endpoint in effect here (refused when it is a loopback address), the GPU resource name to
    ``ALIGNPIPE_GPU_RESOURCE``. More than one GPU serves with vLLM tensor parallelism across them.
    """
    import yaml

    if gpus < 0:
        raise ServingError(f"--gpus {gpus}: give 0 (CPU, HF backend) or more GPUs")
    st = settings.current()
    uri, what = storage_uri(model, tracking_uri)
    name = name or _dns_name(what["name"])
    if not _DNS1035.match(name) or len(name) > 63:
        raise ServingError(f"name {name!r}: an InferenceService name is lower-case letters, digits and '-', starting "
                           "with a letter (at most 63) — pass --name")
    if not _DNS1035.match(namespace):
        raise ServingError(f"namespace {namespace!r} is not a Kubernetes namespace name")
    host, https = _endpoint(s3_endpoint if s3_endpoint is not None else st.s3_endpoint_url)
    args = [f"--model_name={name}"]
    args += ["--backend=vllm", f"--tensor-parallel-size={max(1, gpus)}"] if gpus else ["--backend=huggingface"]
    if max_model_len:
        args.append(f"--max_model_len={int(max_model_len)}")
    args += list(extra_args or [])
    values = {"name": name, "namespace": namespace, "service_account": service_account or f"{name}-s3",
              "s3_secret": s3_secret or st.s3_secret, "s3_endpoint": host, "s3_usehttps": https,
              "s3_region": st.s3_region if host else None, "storage_uri": uri, "model_ref": what["ref"],
              "model_version": what["version"] or None, "args": args, "cpu": str(cpu), "memory": str(memory),
              "gpu_resource": st.gpu_resource if gpus else None, "gpus": gpus or None}
    text = resources.files("alignpipe").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return [_fill(doc, values) for doc in yaml.safe_load_all(text) if doc]


def render_kserve(model: str, **kw: Any) -> str:
    """:func:`kserve_manifests` as one YAML stream (``kubectl apply -f -``)."""
    import yaml

    docs = kserve_manifests(model, **kw)
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
