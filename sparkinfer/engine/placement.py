"""Which device a task's model runs on, decided from the scheduler's assignment passed in as plain data.

The Spark layer reads ``TaskContext.get().resources()["gpu"].addresses`` and the driver's
``spark.task.resource.gpu.amount`` into a `TaskResources`; everything here is pure, so placement is
unit-tested with fake assignments on a machine without a GPU.

Address mapping, the one assumption made here: Spark's GPU addresses are whatever the discovery script
printed, and Spark's own ``getGpusResources.sh`` prints ``nvidia-smi`` indices. Spark standalone and
local-cluster do not set ``CUDA_VISIBLE_DEVICES``, so address ``"1"`` is ``cuda:1``. When the cluster manager
does set ``CUDA_VISIBLE_DEVICES`` and it lists the address, the device is the address's position in that
list (torch numbers the visible devices from 0). A numeric address that the list does not contain is taken
as an index among the visible devices (a container that renumbered them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparkinfer.errors import ModelLoadError, SpecError


@dataclass(frozen=True)
class TaskResources:
    """What the scheduler gave one task, as plain data.

    Attributes:
        gpu_addresses: The GPU addresses assigned to the task (Spark: ``resources()["gpu"].addresses``);
            empty when none were assigned.
        gpu_amount: The share of one GPU each task asks for (Spark: ``spark.task.resource.gpu.amount``);
            ``None`` when unknown. Below 1, several tasks, each in its own Python worker, share a GPU.
    """

    gpu_addresses: tuple[str, ...] = ()
    gpu_amount: float | None = None


def choose_device(
    requested: str,
    resources: TaskResources | None,
    *,
    cuda_visible_devices: str | None,
    cuda_device_count: int,
) -> str:
    """The torch device for a spec's ``device`` field in this task.

    ``"cpu"``, ``"mps"`` and ``"cuda:N"`` are taken as they are. ``"auto"`` and ``"cuda"`` take the GPU the
    scheduler assigned (mapped as the module docstring says); without an assignment, the first CUDA device
    this process sees (``CUDA_VISIBLE_DEVICES`` decides which that is), else the CPU.

    Args:
        requested: ``ModelSpec.device``.
        resources: The task's assignment; ``None`` outside a scheduler.
        cuda_visible_devices: The ``CUDA_VISIBLE_DEVICES`` environment variable (``None`` when unset).
        cuda_device_count: How many CUDA devices torch sees in this process.

    Returns:
        A torch device string: ``"cpu"``, ``"mps"`` or ``"cuda:N"``.

    Raises:
        SpecError: When the spec asks for CUDA and this process has none, or for a GPU index it lacks.
        ModelLoadError: When the scheduler assigned a GPU this process cannot use.
    """
    if requested in ("cpu", "mps"):
        return requested
    if requested.startswith("cuda:"):
        index = int(requested.split(":", 1)[1])
        if index >= cuda_device_count:
            raise SpecError(
                f"ModelSpec.device is {requested!r} but this process sees {cuda_device_count} CUDA device(s) "
                f"(CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}); use device='auto' to take the GPU Spark "
                "assigned to the task"
            )
        return requested
    addresses = resources.gpu_addresses if resources is not None else ()
    if addresses:
        return f"cuda:{_address_index(addresses[0], cuda_visible_devices, cuda_device_count)}"
    if cuda_device_count > 0:
        return "cuda:0"
    if requested == "cuda":
        raise SpecError(
            f"ModelSpec.device is 'cuda' but this process sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}); use device='auto' or 'cpu', or run on GPU executors"
        )
    return "cpu"


def _address_index(address: str, cuda_visible_devices: str | None, cuda_device_count: int) -> int:
    visible = [d.strip() for d in (cuda_visible_devices or "").split(",") if d.strip()]
    if address in visible:
        index = visible.index(address)
    elif address.isdigit():
        index = int(address)
    else:
        raise ModelLoadError(
            f"Spark assigned GPU address {address!r}, which is neither an index nor listed in "
            f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}; make the GPU discovery script print device "
            "indices (as Spark's getGpusResources.sh does), or set ModelSpec.device='cuda:N'"
        )
    if cuda_device_count == 0:
        raise ModelLoadError(
            f"Spark assigned GPU {address!r} to this task, but torch sees no CUDA device in this process "
            f"(CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}); install a CUDA build of torch on the executors, "
            "or set ModelSpec.device='cpu'"
        )
    if index >= cuda_device_count:
        raise ModelLoadError(
            f"Spark assigned GPU {address!r} to this task, but this process sees only {cuda_device_count} "
            f"CUDA device(s) (CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}, so cuda:0..cuda:{cuda_device_count - 1}); "
            "make the discovery script print indices of the devices the executor sees"
        )
    return index


def shared_gpu_warning(resources: TaskResources | None, *, device: str, model: str, model_bytes: int) -> str | None:
    """The warning for a GPU shared by several tasks, each loading its own copy of the model.

    Spark runs up to ``floor(1 / spark.task.resource.gpu.amount)`` tasks on one GPU at once, each in its own
    Python worker with its own per-process cache, so each holds a copy of the model.

    Returns:
        The message, or ``None`` when each task has a whole GPU (or runs on the CPU).
    """
    amount = resources.gpu_amount if resources is not None else None
    if amount is None or amount >= 1 or not device.startswith("cuda"):
        return None
    copies = math.floor(1 / amount + 1e-9)
    each = model_bytes / 2**30
    return (
        f"spark.task.resource.gpu.amount={amount:g} lets {copies} tasks share {device}, each in its own Python "
        f"worker with its own copy of {model} ({each:.2f} GiB each, up to {copies * each:.2f} GiB on that GPU); "
        "use host='executor' (or the default 'auto') for one copy per GPU fed by every task, or set "
        "spark.task.resource.gpu.amount=1"
    )


def resolve_host(requested: str, resources: TaskResources | None, device: str, *, continuous: bool = False) -> str:
    """Where a task's weights live: ``"worker"`` (this Python worker) or ``"executor"`` (the model host).

    ``"auto"``, in a Spark task, is ``"executor"`` when several task slots share the task's GPU (a task GPU
    amount below 1, so each slot's worker would hold a copy of the model on it), or when the host would
    decode the task's generation continuously (`continuous`), which beat per-worker static micro-batches
    even on CPU (BENCHMARKS.md); otherwise ``"worker"``: on CPU, embedding and classification measured
    faster in separate workers, and with a whole GPU per task a host only adds a hop. Outside a Spark task
    (`resources` is None) there is no executor to share, and ``"auto"`` is ``"worker"``.

    Args:
        requested: ``ModelSpec.host``.
        resources: The task's assignment; ``None`` outside a scheduler.
        device: The resolved torch device.
        continuous: Whether the spec is generation that the host decodes continuously.
    """
    if requested != "auto":
        return requested
    if resources is None:
        return "worker"
    amount = resources.gpu_amount
    shared = device.startswith("cuda") and amount is not None and amount < 1
    return "executor" if shared or continuous else "worker"
