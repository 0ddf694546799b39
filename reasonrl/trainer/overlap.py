"""Generation one step ahead in server mode (recipe key `async_generation_steps: 1`): while the trainers run
generation step t's optimizer updates, the vLLM server already generates step t+1's responses. One job, that overlap.

With a dedicated vLLM node, a synchronous step is two halves in turn: the server generates while every trainer waits,
then the trainers update while the server waits. Here, at step t:
  1. Every process reads its share of step t+1's prompts ahead in its data loader (`Lookahead`, fed by the Trainer's
     get_batch_samples), tokenizes it as TRL will (`_tokenize_prompts`), and the shares are gathered: every process
     knows whether a next step will be generated ahead (not after the run's last step, nor past an epoch's end).
  2. TRL syncs the weights (those after step t-1's updates) and asks the server for step t's responses. The main
     process's client answers with the responses generated ahead during step t-1 (or generates them now, at the
     first step), then at once sends step t+1's request from a thread (`GenerationAhead`) and returns.
  3. Rewards, old-policy log-probs and the updates of step t run while the server generates step t+1.
  4. At step t+1 the weight sync first waits for that request (the server never changes weights under a
     generation; the other processes wait in short heartbeat collectives, never one as long as the generation), then
     pushes the weights after step t's updates, and step 2 repeats.

Step t+1's responses are sampled by the weights after step t-1: one generation step (`updates_per_generation_step`
optimizer updates) older than the weights they train. The behaviour policy's log-probs come from vLLM; TRL's
truncated importance weight (`vllm_importance_sampling_correction`, required) corrects the difference token by
token, and the PPO ratio stays against the trainer's own old-policy log-probs, as in veRL's one-step-off-policy and
NeMo-RL's async GRPO. Logged per generation step: `async/staleness_updates` (0 at the first step and after a
relaunch, else the updates between the sampling weights and the trained ones; also in each data_order line), with
TRL's `sampling/importance_sampling_ratio/*` and `sampling/sampling_logp_difference/*`.

Data order and resume: the prompts read ahead are the ones the Trainer takes next, so the order is a synchronous
run's; a step is logged in data_order/ when it is trained, so a relaunch regenerates the step that was in flight
(its responses are lost, its prompts are neither skipped nor repeated).

Test: python -m pytest tests/test_overlap.py -q
"""

import copy
import threading
import time
from collections import deque


class Lookahead:
    """The Trainer's epoch iterator, read ahead: `take(n)` gives the next n items, as the Trainer would get them, and
    `peek(k)` the item k places after the ones taken (None past the end)."""

    def __init__(self, iterator):
        self.iterator, self.queue = iterator, deque()

    def _fill(self, n: int) -> bool:
        while len(self.queue) < n:
            try:
                self.queue.append(next(self.iterator))
            except StopIteration:
                return False
        return True

    def take(self, n: int) -> list:
        self._fill(n)
        return [self.queue.popleft() for _ in range(min(n, len(self.queue)))]

    def peek(self, k: int):
        return self.queue[k] if self._fill(k + 1) else None


class GenerationAhead:
    """The main process's one generation request in flight, on a daemon thread (a stopping run never waits for it).
    `generate` is the client's own generate."""

    def __init__(self, generate):
        self.generate, self.pending = generate, None

    def start(self, kwargs: dict) -> None:
        box = {"kwargs": kwargs}

        def run():
            try:
                box["result"] = self.generate(**kwargs)
            except BaseException as error:  # raised where the responses are taken
                box["error"] = error

        box["thread"] = threading.Thread(target=run, name="generation-ahead", daemon=True)
        box["thread"].start()
        self.pending = box

    def wait(self) -> None:
        """Until the request in flight (if any) is done; its result stays for `take`."""
        if self.pending is not None:
            self.pending["thread"].join()

    def take(self, kwargs: dict):
        """The responses generated ahead for this request, or None when none was sent. A request in flight for other
        prompts or sampling settings is an error (the prompts read ahead must be the ones trained next)."""
        box, self.pending = self.pending, None
        if box is None:
            return None
        box["thread"].join()
        if box["kwargs"] != kwargs:
            raise RuntimeError("async_generation_steps: the responses generated ahead were for other prompts than "
                               "this generation step's; the data order would break. Set async_generation_steps: 0 "
                               "and report this.")
        if "error" in box:
            raise box["error"]
        return box["result"]


class Overlap:
    """Installs the overlap on a trainer (ClipHigherGRPOTrainer with async_generation_steps: 1, server mode) and holds
    its state. The trainer calls `next_batch_of` from get_batch_samples and `before_generation` before TRL generates."""

    def __init__(self, trainer):
        if trainer.tools or trainer.environment_factories is not None or trainer.rollout_func is not None:
            raise ValueError("async_generation_steps=1 generates ahead single-turn prompts only: tools, environments "
                             "and rollout_func run during generation. Set async_generation_steps: 0.")
        self.trainer = trainer
        self.lookahead = None
        self.in_training = False  # a training generation is running (validation's requests pass straight through)
        self.next_prompts = None  # the main process's unique prompts of the next generation step
        self.ahead_from = None  # global step of the weights that generate the step ahead (None: none ahead)
        gen = trainer.vllm_generation
        main = trainer.accelerator.is_main_process
        self.ahead = GenerationAhead(gen.vllm_client.generate) if main else None
        sync = gen.sync_weights

        def sync_weights():
            from reasonrl.trainer.validation import heartbeat_s, while_main_works
            # the server must not change weights under a generation: wait for the one in flight first
            while_main_works(self.ahead.wait if main else None, heartbeat_s(trainer.args.ddp_timeout))
            sync()

        gen.sync_weights = sync_weights
        if main:
            gen.vllm_client.generate = self._generate

    def next_batch_of(self, epoch_iterator, num_batches: int) -> list:
        """The Trainer's next `num_batches` batches, read through the lookahead."""
        if self.lookahead is None or self.lookahead.iterator is not epoch_iterator:
            self.lookahead = Lookahead(epoch_iterator)
        return self.lookahead.take(num_batches)

    def before_generation(self) -> int:
        """Every process, before TRL generates a training step: prepare the next step's request (step 1 of the module
        docstring). Returns the staleness of this step's responses in optimizer updates."""
        from accelerate.utils import gather_object

        trainer = self.trainer
        args, step = trainer.args, trainer.state.global_step
        staleness = 0 if self.ahead_from is None else step - self.ahead_from
        # the Trainer has taken this update's batches; the next generation's batch is one generation of batches on
        batch = None
        if step + args.updates_per_generation_step < trainer.state.max_steps and self.lookahead is not None:
            batch = self.lookahead.peek(args.steps_per_generation * args.num_iterations
                                        - args.gradient_accumulation_steps)
        mine = None
        if batch is not None:
            mine = trainer._tokenize_prompts(copy.deepcopy([x["prompt"] for x in batch]))[0]
        shares = gather_object([mine])
        if any(share is None for share in shares):
            self.next_prompts, self.ahead_from = None, None
        else:
            self.next_prompts = [p for share in shares for p in share][::trainer.num_generations]
            self.ahead_from = step
        self.in_training = True
        return staleness

    def after_generation(self) -> None:
        self.in_training = False

    def _generate(self, *args, **kwargs):
        """The main process's client.generate: a training step's responses from the request sent ahead, then the
        next step's request sent."""
        if not self.in_training or args:
            return self.ahead.generate(*args, **kwargs)
        started = time.perf_counter()
        result = self.ahead.take(kwargs)
        if result is None:
            result = self.ahead.generate(**kwargs)
        self.trainer._metrics["train"]["async/wait_s"].append(time.perf_counter() - started)
        if self.next_prompts is not None:
            self.ahead.start({**kwargs, "prompts": self.next_prompts})
            self.next_prompts = None
        return result
