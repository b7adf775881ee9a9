"""Names shared by the pipelines, the CLI and the Helm chart — one source for each.

The Helm chart's values.yaml defaults repeat these strings (Helm cannot import Python);
tests/helm checks that they agree, so change them here and there together.
"""

from __future__ import annotations

from alignpipe import settings

#: Container image that runs every component. Overridden at compile time (`alignpipe compile --image`)
#: or with ALIGNPIPE_IMAGE. Pinned tag, never `latest`.
DEFAULT_IMAGE = "ghcr.io/alignpipe/alignpipe:0.1.0"
DEFAULT_GPU_IMAGE = "ghcr.io/alignpipe/alignpipe-gpu:0.1.0"

#: Kubernetes Secret holding S3/MinIO credentials (keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
S3_SECRET_NAME = "alignpipe-s3"
#: Kubernetes Secret / ConfigMap-free env for MLflow (keys: MLFLOW_TRACKING_URI, optional MLFLOW_TRACKING_TOKEN).
MLFLOW_SECRET_NAME = "alignpipe-mlflow"
#: Keys of those Secrets, as {key in the Secret: environment variable}: required and optional ones. Pipeline
#: steps mount them (pipelines/common.py); multi-node jobs' pods get the same (alignpipe.launch).
S3_REQUIRED_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
S3_OPTIONAL_KEYS = {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
                    "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION", "ALIGNPIPE_S3_BUCKET": "ALIGNPIPE_S3_BUCKET"}
MLFLOW_REQUIRED_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
MLFLOW_OPTIONAL_KEYS = {"MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN"}
#: The reward service's token: {key in the chart's Secret: environment variable} (what alignpipe.rewards.code
#: reads). Mounted with optional=True, so a cluster without the reward service runs the same pipelines.
REWARD_TOKEN_KEYS = {"ALIGNPIPE_REWARD_TOKEN": "ALIGNPIPE_REWARD_TOKEN"}
#: ServiceAccount the pipeline pods run as.
PIPELINE_SERVICE_ACCOUNT = "alignpipe-pipeline-runner"


def image() -> str:
    return settings.current().image  # default: DEFAULT_IMAGE


def gpu_image() -> str:
    return settings.current().gpu_image  # default: DEFAULT_GPU_IMAGE
