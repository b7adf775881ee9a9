"""Evaluation a researcher can trust: metrics with confidence intervals, KL/entropy scoring, and standard
benchmarks through lm-evaluation-harness (`lm_eval`, optional extra `eval`).

- `metrics`: pure functions (pass@k, maj@k, bootstrap CIs, KL, entropy, token efficiency, CoT consistency);
- `scoring`: teacher-forced forward passes that feed the KL/entropy metrics;
- `harness`: offline lm-eval runs on local models and local task YAML/data (`tasks/` ships an example).
"""
