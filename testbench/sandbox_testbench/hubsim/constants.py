"""Static Hub facts the emulator serves: Space stages, SDKs and the hardware price catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Stage = Literal[
    "NO_APP_FILE",
    "CONFIG_ERROR",
    "BUILDING",
    "BUILD_ERROR",
    "RUNNING",
    "RUNNING_BUILDING",
    "RUNTIME_ERROR",
    "DELETING",
    "STOPPED",
    "PAUSED",
    "APP_STARTING",
    "RUNNING_APP_STARTING",
    "SLEEPING",
]

#: Stages in which a container is up, so `hardware.current` is set and the sandbox app can answer.
SERVING_STAGES: Final = frozenset({"RUNNING", "RUNNING_BUILDING", "RUNNING_APP_STARTING"})
#: Stages in which a container holds hardware (serving, or crashed after having been scheduled).
HARDWARE_HOLDING_STAGES: Final = SERVING_STAGES | {"RUNTIME_ERROR"}
#: A build is in flight: a hardware request only updates `requested`, the build end picks it up.
BUILDING_STAGES: Final = frozenset({"BUILDING", "APP_STARTING"})
#: Nothing runs and nothing starts until a restart.
IDLE_STAGES: Final = frozenset({"PAUSED", "STOPPED"})
#: An idle Space past its sleep time; a request to its app wakes it (fidelity: F26).
ASLEEP: Final = "SLEEPING"
#: Stages the Hub bills hardware for: starting or running, never building, sleeping or paused (fidelity: F29).
BILLED_STAGES: Final = frozenset({"APP_STARTING", "RUNNING", "RUNNING_BUILDING", "RUNNING_APP_STARTING"})

Sdk = Literal["gradio", "streamlit", "docker", "static"]
#: The file each SDK needs to start; a Space without it ends its build in NO_APP_FILE (fidelity: F19).
APP_FILES: Final[dict[str, str]] = {
    "gradio": "app.py",
    "streamlit": "app.py",
    "docker": "Dockerfile",
    "static": "index.html",
}

DEFAULT_FLAVOR: Final = "cpu-basic"
#: gcTimeout the Hub reports for free hardware: 48 h, not configurable (fidelity: F27).
FREE_SLEEP_SECONDS: Final = 172800


def effective_sleep_time(requested: str | None, sleep_time: int | None) -> int | None:
    """Idle seconds before sleeping: fixed on cpu-basic, the Space's own (or never) on paid hardware."""
    return FREE_SLEEP_SECONDS if requested == DEFAULT_FLAVOR else sleep_time


@dataclass(frozen=True)
class Flavor:
    """One row of `GET /api/spaces/hardware`, specs and prices from the Spaces price table (fidelity: F15)."""

    pretty_name: str
    usd_per_hour: float
    cpu: str
    ram: str
    disk: str
    gpu_model: str | None = None
    gpu_count: int = 0
    vram: str = ""


_FLAVORS: Final[dict[str, Flavor]] = {
    "cpu-basic": Flavor("CPU Basic", 0.0, "2 vCPU", "16 GB", "50 GB"),
    "cpu-upgrade": Flavor("CPU Upgrade", 0.03, "8 vCPU", "32 GB", "50 GB"),
    "zero-a10g": Flavor("ZeroGPU", 0.0, "8 vCPU", "32 GB", "50 GB", "A10G", 1, "24 GB"),
    "t4-small": Flavor("Nvidia T4 - small", 0.40, "4 vCPU", "15 GB", "50 GB", "T4", 1, "16 GB"),
    "t4-medium": Flavor("Nvidia T4 - medium", 0.60, "8 vCPU", "30 GB", "100 GB", "T4", 1, "16 GB"),
    "l4x1": Flavor("1x Nvidia L4", 0.80, "8 vCPU", "30 GB", "400 GB", "L4", 1, "24 GB"),
    "l4x4": Flavor("4x Nvidia L4", 3.80, "48 vCPU", "186 GB", "3200 GB", "L4", 4, "96 GB"),
    "l40sx1": Flavor("1x Nvidia L40S", 1.80, "8 vCPU", "62 GB", "380 GB", "L40S", 1, "48 GB"),
    "l40sx4": Flavor("4x Nvidia L40S", 8.30, "48 vCPU", "382 GB", "3200 GB", "L40S", 4, "192 GB"),
    "l40sx8": Flavor("8x Nvidia L40S", 23.50, "192 vCPU", "1534 GB", "6500 GB", "L40S", 8, "384 GB"),
    "a10g-small": Flavor("Nvidia A10G - small", 1.00, "4 vCPU", "15 GB", "110 GB", "A10G", 1, "24 GB"),
    "a10g-large": Flavor("Nvidia A10G - large", 1.50, "12 vCPU", "46 GB", "200 GB", "A10G", 1, "24 GB"),
    "a10g-largex2": Flavor("2x Nvidia A10G - large", 3.00, "24 vCPU", "92 GB", "1000 GB", "A10G", 2, "48 GB"),
    "a10g-largex4": Flavor(
        "4x Nvidia A10G - large", 5.00, "48 vCPU", "184 GB", "2000 GB", "A10G", 4, "96 GB"
    ),
    "a100-large": Flavor("Nvidia A100 - large", 2.50, "12 vCPU", "142 GB", "1000 GB", "A100", 1, "80 GB"),
    "a100x4": Flavor("4x Nvidia A100 - large", 10.00, "48 vCPU", "568 GB", "4000 GB", "A100", 4, "320 GB"),
    "a100x8": Flavor("8x Nvidia A100 - large", 20.00, "96 vCPU", "1136 GB", "8000 GB", "A100", 8, "640 GB"),
    # No published Spaces price for RTX PRO 6000 yet: assumed, scaled per GPU (fidelity: F15).
    "rtx-pro-6000": Flavor(
        "1x Nvidia RTX PRO 6000", 2.50, "24 vCPU", "192 GB", "1000 GB", "RTX PRO 6000", 1, "96 GB"
    ),
    "rtx-pro-6000x2": Flavor(
        "2x Nvidia RTX PRO 6000", 5.00, "48 vCPU", "384 GB", "2000 GB", "RTX PRO 6000", 2, "192 GB"
    ),
    "rtx-pro-6000x4": Flavor(
        "4x Nvidia RTX PRO 6000", 10.00, "96 vCPU", "768 GB", "4000 GB", "RTX PRO 6000", 4, "384 GB"
    ),
    "rtx-pro-6000x8": Flavor(
        "8x Nvidia RTX PRO 6000", 20.00, "192 vCPU", "1536 GB", "8000 GB", "RTX PRO 6000", 8, "768 GB"
    ),
}

#: flavor -> USD per hour, for cost estimates that must not depend on the emulator being up.
HARDWARE_CATALOG: Final[dict[str, float]] = {name: f.usd_per_hour for name, f in _FLAVORS.items()}


def hardware_catalog_json() -> list[dict[str, object]]:
    """The body of `GET /api/spaces/hardware`, keyed the way huggingface_hub 2.4's JobHardwareInfo reads it.

    The client parses camelCase (`prettyName`, `unitCostMicroUSD`, ...); prices are per minute like
    the Hub's Jobs catalog (fidelity: F15).
    """
    rows: list[dict[str, object]] = []
    for name, f in _FLAVORS.items():
        per_minute = f.usd_per_hour / 60
        rows.append(
            {
                "name": name,
                "prettyName": f.pretty_name,
                "cpu": f.cpu,
                "ram": f.ram,
                "ephemeralStorage": f.disk,
                "accelerator": (
                    {
                        "type": "gpu",
                        "model": f.gpu_model,
                        "quantity": str(f.gpu_count),
                        "vram": f.vram,
                        "manufacturer": "Nvidia",
                    }
                    if f.gpu_model
                    else None
                ),
                "unitCostMicroUSD": round(per_minute * 1_000_000),
                "unitCostUSD": per_minute,
                "unitLabel": "minute",
            }
        )
    return rows
