"""The devices a model runs on (`--device`): checking a name, and that this machine has it.

torch is imported only to look for a GPU named explicitly; `auto` and `cpu` need no look.
"""

from __future__ import annotations

import re

from pixsift.errors import ModelError

# The devices pixsift runs a model on: "cuda:1" names one GPU of several.
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def check_device(device: str) -> str:
    """The device name in its canonical lower case ("CPU" is "cpu", as users and docs write
    it); an unknown one is refused at once, not only when the model loads (which an index run
    over unchanged files, or a quick search, never does)."""
    if not isinstance(device, str) or _DEVICE.fullmatch(device.lower()) is None:
        raise ModelError(f"Unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps.")
    return device.lower()


def check_device_present(device: str) -> None:
    """Raise ModelError, naming the devices there are, when torch cannot use `device` here.

    torch itself says so only once the model is moved there, with a traceback. torch is
    imported only for a GPU named explicitly: `auto` and `cpu` always run.
    """
    if device in ("auto", "cpu"):
        return
    import torch

    kind, _, number = device.partition(":")
    if kind == "mps":
        present = torch.backends.mps.is_available()
        missing = "torch sees no Apple GPU (MPS) here"
    elif not torch.cuda.is_available():
        present, missing = False, "torch sees no CUDA GPU here"
    else:
        count = torch.cuda.device_count()
        present = not number or int(number) < count
        missing = f"torch sees {count} CUDA GPU(s) here, numbered from 0"
    if not present:
        raise ModelError(
            f"Device {device!r} is not available: {missing}. Use one of: {', '.join(devices_present())}."
        )


def devices_present() -> list[str]:
    """The device names that run a model on this machine (imports torch)."""
    import torch

    present = ["auto", "cpu"]
    if torch.cuda.is_available():
        present += ["cuda", *(f"cuda:{number}" for number in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        present.append("mps")
    return present
