"""A counter of host-device traffic for the cuda tests, on a GPU and in the simulator alike."""
import importlib

import numpy as np


def count_transfers(K, monkeypatch):
    """Counts of what crosses between host and device, and of device allocations, from now on.

    {"up": [elements copied host -> device], "down": [elements copied device -> host],
     "allocations": [elements of each new device array]}: cuda.to_device (up, and an allocation),
    copy_to_device on a device array (up), a host array handed to a kernel launch (up: Numba copies
    it over on its own), copy_to_host (down), cuda.device_array and device_array_like (allocations).
    """
    from numba import cuda
    log = {"up": [], "down": [], "allocations": []}
    cls = type(K.zeros(1))

    def counted(owner, name, *kinds, size):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            n = size(args, kwargs)
            for kind in kinds:
                log[kind].append(n)
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)

    counted(cuda, "to_device", "up", "allocations", size=lambda a, k: int(np.size(a[0])))
    counted(cuda, "device_array", "allocations",
            size=lambda a, k: int(np.prod(a[0] if a else k["shape"], dtype=np.int64)))
    counted(cuda, "device_array_like", "allocations", size=lambda a, k: int(np.size(a[0])))
    counted(cls, "copy_to_device", "up", size=lambda a, k: int(np.size(a[1])))
    counted(cls, "copy_to_host", "down", size=lambda a, k: int(a[0].size))
    # a host array passed to a kernel launch goes through an ArgHint (In / Out / InOut)
    patched = set()
    for module_name in ("numba.cuda.args", "numba.cuda.simulator.args"):
        try:
            hints = importlib.import_module(module_name)
        except ImportError:
            continue
        for hint in {getattr(hints, name) for name in ("In", "Out", "InOut") if hasattr(hints, name)}:
            if "to_device" in vars(hint) and hint not in patched:
                patched.add(hint)
                counted(hint, "to_device", "up", size=lambda a, k: int(np.size(a[0].value)))
    return log
