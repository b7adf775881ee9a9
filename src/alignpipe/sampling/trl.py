"""Samplers in TRL's GRPO/RLOO trainers.

`sampling_trainer(GRPOTrainer, smp)` returns a subclass that
- draws prompts with `smp` through TRL's sampler hook (`_get_train_sampler`): each generation batch is
  `smp.select(prompts per generation batch)`, every index repeated `num_generations` times and the block
  `num_iterations x steps_per_generation` times, TRL's `RepeatSampler` layout (`uniform` keeps TRL's own sampler);
- feeds each scored generation batch back (`_calculate_rewards`: the summed, weighted rewards per completion,
  gathered over processes; the prompt index travels in the `INDEX_COLUMN` column the stage adds to the data);
- adds `smp.metrics()` to every training log (so they reach MLflow with TRL's own metrics);
- saves the sampler state into every checkpoint folder and loads it on resume (the data position is the
  sampler's state, so TRL's batch skipping is switched off with `ignore_data_skip` for adaptive samplers).

TRL generates before it can drop anything, so `drop_equal_groups` cannot refill a batch here; instead it skips
prompts whose last group was all-equal when drawing (at most `max_attempts` draws per slot) and logs the share
skipped as `sampler/drop_rate`.

The DataLoader asks for the next batch one step ahead, so feedback reaches the sampler one generation batch late.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .samplers import Sampler
from .store import STATE_FILE

INDEX_COLUMN = "_alignpipe_index"


class AdaptiveRepeatSampler(torch.utils.data.Sampler):
    """TRL's RepeatSampler layout with the prompts chosen by an alignpipe sampler, batch by batch."""

    def __init__(self, smp: Sampler, n_prompts: int, batch_size: int, mini_repeat_count: int, repeat_count: int,
                 step_fn=lambda: 0):
        self.smp, self.n_prompts, self.batch_size = smp, n_prompts, batch_size
        self.mini_repeat_count, self.repeat_count, self.step_fn = mini_repeat_count, repeat_count, step_fn

    def _draw(self, step: int) -> list[int]:
        smp = self.smp
        chosen = smp.select(self.batch_size, step)
        if not smp.drops_equal_groups:
            return chosen
        drawn, skipped = len(chosen), 0
        for slot, i in enumerate(chosen):
            for _ in range(smp.max_attempts - 1):
                rec = smp.store.records[smp.ids[i]]
                if not rec.last_all_equal:
                    break
                skipped += 1
                i = smp.select(1, step)[0]
                drawn += 1
            chosen[slot] = i
        smp.record_drops(skipped, drawn)
        return chosen

    def __iter__(self):
        for _ in range(len(self) // (self.batch_size * self.mini_repeat_count * self.repeat_count)):
            chunk = self._draw(self.step_fn())
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        return (self.n_prompts // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count


def sampling_trainer(trainer_cls, smp: Sampler):
    """A subclass of TRL's GRPOTrainer/RLOOTrainer that samples prompts with `smp` and teaches it."""

    class SamplingTrainer(trainer_cls):
        sampler = smp

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if smp.name != "uniform":  # the sampler's saved state is the data position: no batch skipping
                self.args.ignore_data_skip = True

        def _get_train_sampler(self, dataset=None):
            if smp.name == "uniform":
                return super()._get_train_sampler(dataset)
            dataset = self.train_dataset if dataset is None else dataset
            return AdaptiveRepeatSampler(smp, len(dataset), self.args.generation_batch_size // self.num_generations,
                                         self.num_generations, self.num_iterations * self.args.steps_per_generation,
                                         step_fn=lambda: self.state.global_step)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            if self.model.training and inputs and INDEX_COLUMN in inputs[0]:
                ids = [int(x[INDEX_COLUMN]) for x in inputs]
                if self.accelerator.num_processes > 1:
                    from accelerate.utils import gather_object

                    ids = gather_object(ids)
                w = self.reward_weights.to(rewards_per_func.device)
                totals = (rewards_per_func * w.unsqueeze(0)).nansum(dim=1).tolist()
                smp.observe_flat(ids, totals, self.num_generations, self.state.global_step)
            return rewards_per_func

        def log(self, logs, start_time=None):
            if self.model.training and "loss" in logs:
                logs.update(smp.metrics())
            super().log(logs, start_time)

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                smp.save(folder / STATE_FILE)

        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            if isinstance(resume_from_checkpoint, (str, os.PathLike)):
                state = Path(resume_from_checkpoint) / STATE_FILE
                if state.exists():
                    import json

                    smp.load_state_dict(json.loads(state.read_text()))
            return super().train(resume_from_checkpoint, *args, **kwargs)

    SamplingTrainer.__name__ = SamplingTrainer.__qualname__ = f"Sampling{trainer_cls.__name__}"
    return SamplingTrainer
