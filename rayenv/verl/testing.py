"""Stand-ins for the model side, so verl's agent-loop machinery runs on a CPU with no downloads.

* :func:`build_tiny_model` writes a real Hugging Face model directory (``config.json`` of the
  ``qwen2`` family + a byte-level BPE fast tokenizer with a ChatML template, trained here on a few
  lines) that verl's ``HFModelConfig`` loads like any checkpoint. It has no weights: nothing
  generates with it. No image processor: Qwen-VL's processor needs torchvision, which does not
  install beside this machine's CPU torch build, so screenshots reach the prompt as text stand-ins
  (:mod:`rayenv.verl.messages`).
* :class:`ScriptedServer` answers ``server_manager.generate`` like verl's ``LLMServerClient``:
  it decodes the prompt, finds which task it is about, and replies with the next scripted action,
  after an optional randomized "thinking" delay.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>"]


def build_tiny_model(path: str | Path, corpus: Sequence[str] = ()) -> Path:
    """Write a weightless qwen2-family model dir with a small real tokenizer; returns the path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config

    out = Path(path)
    if (out / "tokenizer.json").exists() and (out / "config.json").exists():
        return out
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(corpus) + ["pyautogui.typewrite('text') Task: screenshot ```python```"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out)
    Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, architectures=["Qwen2ForCausalLM"],
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id).save_pretrained(out)
    return out


class ScriptedServer:
    """A policy from a script: ``{instruction: [reply, reply, ...]}``; the n-th reply answers turn n.

    Quacks like verl's ``LLMServerClient.generate`` (returns a ``TokenOutput``). ``think`` is a
    (min, max) range of seconds slept per reply, standing in for generation time. A reply past the
    end of its script is ``DONE``.
    """

    def __init__(self, tokenizer: Any, scripts: Mapping[str, Sequence[str]],
                 think: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.scripts = dict(scripts)
        self.think = think
        self.random = random.Random(seed)
        self.calls = 0

    def reply_for(self, prompt: str) -> str:
        instruction = next((i for i in self.scripts if i in prompt), None)
        if instruction is None:
            raise KeyError("the prompt names no scripted task")
        turn = prompt.count("<|im_start|>assistant") - 1  # the last one is the generation prompt
        script = self.scripts[instruction]
        return script[turn] if turn < len(script) else "```DONE```"

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **_: Any) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        self.calls += 1
        if self.think[1] > 0:
            await asyncio.sleep(self.random.uniform(*self.think))
        reply = self.reply_for(self.tokenizer.decode(prompt_ids, skip_special_tokens=False))
        token_ids = self.tokenizer.encode(reply, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return TokenOutput(token_ids=token_ids, stop_reason="completed")


def pyautogui_script(actions: Sequence[str]) -> list[str]:
    """Model replies that perform ``actions`` one per turn, in the ``pyautogui`` parser's format."""
    return [f"Next step.\n```python\n{action}\n```" if action not in ("WAIT", "DONE", "FAIL") else f"```{action}```"
            for action in actions]
