"""Videos of trained policies, optionally with their hidden layers' spikes beside each frame."""

from spikerl.video.raster import RasterPanel
from spikerl.video.record import render_episodes, write_video

__all__ = ["RasterPanel", "render_episodes", "write_video"]
