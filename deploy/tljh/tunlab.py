# The Littlest JupyterHub: tunlab for every participant (see deploy/tljh/README.md).
# Copy to /opt/tljh/config/jupyterhub_config.d/tunlab.py, then `sudo tljh-config reload hub`.
c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

# Each participant's server first copies the course into their home (keeping what they
# changed: `tunlab notebooks` never overwrites an edited lesson), then starts as usual.
c.Spawner.cmd = ["/bin/sh", "-c",
                 'tunlab notebooks "$HOME/tunlab-notebooks" >/dev/null 2>&1; '
                 'exec jupyterhub-singleuser "$@"',
                 "jupyterhub-singleuser"]
c.Spawner.default_url = "/lab/tree/tunlab-notebooks"

# The no-sudo kernel needs /dev/net/tun and user namespaces: keep SystemdSpawner's device
# isolation off (PrivateDevices= would hide /dev/net/tun). NoNewPrivileges is fine: the kernel
# gains its capabilities from its own user namespace, not from a setuid program.
c.SystemdSpawner.isolate_devices = False
c.SystemdSpawner.disable_user_sudo = True
c.SystemdSpawner.isolate_tmp = True
# Labs stay private: without this any participant reads another's lab through
# /proc/<their kernel's pid>/net/* (devices and counters, addresses and routes in fib_trie,
# sockets). ProtectProc=invisible gives each server a /proc with hidepid=invisible: other
# users' processes are not there at all (systemd >= 247, kernel >= 5.8; tests/test_sec_proc.py
# shows the difference).
c.SystemdSpawner.unit_extra_properties = {"ProtectProc": "invisible"}

# Measured per participant (docs/instructor-guide.md): about 0.3 GB while a lesson runs,
# under 10 CPU seconds per lesson. A cap keeps one runaway kernel from starving the room.
c.SystemdSpawner.mem_limit = "1G"
c.SystemdSpawner.cpu_limit = 1.0

# Kernels left running after a lesson hold their lab namespaces and ~0.1 GB each: cull them.
c.Spawner.args = ["--MappingKernelManager.cull_idle_timeout=1200",
                  "--MappingKernelManager.cull_interval=120"]
