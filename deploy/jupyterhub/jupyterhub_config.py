"""JupyterHub for a lab: each person gets a single-user server that opens the brats-seg dashboard.

Run it as root (PAM logs people in and LocalProcessSpawner starts each server as its user)::

    jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

docs/jupyterhub.md is the admin's guide: install, users, spawner, the shared model and cache, limits,
the idle culler, TLS. The settings below can be given in the hub's environment; the rest of the file
follows from them. ``tests/test_jupyterhub.py`` loads this file and overrides only the authenticator,
the spawner (no system users), the ports and the culler's timeout.
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub defines it)

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # jupyterhub-singleuser and the kernels run from the hub's environment

# ---- settings ------------------------------------------------------------------------------------
#: The folder holding app.ipynb and model/ (this repository's checkout), readable by every user.
APP_DIR = Path(os.environ.get("BRATS_SEG_APP_DIR") or HERE.parents[1])
#: Shared by all users, writable by them (group brats-lab, mode 2770): converted networks in cache/
#: (OpenVINO converts each network once per cache folder) and the queue of predictions in turns/.
SHARED_DIR = Path(os.environ.get("BRATS_SEG_SHARED_DIR") or "/srv/brats-seg")
#: Predictions that run at once across the whole server (the others queue, first come, first served;
#: each page shows its place). Half the cores by default: the other half keeps everyone's dashboard
#: responsive while the predictions run (docs/jupyterhub.md has the measurement).
CONCURRENT_JOBS = int(os.environ.get("BRATS_SEG_CONCURRENT_JOBS") or max(1, (os.cpu_count() or 2) // 2))
#: Seconds without activity after which a user's server (and its kernel, with ~1.5 GB) is stopped.
IDLE_TIMEOUT_S = int(os.environ.get("BRATS_SEG_IDLE_TIMEOUT") or 3600)

# ---- the hub ---------------------------------------------------------------------------------------
# Loopback only: a reverse proxy (nginx, Caddy) terminates TLS in front of it (docs/jupyterhub.md).
c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.authenticator_class = "pam"  # the server's accounts; LDAP or OAuth: see docs/jupyterhub.md
c.LocalAuthenticator.allowed_groups = {os.environ.get("BRATS_SEG_LAB_GROUP") or "brats-lab"}
c.JupyterHub.spawner_class = "localprocess"  # each server as its user; limits need systemd or docker

# ---- each user's server: the dashboard, one thread, the shared cache and queue ---------------------
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.notebook_dir = str(APP_DIR)
c.Spawner.default_url = "/voila/render/app.ipynb"  # Voila's server extension renders the dashboard
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120


def corrections_dir(spawner) -> str:
    """Each user's "Save for training" folder, in their home (the app folder is read-only to them)."""
    home = getattr(spawner, "home_dir", None)
    if not home:
        import pwd

        home = pwd.getpwnam(spawner.user.name).pw_dir
    return str(Path(home) / "brats-seg-corrections")


c.Spawner.environment = {
    "BRATS_SEG_MODEL": os.environ.get("BRATS_SEG_MODEL") or str(APP_DIR / "model"),
    "BRATS_SEG_CACHE": str(SHARED_DIR / "cache"),
    "BRATS_SEG_TURNS_DIR": str(SHARED_DIR / "turns"),
    "BRATS_SEG_CONCURRENT_JOBS": str(CONCURRENT_JOBS),
    "BRATS_SEG_CORRECTIONS_DIR": corrections_dir,
    # one thread per kernel (torch, and OpenVINO, which follows torch.get_num_threads()): a prediction
    # takes one core, and the queue above bounds how many cores predictions take in all
    "BRATS_SEG_TORCH_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    # the single-user server's settings (large uploads, a kernel cap per user, idle kernels culled)
    "JUPYTER_CONFIG_PATH": str(HERE / "singleuser"),
}

# ---- the idle culler: stops the servers of people who left --------------------------------------
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={IDLE_TIMEOUT_S}",
            f"--cull-every={max(10, IDLE_TIMEOUT_S // 10)}",
        ],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
