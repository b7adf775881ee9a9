"""Typed, strict configuration: one pydantic model per stage, the ONE schema used everywhere.

The CLI reads YAML into these models (`alignpipe stage sft --config x.yaml key=value ...`), the
Kubeflow components validate their `config` dict with them, and the pipelines pass parameters
through to them. Unknown keys are errors (`extra="forbid"`), and cross-field rules fail early with a
message that says how to fix the setting.

Model and data locations are URIs: a local path, `s3://bucket/key`, a Hugging Face model id (GPU runs),
or the word `tiny` for the embedded tiny model that alignpipe builds itself (no download).
"""

from __future__ import annotations

from alignpipe.base import UserError

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(UserError, ValueError):
    """A user error in a config: the message is one line per problem, naming the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------
# Shared building blocks
# --------------------------------------------------------------------------------------------------


class TrainingSettings(_Strict):
    """Optimisation settings shared by every training stage (mapped onto TRL/transformers arguments)."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps to run.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant_with_warmup", description="Learning-rate schedule.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up steps; null: 3% of max_steps (rounded down), so AdamW's first, "
        "poorly estimated updates do not jolt a pretrained model while a short test run gets none.")
    batch_size: int = Field(8, ge=1, description="Per-device batch size (sequences, or prompts x generations for RL): "
                            "8 sequences of 2048 tokens fit a 0.5-8B model on one 80 GB GPU (with "
                            "gradient_checkpointing for the larger ones); raise gradient_accumulation_steps for a "
                            "larger effective batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(0, description="Seed for data order, initialisation and sampling.")
    logging_steps: int = Field(10, ge=1, description="Log metrics every N steps.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="`auto`: bf16 on a GPU that supports it, fp32 on the CPU.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory on large models.")
    save_steps: int | None = Field(
        200, ge=1, description="Checkpoint every N optimizer steps to the checkpoint store (ALIGNPIPE_STATE_URI, "
        "manifest last); a retried step, even in a new pod, resumes from the newest complete one. null: by time only.")
    save_minutes: float | None = Field(
        30.0, gt=0, description="Also checkpoint when this many minutes of training have passed since the last "
        "checkpoint, so a preempted GPU step loses at most this much work. null: by steps only.")
    save_total_limit: int = Field(2, ge=1, description="Complete checkpoints kept in the store (older ones are "
                                  "deleted only after a newer one is complete).")
    sigterm_grace_s: float = Field(
        20.0, gt=0, description="On SIGTERM (preemption, eviction) the stage checkpoints when the current step "
        "ends and exits non-zero so the step is retried; after this many seconds it exits without one "
        "(Kubernetes kills a pod 30 s after SIGTERM by default).")

    @model_validator(mode="before")
    @classmethod
    def _default_warmup(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("warmup_steps") is None:
            steps = data.get("max_steps", cls.model_fields["max_steps"].default)
            if isinstance(steps, int) and steps >= 1:
                data = {**data, "warmup_steps": steps * WARMUP_PERCENT // 100}
        return data

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainingSettings":
        if self.warmup_steps is not None and self.warmup_steps >= self.max_steps and self.max_steps > 1:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than max_steps ({self.max_steps}) "
                "(lower warmup_steps or raise max_steps)")
        return self


#: Default warm-up, percent of max_steps (TrainingSettings.warmup_steps: null).
WARMUP_PERCENT = 3


class SFTTrainingSettings(TrainingSettings):
    """Optimisation settings of SFT (defaults for full fine-tuning of a 0.5-8B instruct model)."""

    max_steps: int = Field(1000, ge=1, description="Optimizer steps: 1000 x 8 sequences is about one epoch of a "
                           "typical 5-10k example instruction set.")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate: 1e-5 is the usual full fine-tuning rate "
                                 "for 0.5-8B instruct models (higher rates erase what instruction tuning taught; "
                                 "with LoRA use ~1e-4).")


class RewardModelTrainingSettings(TrainingSettings):
    """Optimisation settings of reward-model training (defaults for a 0.5-8B base)."""

    max_steps: int = Field(500, ge=1, description="Optimizer steps: 500 x 8 pairs, about one epoch of a 4k-pair "
                           "preference set (reward models overfit past one epoch).")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate: 1e-5 trains the new score head "
                                 "and adapts the body without destroying it (the usual Bradley-Terry setting).")


class RLTrainingSettings(TrainingSettings):
    """Optimisation settings of RL (defaults for GRPO/RLOO on a 0.5-8B instruct model)."""

    max_steps: int = Field(500, ge=1, description="Optimizer steps (each on freshly sampled completions): "
                           "verifiable-reward runs on 0.5-8B models show most of their gain within a few hundred.")
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate: 1e-6, as GRPO/RLOO recipes for "
                                 "0.5-8B models use; faster rates collapse the policy's entropy within tens of steps.")


class PreferenceTrainingSettings(TrainingSettings):
    """Optimisation settings of offline preference optimisation (defaults for DPO on a 0.5-8B instruct model)."""

    max_steps: int = Field(500, ge=1, description="Optimizer steps: 500 x 8 pairs, about one epoch of a 4k-pair "
                           "preference set.")
    learning_rate: float = Field(5e-7, gt=0, description="Peak learning rate: 5e-7, as DPO recipes for 0.5-8B "
                                 "instruct models use (DPO's implicit reward saturates and the model degrades "
                                 "at 1e-5).")


class LoraSettings(_Strict):
    """Low-rank adapters (peft). The adapter is merged into the saved model so later stages load a plain model."""

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or `all-linear`.")


class DistributedSettings(_Strict):
    """How a step uses more than one device. Multi-node runs are handed to Kubeflow Trainer by the pipeline."""

    gpus: int = Field(1, ge=1, description="Processes (GPUs) per node; > 1 launches torchrun inside the pod.")
    nodes: int = Field(1, ge=1, description="Nodes; > 1 hands the step to Kubeflow Trainer (TrainJob) with `gpus` "
                       "processes on each node (output_dir must then be an s3:// URI).")
    multinode: Literal["trainjob", "pytorchjob"] = Field(
        "trainjob", description="What runs a multi-node step: a Kubeflow Trainer v2 `TrainJob` or a Training "
        "Operator v1 `PyTorchJob`.")
    deepspeed: Literal["none", "zero2", "zero2_offload", "zero3", "zero3_offload"] = Field(
        "none", description="DeepSpeed ZeRO preset for multi-GPU runs.")


class RewardSpec(_Strict):
    """One reward term: a registered name (see `alignpipe.rewards`) or a dotted path `pkg.mod:func`, with a weight."""

    name: str = Field(description="Reward name, e.g. exact_match, math_verify, label, format, reward_model.")
    weight: float = Field(1.0, description="Weight in the summed reward.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra arguments of the reward function.")


class GenerationSettings(_Strict):
    max_new_tokens: int = Field(1024, ge=1, description="Tokens generated per completion: 1024 leaves room for "
                                "the step-by-step reasoning an instruct model writes before its answer (a cut-off "
                                "completion scores as wrong).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")


class _Stage(_Strict):
    model: str = Field("tiny", description="Input model: local dir, s3:// URI, hub id (GPU runs) or `tiny`.")
    output_dir: str = Field(description="Where the trained model is written (local dir or s3:// URI, published atomically).")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the model repo (off by default).")
    tracking: bool = Field(True, description="Log to MLflow (MLFLOW_TRACKING_URI, else sqlite under the work dir).")
    run_name: str | None = Field(None, description="MLflow run name; default: the stage name.")
    reuse: bool = Field(True, description="Reuse the published output of an earlier run with the same content key "
                        "(resolved config, input digests, alignpipe version) instead of training; false forces a re-run.")


# --------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------


class SFTConfig(_Stage):
    """Supervised fine-tuning (TRL SFTTrainer)."""

    stage: Literal["sft"] = "sft"
    train_data: str = Field(description="SFT data: `messages` or `prompt`/`completion` rows (jsonl, parquet, save_to_disk dir).")
    eval_data: str | None = Field(None, description="Optional held-out SFT data; eval loss is reported.")
    loss: Literal["nll", "dft", "asft"] = Field(
        "nll", description="`nll`: cross-entropy; `dft`: dynamic fine-tuning (token loss weighted by its detached "
        "probability); `asft`: DFT plus a KL anchor to the initial model (Anchored SFT).")
    asft_kl_coef: float = Field(0.05, ge=0, description="KL-anchor weight for `loss: asft`.")
    assistant_only_loss: bool = Field(True, description="Train only on assistant/completion tokens.")
    packing: bool = Field(
        False, description="Pack whole examples into rows of `max_length` tokens (best-fit decreasing; an example longer "
        "than `max_length` is truncated), so that variable-length data wastes no compute on padding. No token attends "
        "across an example boundary and positions restart per example, so the loss equals the unpacked loss on the "
        "same examples. Layout by attention kernel: with flash attention, one flattened padding-free sequence per "
        "batch (varlen kernel, no mask); otherwise (sdpa, eager: the CPU) the batch stays [batch_size, max_length] "
        "with a block-diagonal causal mask per row. `batch_size` then counts packed rows, not examples.")
    max_length: int = Field(2048, ge=8, description="Truncate sequences to this many tokens: 2048 holds a chat "
                            "template, a prompt and a reasoned answer of typical instruction data.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters instead of all weights.")
    training: SFTTrainingSettings = Field(default_factory=SFTTrainingSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    stop_at_accuracy: float | None = Field(
        None, gt=0, le=1, description="Stop early once greedy exact-match accuracy on `accuracy_probe_size` training "
        "prompts reaches this value (prompt/completion data only). Null: run max_steps.")
    accuracy_probe_size: int = Field(256, ge=1, description="Training prompts used by stop_at_accuracy.")
    accuracy_probe_every: int = Field(10, ge=1, description="Check stop_at_accuracy every N steps.")

    @model_validator(mode="after")
    def _check(self) -> "SFTConfig":
        if self.loss == "asft" and self.lora is not None:
            raise ValueError("loss=asft keeps a frozen copy of the initial model and is not combined with LoRA "
                             "(set lora: null, or use loss: dft)")
        if self.loss == "asft" and self.distributed.deepspeed.startswith("zero3"):
            raise ValueError(f"loss=asft is not combined with deepspeed {self.distributed.deepspeed}: its frozen "
                             "reference copy is a full, unsharded model on every rank (use deepspeed: zero2 or none, "
                             "or loss: dft)")
        return self


class RewardModelConfig(_Stage):
    """Reward model training (TRL RewardTrainer, Bradley-Terry)."""

    stage: Literal["reward_model"] = "reward_model"
    train_data: str = Field(description="Preference data: `prompt`/`chosen`/`rejected` (or implicit-prompt `chosen`/`rejected`).")
    eval_data: str | None = Field(None, description="Held-out preference pairs; pairwise accuracy is reported.")
    max_length: int = Field(2048, ge=8, description="Truncate sequences to this many tokens: 2048 holds a chat "
                            "template, a prompt and a full answer (a truncated pair hides what was preferred).")
    center_rewards_coefficient: float | None = Field(0.01, ge=0, description="Pushes rewards towards zero mean (null: off).")
    lora: LoraSettings | None = None
    training: RewardModelTrainingSettings = Field(default_factory=RewardModelTrainingSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)


class GRPOSettings(_Strict):
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("dapo", description="GRPO loss normalisation variant.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group).")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference model, a frozen copy of the input "
                        "model (0: no reference model is loaded).")
    epsilon: float = Field(0.2, gt=0, description="Clipping range of the policy ratio.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="How advantages are scaled.")
    num_iterations: int = Field(1, ge=1, description="Policy updates per generation batch (mu).")


class ExpertIterationSettings(_Strict):
    rounds: int = Field(2, ge=1, description="Sample -> filter -> SFT rounds.")
    samples_per_prompt: int = Field(4, ge=1, description="Completions sampled per prompt each round (k).")
    prompts_per_round: int = Field(256, ge=1, description="Prompts sampled from train_data each round.")
    min_reward: float = Field(1.0, description="Keep completions whose summed reward is >= this.")
    sft_steps_per_round: int = Field(50, ge=1, description="SFT optimizer steps on the kept completions per round.")


class KLSettings(_Strict):
    """KL to a frozen reference (a copy of the input model) on the alignpipe engine."""

    beta: float = Field(0.0, ge=0, description="KL coefficient (0: no reference model is loaded).")
    estimator: str = Field("k3", description="Per-token KL estimator: k1 (log-ratio), k2 (squared/2), k3 "
                           "(ratio - 1 - log ratio).")
    mode: Literal["loss", "reward"] | None = Field(
        None, description="`loss`: beta x KL added to the loss; `reward`: -beta x KL per token folded into the reward "
        "(default: reward for reinforce_pp and gae, loss otherwise).")


class CriticSettings(_Strict):
    """The value model of `gae` (PPO)."""

    init: Literal["policy", "reward_model"] = Field(
        "policy", description="Value head on a copy of the policy, or on the reward model (its score head).")
    learning_rate: float = Field(1e-5, gt=0, description="The critic's own learning rate.")
    value_clip: float | None = Field(0.2, gt=0, description="Clip the value update to +-this (null: no clipping).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")


class TemperatureControlSettings(_Strict):
    """AceReason's entropy control on the alignpipe engine: after each rollout step the sampling temperature T is
    set to clip(T x exp(rate x (target - H)), min_temperature, max_temperature), H the step's mean token entropy at
    temperature T, so the temperature-adjusted entropy stays near `target`. Starts at generation.temperature."""

    target: float = Field(0.3, gt=0, description="Temperature-adjusted token entropy to hold (nats).")
    rate: float = Field(0.5, gt=0, description="Step size of the multiplicative update per nat of entropy gap.")
    min_temperature: float = Field(0.3, ge=0.05, description="Lowest temperature the controller sets.")
    max_temperature: float = Field(2.0, gt=0, description="Highest temperature the controller sets.")

    @model_validator(mode="after")
    def _check(self) -> "TemperatureControlSettings":
        if self.min_temperature > self.max_temperature:
            raise ValueError("engine_settings.temperature_control: min_temperature must be <= max_temperature")
        return self


class ReliftSettings(_Strict):
    """ReLIFT on the alignpipe engine: prompts whose every completion failed (summed reward < sampler.success_threshold)
    go to a buffer with their reference solution (the `completion` column, else `solution`, else `answer`); every
    `every` rollout steps, or as soon as the buffer holds `buffer` prompts, `sft_steps` SFT steps (completion-only
    NLL, own AdamW at `learning_rate`) run on the buffered demonstrations and the buffer is emptied."""

    every: int = Field(4, ge=1, description="Run the SFT steps after every this many rollout steps (if the buffer "
                       "is not empty).")
    buffer: int = Field(16, ge=1, description="...or as soon as the buffer holds this many prompts.")
    sft_steps: int = Field(2, ge=1, description="SFT optimizer steps per flush of the buffer.")
    learning_rate: float = Field(1e-4, gt=0, description="Learning rate of the SFT steps (their own AdamW).")
    batch_size: int = Field(8, ge=1, description="Demonstrations per SFT step (drawn from the buffer).")


class ReplaySettings(_Strict):
    """Rollout replay (DOTS RR) on the alignpipe engine: groups whose rewards are not all equal are kept with their
    behaviour log-probs and advantages; each update takes up to `share` of its groups from stored ones at most
    `max_staleness` rollout steps old (each replayed once), trained with the PPO ratio against the stored
    log-probs, and draws only the rest fresh."""

    share: float = Field(0.25, ge=0, lt=1, description="Largest share of each update's groups taken from the replay "
                         "buffer.")
    max_staleness: int = Field(2, ge=1, description="Replay only groups generated at most this many rollout steps "
                               "ago.")


class HintsSettings(_Strict):
    """ReGFT-style hints on the alignpipe engine: every `every` rollout steps, prompts seen but never solved get
    k completions generated after the first `fraction` of their reference solution (characters) placed at the start
    of the answer; hint + completion is scored as the full answer, those reaching sampler.success_threshold are kept,
    and `sft_steps` SFT steps train the policy on them with the prompt without the hint."""

    every: int = Field(4, ge=1, description="Run a hint round after every this many rollout steps.")
    fraction: float = Field(0.5, gt=0, le=1, description="Share of the reference solution's characters given as "
                            "the hint.")
    sft_steps: int = Field(2, ge=1, description="SFT optimizer steps per hint round (none when nothing was kept).")
    learning_rate: float = Field(1e-4, gt=0, description="Learning rate of the SFT steps (their own AdamW).")
    batch_size: int = Field(8, ge=1, description="Kept examples per SFT step.")
    prompts: int | None = Field(None, ge=1, description="Never-solved prompts hinted per round (default: the "
                                "prompts of one rollout step).")


class RLEngineSettings(_Strict):
    """Settings of alignpipe's own RL engine (`engine: alignpipe`); plug-in names are listed by
    `alignpipe.rl.describe()`. Group size is `grpo.num_generations`, completions per step `training.batch_size`
    x `gradient_accumulation_steps`, rollout steps `training.max_steps`."""

    advantage: str | None = Field(None, description="Advantage estimator: grpo, dr_grpo, rloo, reinforce_pp, gae "
                                  "(default from algorithm: ppo -> gae, grpo -> grpo, rloo -> rloo).")
    loss: str | None = Field(None, description="Policy loss: ppo_clip, nft, copg, sft_on_positive, alol (default "
                             "ppo_clip).")
    aggregation: str | None = Field(None, description="token_mean, seq_mean or token_sum_norm (default token_mean; "
                                    "token_sum_norm for dr_grpo).")
    epochs: int = Field(1, ge=1, description="Passes over each rollout batch.")
    minibatches: int = Field(1, ge=1, description="Optimizer steps per pass (the batch is split along prompt groups).")
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clip (lower side, and upper unless clip_eps_high).")
    clip_eps_high: float | None = Field(None, gt=0, description="Upper ratio clip (DAPO clip-higher, e.g. 0.28).")
    kl: KLSettings = Field(default_factory=KLSettings)
    critic: CriticSettings | None = Field(default_factory=CriticSettings, description="Critic for gae.")
    normalize_advantages: bool | None = Field(None, description="Whiten advantages over the batch (default: gae only).")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    positive_threshold: float = Field(1.0, description="A completion counts as correct for nft / sft_on_positive "
                                      "when its reward is >= this.")
    copg_beta: float = Field(0.1, gt=0, description="CoPG's regularisation toward the reference log-ratio.")
    length_bonus: float = Field(0.0, description="Reward shaping: + weight x completion tokens / max_new_tokens.")
    reward_clip: float | None = Field(None, gt=0, description="Clip the summed reward to +-this.")
    temperature_control: TemperatureControlSettings | None = Field(
        None, description="Adapt the sampling temperature to hold a target entropy (AceReason); null: fixed "
        "generation.temperature.")
    relift: ReliftSettings | None = Field(None, description="ReLIFT: SFT steps on the reference solutions of prompts "
                                          "every completion failed (null: off).")
    replay: ReplaySettings | None = Field(None, description="Rollout replay (DOTS RR) of still-informative groups "
                                          "(null: off).")
    hints: HintsSettings | None = Field(None, description="ReGFT-style hinted generation + SFT for never-solved "
                                        "prompts (null: off).")


class SamplerSettings(_Strict):
    """Which prompts each RL step trains on (`alignpipe.sampling`; `alignpipe.sampling.describe()` lists the
    samplers). Every sampler keeps a per-prompt pass-rate store, published as `sampler_state.json` with the stage
    output and saved in checkpoints."""

    name: str = Field("uniform", description="uniform (shuffled passes over the data), difficulty_target "
                      "(DOTS), bandit (SEC), mixture (fixed domain weights), dynamic (DAPO: drop groups whose "
                      "rewards are all equal), or a dotted path pkg.mod:Class.")
    success_threshold: float = Field(1.0, description="A completion counts as solved when its summed reward is >= this.")
    ema: float = Field(0.5, gt=0, le=1, description="Weight of the newest group in a prompt's recent pass rate and "
                       "recent mean reward.")
    init_from: str | None = Field(None, description="A published sampler_state.json (or the stage output folder/URI "
                                  "holding one) whose per-prompt records this run starts from.")
    target: float = Field(0.5, ge=0, le=1, description="difficulty_target: the pass rate to aim at.")
    pool: int = Field(4, ge=1, description="difficulty_target: candidates drawn per slot; the closest to target win.")
    explore: float = Field(0.1, ge=0, le=1, description="difficulty_target: share of each batch drawn uniformly.")
    temperature: float = Field(0.2, gt=0, description="bandit: Boltzmann temperature over the arms' values.")
    alpha: float = Field(0.5, gt=0, le=1, description="bandit: step size of the TD(0) (exponential) value update.")
    buckets: int = Field(3, ge=1, description="bandit: numeric `difficulty` is cut into this many quantile buckets.")
    weights: dict[str, float] | None = Field(None, description="mixture: domain -> weight (domains not named are "
                                             "not drawn).")
    drop_equal_groups: bool | None = Field(None, description="Drop groups whose rewards are all equal and draw more "
                                           "prompts (engine: alignpipe; default: on for dynamic only).")
    max_attempts: int = Field(4, ge=1, description="Draws per step when dropping groups; a batch still short after "
                              "them is filled with dropped groups, so a batch is never short.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Options of a sampler named by dotted path.")

    @model_validator(mode="after")
    def _check(self) -> "SamplerSettings":
        if self.name == "mixture":
            if not self.weights:
                raise ValueError("sampler.name: mixture needs sampler.weights (e.g. weights: {math: 0.7, code: 0.3})")
            if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
                raise ValueError("sampler.weights must be >= 0 with at least one > 0")
        return self


#: Lowest temperature a sampling stage accepts: below it samples are (nearly) identical and HF generate refuses it.
MIN_SAMPLING_TEMPERATURE = 0.05


class RLConfig(_Stage):
    """RL fine-tuning with rewards: GRPO, RLOO (TRL or alignpipe engine), PPO (alignpipe engine), expert iteration."""

    stage: Literal["rl"] = "rl"
    algorithm: Literal["grpo", "rloo", "expert_iteration", "ppo"] = Field("grpo", description="RL algorithm.")
    engine: Literal["trl", "alignpipe"] = Field(
        "trl", description="`trl`: TRL's trainers (grpo, rloo) and expert iteration; `alignpipe`: alignpipe's own "
        "engine (ppo, grpo, rloo, with plug-in advantages/losses/KL in engine_settings).")
    engine_settings: RLEngineSettings = Field(default_factory=RLEngineSettings,
                                              description="Settings of engine: alignpipe.")
    train_data: str = Field(description="RL prompts: `prompt` + reference `answer` (optional `domain`, `difficulty`).")
    reward_model: str | None = Field(None, description="Trained reward model dir/URI, used by the `reward_model` reward.")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="exact_match")],
                                      description="Reward terms, summed with their weights.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    grpo: GRPOSettings = Field(default_factory=GRPOSettings, description="GRPO/RLOO group settings.")
    expert_iteration: ExpertIterationSettings = Field(default_factory=ExpertIterationSettings)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings, description="Which prompts each step trains on.")
    lora: LoraSettings | None = None
    training: RLTrainingSettings = Field(default_factory=RLTrainingSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)

    @model_validator(mode="after")
    def _check(self) -> "RLConfig":
        if self.algorithm == "ppo" and self.engine == "trl":
            raise ValueError(
                "algorithm=ppo is not yet supported on engine: trl (TRL 1.x removed PPOTrainer); "
                "set engine: alignpipe to run PPO (critic + GAE) on alignpipe's engine")
        if self.engine == "alignpipe":
            self._check_engine()
        self._check_unused()
        if self.generation.temperature < MIN_SAMPLING_TEMPERATURE:
            raise ValueError(f"generation.temperature {self.generation.temperature} is too low for RL, which samples "
                             f"several completions per prompt (they would all be the same, and HF generate refuses "
                             f"a temperature near 0 when sampling): set it >= {MIN_SAMPLING_TEMPERATURE} (e.g. 0.7-1.0)")
        if not self.rewards:
            raise ValueError("rewards is empty (add at least one, e.g. rewards: [{name: exact_match}])")
        names = [r.name for r in self.rewards]
        if "reward_model" in names and not self.reward_model:
            raise ValueError("rewards uses reward_model but reward_model is not set "
                             "(set reward_model: <dir or s3:// URI of a trained reward model>)")
        if self.algorithm in ("grpo", "rloo", "ppo"):
            gen_batch = self.training.batch_size * self.training.gradient_accumulation_steps
            if gen_batch % self.grpo.num_generations:
                raise ValueError(
                    f"training.batch_size x gradient_accumulation_steps ({gen_batch}) must be divisible by "
                    f"grpo.num_generations ({self.grpo.num_generations}) (e.g. batch_size: "
                    f"{self.grpo.num_generations * max(1, gen_batch // self.grpo.num_generations)})")
        return self

    def _check_unused(self) -> None:
        """Refuse a setting the chosen algorithm and engine do not read (a non-default value there would be silently
        ignored): grpo.loss_type / scale_rewards on rloo, grpo.* on expert_iteration, expert_iteration.* on the
        group algorithms, engine_settings.* on engine: trl, and on engine: alignpipe every grpo.* but the group size."""
        grpo_used = {("trl", "grpo"): set(GRPOSettings.model_fields),
                     ("trl", "rloo"): {"num_generations", "beta", "epsilon", "num_iterations"},
                     ("trl", "expert_iteration"): set()}.get((self.engine, self.algorithm), {"num_generations", "beta"})
        sections = [("grpo", set(GRPOSettings.model_fields) - grpo_used)]
        if self.algorithm != "expert_iteration":
            sections.append(("expert_iteration", set(ExpertIterationSettings.model_fields)))
        if self.engine != "alignpipe":
            sections.append(("engine_settings", set(RLEngineSettings.model_fields)))
        unused = [f"{section}.{name}" for section, names in sections for name in sorted(names)
                  if getattr(getattr(self, section), name)
                  != type(getattr(self, section)).model_fields[name].get_default(call_default_factory=True)]
        if unused:
            raise ValueError(f"algorithm {self.algorithm} (engine {self.engine}) does not use {', '.join(unused)}: "
                             "remove the setting (it would be silently ignored), or choose an algorithm that reads it")

    def _check_engine(self) -> None:
        """engine: alignpipe — settings that fit together. Plug-in names (advantage, loss, kl.estimator) live in
        registries of `alignpipe.rl` (a higher layer) and are checked by the rl stage before it loads anything.
        `distributed.gpus > 1` runs it data-parallel on one node; DeepSpeed presets and several nodes are refused."""
        if self.algorithm == "expert_iteration":
            raise ValueError("algorithm=expert_iteration does not run on engine: alignpipe (use engine: trl, or "
                             "algorithm: grpo with engine_settings.loss: sft_on_positive)")
        es = self.engine_settings
        gae = es.advantage == "gae" or (es.advantage is None and self.algorithm == "ppo")
        if gae and es.critic is None:
            raise ValueError("engine_settings.advantage: gae needs a critic but engine_settings.critic is null "
                             "(remove critic: null, or choose an advantage without a critic such as grpo)")
        if gae and es.critic.init == "reward_model" and not self.reward_model:
            raise ValueError("engine_settings.critic.init: reward_model needs reward_model to be set "
                             "(set reward_model: <dir>, or critic.init: policy)")
        if self.grpo.beta:
            raise ValueError("grpo.beta is read by engine: trl only; on engine: alignpipe set engine_settings.kl.beta "
                             "(and grpo.beta: 0)")
        if self.generation.temperature <= 0:
            raise ValueError("generation.temperature must be > 0 on engine: alignpipe (RL samples completions)")
        # Several processes on one node are data-parallel (alignpipe.rl.parallel); not ZeRO sharding, not multi-node.
        if self.distributed.deepspeed != "none":
            raise ValueError(f"distributed.deepspeed: {self.distributed.deepspeed} is not supported on engine: alignpipe "
                             "(it keeps whole weights on each rank and averages gradients itself; set "
                             "distributed.deepspeed: none, or engine: trl)")
        if getattr(self.distributed, "nodes", 1) > 1:
            raise ValueError("distributed.nodes > 1 is not supported on engine: alignpipe (it runs on one node, "
                             "distributed.gpus processes; set distributed.nodes: 1, or engine: trl)")


class PreferenceConfig(_Stage):
    """Offline preference optimisation (TRL DPOTrainer and its loss variants)."""

    stage: Literal["preference"] = "preference"
    algorithm: Literal["dpo"] = "dpo"
    train_data: str = Field(description="Preference data: `prompt`/`chosen`/`rejected`.")
    eval_data: str | None = None
    ref_model: str | None = Field(None, description="Reference model (default: a frozen copy of the input model).")
    beta: float = Field(0.1, gt=0, description="DPO temperature.")
    loss_type: list[Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                            "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft"]] = Field(
        default_factory=lambda: ["sigmoid"], description="DPO loss variant(s); several are summed.")
    max_length: int = Field(2048, ge=8, description="Truncate sequences to this many tokens: 2048 holds a chat "
                            "template, a prompt and a full answer (a truncated pair hides what was preferred).")
    lora: LoraSettings | None = None
    training: PreferenceTrainingSettings = Field(default_factory=PreferenceTrainingSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)


class LmEvalSettings(_Strict):
    """Standard benchmarks through lm-evaluation-harness (extra `eval`), run offline on local task files."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task names defined by YAML files in include_path.")
    include_path: str | None = Field(None, description="Folder (or s3:// prefix) of task YAML files and their local "
                                     "JSONL/Parquet data (default: the example tasks shipped with alignpipe).")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples per prompt (default: the task's own).")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N documents of each task.")
    batch_size: int = Field(8, ge=1)


class EvaluateConfig(_Strict):
    """Generate on an eval set and score: accuracy, pass@k, maj@k, reward-model score, length, diversity,
    KL to a reference, token efficiency, CoT consistency; deltas against the baseline and the previous
    model with paired bootstrap CIs; optional forgetting sets and lm-eval benchmarks."""

    stage: Literal["evaluate"] = "evaluate"
    models: dict[str, str] = Field(description="Models to compare, name -> dir/URI (e.g. {base: ..., sft: ..., rl: ...}).")
    data: str = Field(description="Eval prompts with reference `answer` (the held-out split).")
    output: str = Field(description="Where the metrics JSON is written.")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="exact_match")],
                                      description="Verifiable rewards; accuracy = share of greedy answers whose summed reward >= 1.")
    reward_model: str | None = Field(None, description="Reward model for the mean RM score (optional).")
    k: int = Field(1, ge=1, description="Samples per prompt for pass@k / maj@k (1: greedy only).")
    n: int | None = Field(None, ge=1, description="Samples drawn per prompt for the unbiased pass@k estimator and "
                          "maj@k (>= k; default k).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for the k samples.")
    max_new_tokens: int = Field(1024, ge=1, description="Tokens generated per answer: 1024, as in RL, so an "
                                "instruct model's reasoning is not cut off before its answer (a cut-off answer "
                                "scores as wrong).")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N prompts.")
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="`auto`: vLLM when installed and a GPU is present, else HF generate.")
    trust_remote_code: bool = False
    baseline: str | None = Field(None, description="Model (a key of models) every delta is taken against (default: "
                                 "the first); each model is also compared with the one listed before it.")
    bootstrap_resamples: int = Field(1000, ge=0, description="Paired bootstrap resamples over prompts for the CIs (0: no CIs).")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap intervals.")
    kl: bool = Field(True, description="KL(model || kl_reference) per token and per sequence, and mean token "
                     "entropy, on each model's own samples (HF forward passes).")
    kl_reference: str | None = Field(None, description="Reference for KL: a key of models or a model URI (default: baseline).")
    forgetting_data: dict[str, str] = Field(default_factory=dict, description="Other-domain eval sets, name -> prompts "
                                            "file with `answer`: scored for every model, deltas show forgetting.")
    cot_reasoning_pattern: str = Field(r"<think>(.*?)</think>", description="Regex of a reasoning block (group 1: "
                                       "the reasoning) for CoT-answer consistency.")
    cot_answer_pattern: str = Field(r"(?:answer\s+is|answer\s*:|=)\s*\$?\\?(?:boxed\{)?([^\s$}]+)",
                                    description="Regex of the answer stated in the reasoning (last match, group 1).")
    lm_eval: LmEvalSettings | None = Field(None, description="Standard benchmarks through lm-eval (extra `eval`).")
    tracking: bool = True
    run_name: str | None = None

    @model_validator(mode="after")
    def _check_eval(self) -> "EvaluateConfig":
        import re

        if self.k > 1 and self.temperature < MIN_SAMPLING_TEMPERATURE:
            raise ValueError(f"temperature {self.temperature} is too low for k={self.k} samples per prompt (they "
                             f"would all be the same): set it >= {MIN_SAMPLING_TEMPERATURE}, or k: 1 (greedy only)")
        if self.n is not None and self.n < self.k:
            raise ValueError(f"n ({self.n}) must be >= k ({self.k}): pass@k needs at least k samples per prompt "
                             f"(set n: {self.k} or more, or unset n)")
        if self.baseline is not None and self.baseline not in self.models:
            raise ValueError(f"baseline {self.baseline!r} is not a key of models (one of: {', '.join(self.models)})")
        for field in ("cot_reasoning_pattern", "cot_answer_pattern"):
            try:
                re.compile(getattr(self, field))
            except re.error as e:
                raise ValueError(f"{field}: not a valid regular expression ({e})") from None
        return self


class RegisterConfig(_Strict):
    """Register a model in the MLflow Model Registry and gate its promotion to `champion`."""

    stage: Literal["register"] = "register"
    model: str = Field(description="Model dir/URI to register (must be complete: config, weights, tokenizer).")
    model_name: str = Field("alignpipe-policy", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Registered model name.")
    metrics: str | None = Field(None, description="Metrics JSON written by `evaluate` (the gate reads it).")
    metrics_key: str | None = Field(None, description="Which model's metrics in that file (default: the last one).")
    gate_metric: str = Field("accuracy", description="Metric that decides promotion.")
    gate_threshold: float = Field(0.0, description="Promote only if gate_metric >= this ...")
    higher_is_better: bool = Field(True, description="... and better than the current champion.")
    gate_on: Literal["value", "ci_low"] = Field("value", description="`value`: the metric itself must pass; `ci_low`: "
                                                "the conservative end of its bootstrap CI (the lower bound, or the "
                                                "upper one when lower is better) must pass and beat the champion's.")
    lineage: dict[str, str] = Field(default_factory=dict, description="Extra lineage tags (data digests, parent model, ...).")
    tracking: bool = True
    run_name: str | None = None


class RouteConfig(_Strict):
    """Route training prompts by the current model's pass rate (DeReason-style): `k` samples per prompt scored by
    the verifiable `rewards`; prompts solved at least `threshold` of the time go to SFT (with their reference
    solution), the others to RL. Writes `easy.jsonl` (SFT rows), `hard.jsonl` (RL prompt rows) and
    `pass_rates.json` to `output_dir`."""

    stage: Literal["route"] = "route"
    model: str = Field(description="The model whose pass rate decides (dir/URI, or `tiny`).")
    data: str = Field(description="Training prompts: `prompt` + reference `answer` (optional `completion` or "
                      "`solution`, `domain`, `difficulty`).")
    output_dir: str = Field(description="Where easy.jsonl, hard.jsonl and pass_rates.json are written (local dir or "
                            "s3:// URI, published atomically).")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="exact_match")],
                                      description="Verifiable rewards; a sample passes when every reward that applies "
                                      "to it gives its full value (as evaluate's accuracy).")
    k: int = Field(8, ge=1, description="Samples per prompt; pass rate = passing samples / k.")
    threshold: float = Field(0.5, ge=0, le=1, description="Easy (-> SFT) when pass rate >= threshold, else hard "
                             "(-> RL).")
    reference: Literal["auto", "completion", "solution", "answer"] = Field(
        "auto", description="Column holding an easy prompt's SFT target. `auto`: `completion`, else `solution`, else "
        "`answer` (the first one the row has, non-empty). An easy prompt without one goes to RL (counted as "
        "`route/easy_without_reference`).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the k samples.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the k samples.")
    max_new_tokens: int = Field(1024, ge=1, description="Tokens generated per sample (as in RL).")
    limit: int | None = Field(None, ge=1, description="Route only the first N prompts (the rest are left out).")
    batch_size: int = Field(64, ge=1, description="Prompts per generation batch.")
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="`auto`: vLLM when installed and a GPU is "
                                                   "present, else HF generate.")
    allow_empty: bool = Field(False, description="Allow an empty easy or hard split (false: an empty split is an error "
                              "naming the pass rates, since the SFT or RL step after it would have nothing to train on).")
    seed: int = 0
    trust_remote_code: bool = False
    tracking: bool = True
    run_name: str | None = None

    @model_validator(mode="after")
    def _check_route(self) -> "RouteConfig":
        if self.k > 1 and self.temperature < MIN_SAMPLING_TEMPERATURE:
            raise ValueError(f"temperature {self.temperature} is too low for k={self.k} samples per prompt (they would "
                             f"all be the same): set it >= {MIN_SAMPLING_TEMPERATURE}")
        if not self.rewards:
            raise ValueError("rewards is empty (add at least one, e.g. rewards: [{name: exact_match}])")
        if any(r.name == "reward_model" for r in self.rewards):
            raise ValueError("rewards: reward_model is not a verifiable reward; routing needs pass/fail rewards "
                             "(remove it, e.g. rewards: [{name: exact_match}])")
        return self


STAGE_CONFIGS: dict[str, type[_Strict]] = {
    "sft": SFTConfig,
    "reward_model": RewardModelConfig,
    "rl": RLConfig,
    "preference": PreferenceConfig,
    "evaluate": EvaluateConfig,
    "register": RegisterConfig,
    "route": RouteConfig,
}

AnyStageConfig = Annotated[
    SFTConfig | RewardModelConfig | RLConfig | PreferenceConfig | EvaluateConfig | RegisterConfig | RouteConfig,
    Field(discriminator="stage"),
]


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `SOURCE: field.path: message (fix)`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it, or check the spelling against `alignpipe config schema`)"
        elif e["type"] == "missing":
            msg = "required field is missing (add it)"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        elif "(" not in msg:
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    """A `key=value` override's value, parsed as YAML (so 3 -> int, true -> bool, [a, b] -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str] | None, source: str = "<overrides>") -> dict:
    """Apply dotted `a.b.c=value` overrides to a nested dict (a copy)."""
    out = json.loads(json.dumps(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"{source}: {item!r}: override must look like key=value (e.g. training.max_steps=50)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key}: {p} is not a mapping (override a leaf key)")
        node[parts[-1]] = parse_value(value)
    return out


def validate(stage: str, data: dict, source: str = "<config>") -> _Strict:
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"{source}: unknown stage {stage!r} (choose one of: {', '.join(STAGE_CONFIGS)})")
    data = dict(data)
    declared = data.pop("stage", stage)
    if declared != stage:
        raise ConfigError(f"{source}: stage: file is for stage {declared!r}, not {stage!r} (use `alignpipe stage {declared}`)")
    try:
        return STAGE_CONFIGS[stage].model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_mapping(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping; a ConfigError naming the file (and line) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file (check the path)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)} (fix the syntax)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text (save the file as UTF-8)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys to values")
    return data


def load(stage: str, path: str | Path | None = None, overrides: list[str] | None = None) -> _Strict:
    """Read a YAML config for `stage`, apply `key=value` overrides, validate."""
    source = str(path) if path else "<overrides>"
    data = read_mapping(path) if path else {}
    data = apply_overrides(data, overrides, source)
    return validate(stage, data, source)


def default_value(stage: str, dotted: str) -> Any:
    """The schema's default of `stage`'s field `dotted` (e.g. `training.learning_rate`), JSON-ready."""
    from pydantic_core import PydanticUndefined

    model: Any = STAGE_CONFIGS[stage]
    value: Any = None
    for part in dotted.split("."):
        cls = model if isinstance(model, type) else type(model)
        info = cls.model_fields[part]
        if info.default_factory is not None:
            value = info.default_factory()
        elif info.default is not PydanticUndefined:
            value = info.default
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            value = info.annotation()
        else:
            raise ConfigError(f"{stage}: {dotted} has no default")
        model = value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [v.model_dump(mode="json", exclude_defaults=True) if isinstance(v, BaseModel) else v for v in value]
    return value


def json_schema(stage: str) -> dict:
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r} (choose one of: {', '.join(STAGE_CONFIGS)})")
    return STAGE_CONFIGS[stage].model_json_schema()


def flatten(cfg: BaseModel | dict, prefix: str = "") -> dict[str, str]:
    """Flat `a.b.c -> str(value)` view (MLflow params must be flat key-value pairs)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def config_hash(cfg: BaseModel) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Settings that look wrong for the model
# --------------------------------------------------------------------------------------------------

#: Below these, a real model's chat template and answers do not fit (the demo's values are for the tiny model).
MIN_REAL_MAX_LENGTH = 64
MIN_REAL_MAX_NEW_TOKENS = 16


def real_model(uri: str | None) -> bool:
    """Whether `uri` names a real (not toy-sized) model: a hub id, or a local model folder whose config.json
    has a hidden size of 256 or more (the embedded tiny model has 128). `tiny`, s3:// URIs and unknown paths: no."""
    if not uri or uri == "tiny" or uri.startswith(("tiny:", "s3://")):
        return False
    p = Path(uri)
    if p.is_dir():
        try:
            cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        size = next((cfg[k] for k in ("hidden_size", "n_embd", "d_model") if isinstance(cfg.get(k), int)), 0)
        return size >= 256
    return not p.exists() and not uri.startswith((".", "/", "~")) and uri.count("/") == 1


def mismatch_warnings(stage: str, cfg: BaseModel) -> list[str]:
    """One line per setting that looks like a toy setting on a real model (e.g. the demo's `max_length: 32` on
    Qwen/Qwen2.5-0.5B-Instruct): such a run trains or scores on cut-off text without failing."""
    out = []
    models = list(getattr(cfg, "models", {}).values()) if stage == "evaluate" else [getattr(cfg, "model", None)]
    real = next((m for m in models if real_model(m)), None)
    if real is None:
        return out
    max_length = getattr(cfg, "max_length", None)
    if max_length is not None and max_length < MIN_REAL_MAX_LENGTH:
        out.append(f"{stage}: max_length {max_length} is below {MIN_REAL_MAX_LENGTH} for the model {real}: sequences "
                   f"are cut before the answer (set max_length, e.g. 2048)")
    gen = getattr(getattr(cfg, "generation", None), "max_new_tokens", None) if stage == "rl" else (
        getattr(cfg, "max_new_tokens", None) if stage == "evaluate" else None)
    key = "generation.max_new_tokens" if stage == "rl" else "max_new_tokens"
    if gen is not None and gen < MIN_REAL_MAX_NEW_TOKENS:
        out.append(f"{stage}: {key} {gen} is below {MIN_REAL_MAX_NEW_TOKENS} for the model {real}: completions are cut "
                   f"before the answer and score as wrong (set {key}, e.g. 1024)")
    return out
