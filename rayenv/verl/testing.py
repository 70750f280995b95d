"""Stand-ins for the model side, so verl's agent-loop machinery runs on a CPU with no downloads.

* :func:`build_tiny_model` writes a real Hugging Face model directory (``config.json`` + a
  byte-level BPE fast tokenizer with a ChatML template carrying Qwen's special tokens, trained here
  on a few lines) that verl's ``HFModelConfig`` loads like any checkpoint. It has no weights:
  nothing generates with it. Text-only (``qwen2``) by default; ``vision=True`` makes it a
  ``qwen2_vl`` checkpoint with transformers' Qwen2-VL image processor at its default config, which
  verl loads as a real ``Qwen2VLProcessor`` (screenshots become image tokens).
* :class:`ScreenshotsOnlyVideoProcessor`: transformers' Qwen2-VL processor insists on a video
  processor, and transformers' video processors need torchvision, which cannot load beside this
  machine's CPU torch (PyPI's torchvision links CUDA torch). Screenshots are never videos, so this
  one refuses videos and needs nothing. Importing this module registers it (only where torchvision
  is missing), in every verl process when ``VERL_USE_EXTERNAL_MODULES=rayenv.verl.testing``.
* :class:`ScriptedServer` answers ``server_manager.generate`` like verl's ``LLMServerClient``:
  it decodes the prompt, finds which task it is about, and replies with the next scripted action,
  after an optional randomized "thinking" delay.
"""

from __future__ import annotations

import asyncio
import json
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
                  "<|image_pad|>", "<|video_pad|>"]


def build_tiny_model(path: str | Path, corpus: Sequence[str] = (), *, vision: bool = False) -> Path:
    """Write a weightless qwen2 (or, with ``vision``, qwen2_vl) model dir with a small real tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, bos_token_id=None,
                num_attention_heads=2, num_key_value_heads=1, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    if vision:
        _save_qwen2_vl(out, tokenizer, text)
    else:
        from transformers import Qwen2Config

        Qwen2Config(**text, architectures=["Qwen2ForCausalLM"]).save_pretrained(out)
    return out


def _save_qwen2_vl(out: Path, tokenizer: Any, text: dict[str, Any]) -> None:
    """config.json of the qwen2_vl family, the image processor's default config, the video stand-in's."""
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    Qwen2VLConfig(text_config=text, vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2},
                  architectures=["Qwen2VLForConditionalGeneration"], bos_token_id=None,
                  eos_token_id=tokenizer.eos_token_id, **ids).save_pretrained(out)
    Qwen2VLImageProcessorPil().save_pretrained(out)
    (out / "video_preprocessor_config.json").write_text(
        json.dumps({"video_processor_type": "ScreenshotsOnlyVideoProcessor"}))


def _register_screenshots_only_video_processor() -> type | None:
    """Register :class:`ScreenshotsOnlyVideoProcessor` for qwen2_vl when torchvision cannot load."""
    try:
        from transformers.utils import is_torchvision_available
    except ImportError:  # no transformers here (the env host): nothing to register
        return None
    if is_torchvision_available():
        return None
    from transformers import BaseVideoProcessor, Qwen2VLConfig  # BaseVideoProcessor: transformers' placeholder
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor
    from transformers.utils.hub import PushToHubMixin
    from transformers.utils.import_utils import DummyObject

    class Usable(DummyObject):
        """The placeholder's metaclass refuses every attribute; this subclass is a plain class."""

        __getattribute__ = type.__getattribute__

    class ScreenshotsOnlyVideoProcessor(BaseVideoProcessor, PushToHubMixin, metaclass=Usable):
        """Passes Qwen2VLProcessor's type check; refuses videos (the agent loop sends none)."""

        merge_size = 2

        def __init__(self, **_: Any) -> None:
            pass

        @classmethod
        def from_pretrained(cls, *_: Any, **__: Any) -> "ScreenshotsOnlyVideoProcessor":
            return cls()

        def to_dict(self) -> dict[str, Any]:
            return {"video_processor_type": type(self).__name__}

        def __call__(self, *_: Any, **__: Any) -> Any:
            raise ValueError("ScreenshotsOnlyVideoProcessor takes no videos (torchvision is not installed)")

    AutoVideoProcessor.register(Qwen2VLConfig, ScreenshotsOnlyVideoProcessor, exist_ok=True)
    return ScreenshotsOnlyVideoProcessor


ScreenshotsOnlyVideoProcessor = _register_screenshots_only_video_processor()


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
