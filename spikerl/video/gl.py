"""An OpenGL backend for MuJoCo's offscreen rendering, chosen once before MuJoCo is imported.

MuJoCo reads `MUJOCO_GL` when it is first imported, and a headless machine needs EGL or OSMesa. A
backend is tried in a child process (a failed one can leave the process unable to try another) by
rendering a one-body model; the first that works is exported for this process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from spikerl.errors import SpikerlError

CANDIDATES = ("egl", "osmesa")
DEBIAN_PACKAGES = {"egl": "libegl1", "osmesa": "libosmesa6", "glfw": "libglfw3"}
NAMES = {"egl": "EGL", "osmesa": "OSMesa", "glfw": "GLFW"}
_PROBE = (
    "import mujoco\n"
    "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>')\n"
    "r = mujoco.Renderer(m, 16, 16); d = mujoco.MjData(m); r.update_scene(d); r.render(); r.close()\n"
)


def renders_with(backend: str) -> bool:
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def choose_mujoco_gl(candidates: tuple[str, ...] | None = None) -> str:
    """Export and return the first working backend: `MUJOCO_GL` if the user set it, else EGL, then OSMesa.
    Raises one clear error naming the package to install when none renders."""
    chosen = os.environ.get("MUJOCO_GL")
    if "mujoco" in sys.modules:  # too late to choose; MuJoCo uses what it was imported with
        return chosen or "default"
    tried = (chosen,) if chosen else (candidates or CANDIDATES)
    for backend in tried:
        if renders_with(backend):
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
            print(f"spikerl: MuJoCo renders through {NAMES.get(backend, backend)}", file=sys.stderr)
            return backend
    if chosen:
        raise SpikerlError(f"MUJOCO_GL={chosen} cannot render on this machine; install "
                           f"{DEBIAN_PACKAGES.get(chosen, 'its libraries')} or unset MUJOCO_GL to let spikerl choose")
    install = " or ".join(f"apt install {DEBIAN_PACKAGES.get(b, b)} ({NAMES.get(b, b)})" for b in tried)
    raise SpikerlError(f"no OpenGL backend for MuJoCo renders on this machine (tried "
                       f"{', '.join(NAMES.get(b, b) for b in tried)}); install one: {install}")
