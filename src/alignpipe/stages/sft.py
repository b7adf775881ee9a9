"""Supervised fine-tuning with TRL's SFTTrainer: full or LoRA, assistant-only loss, packing,
and three losses — `nll` (cross-entropy), `dft` (Dynamic Fine-Tuning: each token's loss weighted by
its detached probability) and `asft` (Anchored SFT: DFT plus a KL anchor to the initial model).

Packing (`packing: true`) packs whole examples into rows of `max_length` tokens with TRL's best-fit-decreasing
packer, and lays the rows out for the model's attention kernel (`packing_layout`):

- `varlen`, with flash attention (`flash_attention_2`/`_3`, flash kernels from the hub): TRL's padding-free batch,
  every row of the batch flattened into one sequence with its boundaries as `cu_seq_lens`; the varlen kernel costs
  the sum of each example's length squared and builds no mask.
- `rows`, with every other implementation (`sdpa`, `eager`, `flex_attention`): the batch stays [rows, max_length]
  (`PackedRowsCollator`), and transformers builds a block-diagonal causal mask per row from the position ids. TRL's
  flattened layout is slow there: without a varlen kernel, transformers materialises one causal mask over the whole
  flattened batch (16 rows of 256 tokens: a 4096 x 4096 mask, 16x the attention of the rows), and on the CPU that
  made packed training 0.67x the tokens/s of unpacked (`bench/stages_vs_plain.py`, the `sft_packed` row).

Either way no token attends across an example boundary, positions restart at 0 for each example, and the first
token of each example is not a target (it would be predicted from the previous example's last token), so a batch's
loss is the loss of the same examples unpadded (`tests/stages/test_sft_packing.py`)."""

from __future__ import annotations

import copy

import torch
from transformers import TrainerCallback

from alignpipe import checkpoints, models, reuse, tracking
from alignpipe.distributed import save_trained_model
from alignpipe.config import SFTConfig
from alignpipe.stages.common import (StageResult, Timer, base_lineage, load_data, log_history_summary,
                                     published_output, trainer_kwargs)


def _trl():
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    return TRLSFTConfig, SFTTrainer


class AnchoredSFTTrainerMixin:
    """Anchored SFT: L = DFT(θ) + λ · KL(π_θ || π_0) over the trained tokens, π_0 the frozen initial model."""

    ref_model: torch.nn.Module
    kl_coef: float

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        fwd = {k: v for k, v in inputs.items() if k != "labels"}
        fwd["use_cache"] = False
        logits = model(**fwd).logits[:, :-1].float()
        target = labels[:, 1:]
        mask = (target != -100).float()
        logp = logits.log_softmax(-1)
        tok_logp = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        dft = -tok_logp * tok_logp.detach().exp()
        ref_param = next(self.ref_model.parameters())
        if ref_param.device != logits.device:  # DeepSpeed (ZeRO-2) places the policy only when training starts
            self.ref_model.to(logits.device)
        with torch.no_grad():
            ref_logp = self.ref_model(**fwd).logits[:, :-1].float().log_softmax(-1)
        kl = (logp.exp() * (logp - ref_logp)).sum(-1)
        denom = mask.sum().clamp(min=1)
        # Normalised like TRL's nll/dft: by the trained tokens of the whole optimizer step (every accumulated
        # micro-batch, every rank: `num_items_in_batch`). Transformers then leaves gradient accumulation to the
        # loss; dividing by this micro-batch's own count made the loss and gradients N x too large with N steps.
        num_tokens = denom if num_items_in_batch is None else torch.as_tensor(num_items_in_batch).to(denom)
        loss = ((dft + self.kl_coef * kl) * mask).sum() / num_tokens.clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
        mode = "train" if model.training else "eval"
        self._metrics[mode]["kl_to_initial"].append(((kl * mask).sum() / denom).item())
        self._metrics[mode]["mean_token_accuracy"].append(
            (((logits.argmax(-1) == target).float() * mask).sum() / denom).item())
        return loss


def packing_layout(model) -> str:
    """`varlen` where the model's attention takes sequence boundaries without a mask (flash attention), else `rows`
    (see the module docstring)."""
    from transformers.utils.generic import is_flash_attention_requested

    return "varlen" if is_flash_attention_requested(model.config) else "rows"


class PackedRowsCollator:
    """Batches packed rows (TRL's bfd packing: `input_ids`, `labels`, `seq_lengths`) as [rows, longest row] with
    `position_ids` that restart at 0 for each packed example, and no `attention_mask`: transformers then derives a
    block-diagonal causal mask per row from the position ids (`masking_utils.find_packed_sequence_indices`; only with
    no attention mask and no KV cache, which TRL's training forward ensures with `use_cache=False`). The first token
    of every example gets label -100, as in TRL's padding-free collator. Padding at the end of a short row is a block
    of its own with label -100. `num_real_tokens` (the tokens that are not padding) is taken off again by
    `PackedRowsTrainerMixin`, which counts it for the `num_tokens` metric."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id, self.pad_to_multiple_of = pad_token_id, pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(e["input_ids"]) for e in examples]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        position_ids = torch.empty((len(examples), width), dtype=torch.long)
        for i, (e, n) in enumerate(zip(examples, lengths)):
            input_ids[i, :n] = torch.as_tensor(e["input_ids"])
            labels[i, :n] = torch.as_tensor(e.get("labels", e["input_ids"]))
            seqs = list(e.get("seq_lengths") or [n])
            if width > n:
                seqs.append(width - n)  # the padding: a block of its own
            position_ids[i] = torch.cat([torch.arange(s) for s in seqs])
        labels[position_ids == 0] = -100
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
                "num_real_tokens": torch.tensor(sum(lengths))}


class PackedRowsTrainerMixin:
    """SFTTrainer for `PackedRowsCollator` batches: TRL counts a batch without an attention mask as padding-free,
    `position_ids.size(1)` tokens (one row); this counts the batch's real tokens instead, so that `num_tokens`
    (and tokens/s) mean the same as for unpacked batches."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        real = inputs.pop("num_real_tokens", None)
        before = self._total_train_tokens
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if real is not None and self.model.training:
            n = self.accelerator.gather_for_metrics(real.reshape(1)).sum().item()
            self._total_train_tokens = before + n // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result


class AccuracyProbe(TrainerCallback):
    """Every `every` steps, greedy-decode `prompts` and stop training once exact-match accuracy >= target."""

    def __init__(self, prompts, answers, tokenizer, target: float, every: int, max_new_tokens: int):
        self.prompts, self.answers, self.tokenizer = prompts, answers, tokenizer
        self.target, self.every, self.max_new_tokens = target, every, max_new_tokens
        self.history: list[tuple[int, float]] = []

    def accuracy(self, model) -> float:
        from alignpipe.models.generate import HFGenerator

        outs = HFGenerator(model, self.tokenizer, batch_size=256).generate(
            self.prompts, n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        return self.score([o[0] for o in outs])

    def score(self, completions: list) -> float:
        """Share of `completions` whose final answer matches the reference's final answer (exact_match)."""
        from alignpipe.rewards import get

        scores = get("exact_match")(prompts=self.prompts, completions=completions, answer=self.answers)
        return sum(s or 0.0 for s in scores) / len(scores)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 and model is not None:
            acc = self.accuracy(model)
            self.history.append((state.global_step, acc))
            if acc >= self.target:
                control.should_training_stop = True
        return control


def _probe(cfg: SFTConfig, dataset, tokenizer) -> AccuracyProbe:
    if "completion" not in dataset.column_names:
        raise ValueError(f"{cfg.train_data}: stop_at_accuracy needs prompt/completion rows "
                         "(set stop_at_accuracy: null for messages data)")
    from alignpipe.rewards import completion_text, extract_answer

    rows = dataset.select(range(min(cfg.accuracy_probe_size, len(dataset))))
    references = [c[-1]["content"] if isinstance(c, list) else c for c in rows["completion"]]
    # the reference's final answer (`<answer>`, `\boxed{}`, else the text), as exact_match extracts the model's
    answers = [extract_answer(completion_text(r)) for r in references]
    max_new = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references) + 2
    return AccuracyProbe(list(rows["prompt"]), answers, tokenizer, cfg.stop_at_accuracy,
                         cfg.accuracy_probe_every, max_new)


def run(cfg: SFTConfig) -> StageResult:
    TRLSFTConfig, SFTTrainer = _trl()
    train, report = load_data(cfg.train_data, "sft")
    evald, eval_report = load_data(cfg.eval_data, "sft") if cfg.eval_data else (None, None)
    step = reuse.Step("sft", cfg, train_data=report.digest, eval_data=eval_report.digest if eval_report else None)
    if (reused := step.reused()) is not None:
        return reused
    model, tokenizer = models.load_policy(cfg.model, cfg.trust_remote_code, cfg.training.precision, train=True)
    is_messages = "messages" in train.column_names
    run_name = cfg.run_name or "sft"
    ckpt = checkpoints.Checkpoints("sft", cfg, step.key)

    with Timer() as timer, tracking.stage_run("sft", cfg, cfg.tracking, run_name) as tr, \
            published_output(cfg.output_dir) as out_dir:
        tr.log_input(cfg.train_data, report.digest, "train")
        args = TRLSFTConfig(
            **trainer_kwargs(cfg.training, str(ckpt.local_dir), tr.enabled, run_name, cfg.distributed),
            max_length=cfg.max_length,
            packing=cfg.packing,
            assistant_only_loss=cfg.assistant_only_loss and is_messages,
            completion_only_loss=cfg.assistant_only_loss if not is_messages else None,
            loss_type="dft" if cfg.loss == "dft" else "nll",
            eval_strategy="steps" if evald is not None else "no",
            eval_steps=max(1, cfg.training.max_steps // 5),
        )
        trainer_cls = SFTTrainer
        if cfg.loss == "asft":
            trainer_cls = type("AnchoredSFTTrainer", (AnchoredSFTTrainerMixin, SFTTrainer), {})
        rows = cfg.packing and packing_layout(model) == "rows"
        if rows:
            trainer_cls = type("PackedRowsSFTTrainer", (PackedRowsTrainerMixin, trainer_cls), {})
        callbacks = []
        probe = None
        if cfg.stop_at_accuracy:
            probe = _probe(cfg, train, tokenizer)
            callbacks.append(probe)
        trainer = trainer_cls(
            model=model, args=args, train_dataset=train, eval_dataset=evald, processing_class=tokenizer,
            peft_config=models.lora_config(cfg.lora) if cfg.lora else None, callbacks=callbacks)
        if rows:  # TRL builds its padding-free collator for bfd packing; keep the rows instead (module docstring)
            trainer.data_collator = PackedRowsCollator(trainer.data_collator.pad_token_id,
                                                       trainer.data_collator.pad_to_multiple_of)
        if cfg.loss == "asft":
            trainer.ref_model = copy.deepcopy(trainer.model).eval().requires_grad_(False)
            trainer.kl_coef = cfg.asft_kl_coef
        trainer.train(resume_from_checkpoint=ckpt.attach(trainer, tr))
        history = trainer.state.log_history
        metrics: dict[str, float] = {"train/steps": float(trainer.state.global_step)}
        tokens = [h["num_tokens"] for h in history if "num_tokens" in h]
        if tokens:
            metrics["train/num_tokens"] = float(tokens[-1])
        loss = log_history_summary(history, "loss")
        if loss:
            metrics["train/loss_first"], metrics["train/loss_last"] = loss["first"], loss["last"]
        if evald is not None:
            metrics["eval/loss"] = float(trainer.evaluate()["eval_loss"])
        if probe is not None and probe.history:
            metrics["train/probe_accuracy"] = probe.history[-1][1]
        tr.log_metrics(metrics)
        save_trained_model(trainer, tokenizer, out_dir)
    lineage = base_lineage("sft", cfg, train_data=cfg.train_data, train_digest=report.digest,
                           eval_digest=eval_report.digest if eval_report else None, mlflow_run_id=tr.run_id)
    result = StageResult("sft", cfg.output_dir, metrics, lineage, history, timer.seconds)
    step.record(result)
    ckpt.clear()
    return result
