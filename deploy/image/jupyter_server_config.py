"""Jupyter server settings of the tunlab image (Containerfile), read from
/opt/tunlab/etc/jupyter: the course's JupyterLab settings, kernels over IPC (the no-sudo
kernel has its own network namespace), and the kernel that fits the container's privileges.

As root with CAP_NET_ADMIN and CAP_SYS_ADMIN (root mode) every kernel is offered and the
default is python3 (drop reasons, kernel log). Otherwise (the default user, jovyan) only
"tunlab (no sudo)" is offered, so the lessons (whose metadata says python3) open in it.
"""

from tunlab import resources
from tunlab.kernel import host as privileges

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file
c.KernelManager.transport = "ipc"
c.LabApp.app_settings_dir = str(resources.jupyter_settings())
c.LabApp.news_url = None
if privileges.is_privileged():
    c.MultiKernelManager.default_kernel_name = "python3"
else:
    c.MultiKernelManager.default_kernel_name = "tunlab-nosudo"
    c.KernelSpecManager.allowed_kernelspecs = {"tunlab-nosudo"}
