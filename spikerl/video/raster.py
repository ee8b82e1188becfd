"""The spike panel drawn beside each video frame: what the hidden layers did for the current decision,
and a scrolling history of the last decisions with their actions.

Layout (one row of pixels per neuron, or per group of `pool` neurons in layers too large for the
frame's height; every hidden layer is its own band, top to bottom):

    | this decision: T columns, one per step | the last `history` decisions: one column each |
    |    white = the neuron spiked at step t  | brightness = the neuron's spikes / T          |
    | its action                              | each decision's action, under its column      |

A pooled row shows the most any neuron of its group did. Drawing is plain NumPy (repeat and copy
into a preallocated image), fast enough to keep up with rendering.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = 18
GAP = 3  # pixels between layer bands
TEXT_HEIGHT = 14


def _action_colors(values: np.ndarray, discrete: bool) -> np.ndarray:
    """RGB per action entry: discrete actions by index (tab10), continuous ones blue (-1) to red (+1)."""
    if discrete:
        palette = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                            [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
                           dtype=np.uint8)
        return palette[values.astype(np.int64) % len(palette)]
    v = np.clip(values, -1.0, 1.0)[..., None]
    blue, white, red = np.array([59, 76, 192.0]), np.array([240, 240, 240.0]), np.array([180, 4, 38.0])
    return np.where(v < 0, white + (blue - white) * -v, white + (red - white) * v).astype(np.uint8)


class RasterPanel:
    """Spikes of the hidden layers, `height` pixels tall and `width` wide, updated one decision at a time."""

    def __init__(self, layer_sizes: list[int], timesteps: int, height: int, width: int = 360, history: int = 64,
                 action_dims: int = 1, discrete: bool = True,
                 action_low: np.ndarray | None = None, action_high: np.ndarray | None = None):
        self.layer_sizes, self.timesteps, self.history = list(layer_sizes), timesteps, history
        self.height, self.width = height, width
        self.discrete = discrete
        self.action_rows = 1 if discrete else action_dims
        self.action_low = None if action_low is None else np.asarray(action_low, dtype=np.float64)
        self.action_high = None if action_high is None else np.asarray(action_high, dtype=np.float64)

        action_height = min(8, max(3, 48 // self.action_rows)) * self.action_rows
        self.action_row_height = action_height // self.action_rows
        available = height - 2 * TEXT_HEIGHT - GAP * (len(layer_sizes) - 1) - action_height - 6
        # One pool factor for all layers: the fewest neurons per pixel row that fit the height.
        self.pool = max(1, math.ceil(sum(layer_sizes) / max(available, 1)))
        self.rows = [math.ceil(n / self.pool) for n in layer_sizes]
        self.row_height = max(1, available // sum(self.rows))
        self.band_top = []
        y = TEXT_HEIGHT + 2
        for rows in self.rows:
            self.band_top.append(y)
            y += rows * self.row_height + GAP
        self.action_top = y - GAP + 4

        self.step_width = max(2, min(12, 96 // timesteps))
        self.current_left = 4
        self.history_left = self.current_left + timesteps * self.step_width + 10
        self.column_width = max(1, (width - self.history_left - 4) // history)

        self.history_counts = np.zeros((sum(self.rows), history), dtype=np.float32)  # newest in the last column
        self.history_actions = np.zeros((self.action_rows, history), dtype=np.float64)
        self.history_filled = 0
        self.current = np.zeros((sum(self.rows), timesteps), dtype=np.float32)
        self.current_action: np.ndarray | None = None
        self.background = self._background()

    def _background(self) -> np.ndarray:
        image = Image.new("RGB", (self.width, self.height), (BACKGROUND,) * 3)
        draw = ImageDraw.Draw(image)
        draw.text((self.current_left, 1), "now", fill=(200, 200, 200))
        draw.text((self.history_left, 1), f"last {self.history} decisions", fill=(200, 200, 200))
        pooled = f", {self.pool} neurons a row" if self.pool > 1 else ""
        draw.text((self.current_left, self.action_top + self.action_rows * self.action_row_height + 4),
                  f"hidden {'-'.join(map(str, self.layer_sizes))}, T = {self.timesteps}{pooled}", fill=(150, 150, 150))
        return np.asarray(image).copy()

    def _pooled_rows(self, per_neuron: list[np.ndarray]) -> np.ndarray:
        """Stack per-layer [n_l, k] arrays into [sum(rows), k], the max over each group of `pool` neurons."""
        out = []
        for values, rows in zip(per_neuron, self.rows):
            padded = np.zeros((rows * self.pool, values.shape[1]), dtype=np.float32)
            padded[:values.shape[0]] = values
            out.append(padded.reshape(rows, self.pool, -1).max(axis=1))
        return np.concatenate(out)

    def _scaled_action(self, action) -> np.ndarray:
        a = np.atleast_1d(np.asarray(action, dtype=np.float64))
        if self.discrete or self.action_low is None:
            return a
        return 2.0 * (a - self.action_low) / np.maximum(self.action_high - self.action_low, 1e-9) - 1.0

    def push(self, spikes: list[np.ndarray], action) -> None:
        """One decision: per hidden layer its spikes [T, n_l] (0 or 1), and the action it chose."""
        self.current = self._pooled_rows([np.asarray(s, dtype=np.float32).T for s in spikes])
        counts = self._pooled_rows([np.asarray(s, dtype=np.float32).sum(axis=0, keepdims=True).T for s in spikes])
        self.history_counts = np.roll(self.history_counts, -1, axis=1)
        self.history_counts[:, -1] = counts[:, 0] / self.timesteps
        self.current_action = self._scaled_action(action)
        self.history_actions = np.roll(self.history_actions, -1, axis=1)
        self.history_actions[:, -1] = self.current_action
        self.history_filled = min(self.history_filled + 1, self.history)

    def reset(self) -> None:
        """A new episode: clear the history."""
        self.history_counts[:] = 0
        self.history_filled = 0
        self.current[:] = 0
        self.current_action = None

    def _paint_bands(self, canvas: np.ndarray, values: np.ndarray, left: int, cell_width: int) -> None:
        level = (BACKGROUND + values * (255 - BACKGROUND)).astype(np.uint8)
        start = 0
        for top, rows in zip(self.band_top, self.rows):
            block = np.repeat(np.repeat(level[start:start + rows], self.row_height, axis=0), cell_width, axis=1)
            canvas[top:top + block.shape[0], left:left + block.shape[1]] = block[..., None]
            start += rows

    def draw(self) -> np.ndarray:
        """The panel as an RGB image [height, width, 3]."""
        canvas = self.background.copy()
        self._paint_bands(canvas, self.current, self.current_left, self.step_width)
        self._paint_bands(canvas, self.history_counts, self.history_left, self.column_width)
        h = self.action_row_height
        if self.current_action is not None:
            colors = _action_colors(self.current_action, self.discrete)  # [rows, 3]
            for r in range(self.action_rows):
                canvas[self.action_top + r * h:self.action_top + (r + 1) * h - 1,
                       self.current_left:self.current_left + self.timesteps * self.step_width] = colors[r]
        if self.history_filled:
            first = self.history - self.history_filled
            colors = _action_colors(self.history_actions[:, first:], self.discrete)  # [rows, k, 3]
            strip = np.repeat(np.repeat(colors, h, axis=0), self.column_width, axis=1)
            strip[h - 1::h] = BACKGROUND
            left = self.history_left + first * self.column_width
            canvas[self.action_top:self.action_top + strip.shape[0], left:left + strip.shape[1]] = strip
        return canvas

    # ------------------------------------------------------------------ where a neuron is drawn (tests)

    def _row_center(self, layer: int, neuron: int) -> int:
        return self.band_top[layer] + (neuron // self.pool) * self.row_height + self.row_height // 2

    def current_pixel(self, layer: int, neuron: int, step: int) -> tuple[int, int]:
        """(y, x) of the centre of the cell showing `neuron` of `layer` at simulation step `step`."""
        return self._row_center(layer, neuron), self.current_left + step * self.step_width + self.step_width // 2

    def history_pixel(self, layer: int, neuron: int, decisions_ago: int) -> tuple[int, int]:
        """(y, x) of the centre of the cell showing `neuron`'s spike count `decisions_ago` decisions back (0: now)."""
        column = self.history - 1 - decisions_ago
        return self._row_center(layer, neuron), self.history_left + column * self.column_width + self.column_width // 2

    def spike_level(self, count: float) -> int:
        """The grey level a history cell has for `count` spikes over T steps."""
        return int(BACKGROUND + (count / self.timesteps) * (255 - BACKGROUND))
