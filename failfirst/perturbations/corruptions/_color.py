"""HSV edits without the round trip: ImageNet-C's brightness and saturate on RGB batches."""

from __future__ import annotations

import torch


def add_value(x: torch.Tensor, amount: float) -> torch.Tensor:
    """skimage's rgb2hsv -> V = clip(V + amount, 0, 1) -> hsv2rgb, in closed form.

    With hue and saturation fixed every channel is proportional to V, so the edit scales
    each pixel by V'/V; a black pixel (V = 0, hence S = 0) becomes grey V'.

    Shape:
        x (N, 3, H, W) in [0, 1]; returns (N, 3, H, W).
    """
    value = x.amax(dim=1, keepdim=True)
    new = (value + amount).clamp(0.0, 1.0)
    ratio = torch.where(value > 0, new / value.clamp(min=torch.finfo(x.dtype).tiny), 0.0)
    return torch.where(value > 0, x * ratio, new.expand_as(x))


def scale_saturation(x: torch.Tensor, gain: float, offset: float) -> torch.Tensor:
    """skimage's rgb2hsv -> S = clip(S * gain + offset, 0, 1) -> hsv2rgb, in closed form.

    With hue and value fixed each channel is V - (V - channel) * S'/S. A grey pixel has
    S = 0 and hue 0 (red) in skimage, so an offset tints it red: (V, V(1 - S'), V(1 - S')).

    Shape:
        x (N, 3, H, W) in [0, 1]; returns (N, 3, H, W).
    """
    value = x.amax(dim=1, keepdim=True)
    delta = value - x.amin(dim=1, keepdim=True)
    grey = delta <= 0
    safe_value = value.clamp(min=torch.finfo(x.dtype).tiny)
    saturation = torch.where(grey, 0.0, delta / safe_value)
    new = (saturation * gain + offset).clamp(0.0, 1.0)
    # (V - channel) / delta is the hue's weight of each channel, in [0, 1].
    shrink = torch.where(grey, 0.0, new * value / delta.clamp(min=torch.finfo(x.dtype).tiny))
    coloured = value - (value - x) * shrink
    red_tint = torch.cat([value, value * (1 - new), value * (1 - new)], dim=1)
    return torch.where(grey, red_tint, coloured)
