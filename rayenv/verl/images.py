"""Screenshots as the model sees them: decoded, and downscaled to a pixel budget on the model's patch grid.

A Qwen-VL model turns an image into ``(height / 28) * (width / 28)`` tokens (14-pixel patches merged
2x2), and every screenshot of an episode counts toward ``rollout.response_length``. A 1920x1080
screen is ~2,600 tokens; ``rayenv.agent.max_pixels`` trades detail for turns. Sizes are rounded to
the processor's grid here (as Qwen's own ``smart_resize`` does), so the processor does not resize
again and the size the model saw is exactly this image's size.
"""

from __future__ import annotations

import io
import math
from typing import Any

#: Qwen2-VL / Qwen2.5-VL: 14-pixel patches, merged 2x2 into one token.
QWEN_VL_FACTOR = 28


def grid_factor(processor: Any) -> int:
    """Pixels per token side for this processor's image processor (28 for Qwen-VL)."""
    image_processor = getattr(processor, "image_processor", None)
    patch, merge = getattr(image_processor, "patch_size", None), getattr(image_processor, "merge_size", None)
    return int(patch * merge) if patch and merge else QWEN_VL_FACTOR


def model_size(width: int, height: int, *, max_pixels: int | None, factor: int = QWEN_VL_FACTOR) -> tuple[int, int]:
    """(width, height) on the ``factor`` grid, aspect kept, at most ``max_pixels`` pixels (None: no cap)."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height))) if max_pixels else 1.0

    def snap(side: int) -> int:
        snapped = math.floor(side * scale / factor) if max_pixels else round(side / factor)
        return max(factor, snapped * factor)

    return snap(width), snap(height)


def model_image(png: bytes, *, max_pixels: int | None, factor: int = QWEN_VL_FACTOR) -> Any:
    """The screenshot as an RGB PIL image of :func:`model_size`."""
    from PIL import Image  # verl depends on pillow; the env host never calls this

    image = Image.open(io.BytesIO(png)).convert("RGB")
    size = model_size(*image.size, max_pixels=max_pixels, factor=factor)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)
