"""What `cordee launch` does to a task's environment, decided without side effects.

`plan_environment` merges three layers into the environment the command will get and records
each decision, so the CLI can log exactly what was set, kept or overridden:
1. rank variables from the launch environment (always cordee's under Slurm: stale values
   exported in a batch script would give every task the same rank);
2. binding variables (CUDA_DEVICE_ORDER, OMP_NUM_THREADS, CORDEE_CUDA_DEVICE);
3. the fabric profile's variables, set only where the user has not set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cordee.launch.binding import Binding, format_cpulist
from cordee.launch.launchenv import LaunchEnv


@dataclass(frozen=True)
class EnvAction:
    name: str
    value: str  # the value the command gets
    action: str  # "set" | "same" | "kept-user" | "overridden"
    origin: str  # "launch", "binding", "profile NAME"
    previous: str | None = None  # the user's value, if any
    proposed: str | None = None  # cordee's value where the user's was kept
    source: str = ""  # where the profile value comes from

    def describe(self) -> str:
        if self.action == "set":
            return f"set {self.name}={self.value} ({self.origin}{'; ' + self.source if self.source else ''})"
        if self.action == "kept-user":
            return f"kept user's {self.name}={self.value} ({self.origin} would set {self.proposed})"
        if self.action == "overridden":
            return f"overrode {self.name}={self.previous} with {self.value} ({self.origin})"
        return f"{self.name}={self.value} already set ({self.origin})"


@dataclass(frozen=True)
class EnvPlan:
    env: dict[str, str]
    actions: tuple[EnvAction, ...]


def binding_env(binding: Binding) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(binding.omp_threads)}
    if binding.gpu is not None:
        # CUDA's default order is "fastest first"; PCI order makes indices match sysfs and nvidia-smi.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CORDEE_CUDA_DEVICE"] = str(binding.device_index)
    env["CORDEE_CPUS"] = format_cpulist(binding.cpus)
    return env


def plan_environment(
    environ: Mapping[str, str],
    launch: LaunchEnv,
    binding: Binding | None,
    profile_name: str | None = None,
    profile_vars: Mapping[str, tuple[str, str]] | None = None,
) -> EnvPlan:
    """profile_vars: name -> (value, source)."""
    env = dict(environ)
    actions: list[EnvAction] = []

    forced = launch.scheduler == "slurm"
    for name, value in launch.torch_env().items():
        prev = environ.get(name)
        if prev == value:
            actions.append(EnvAction(name, value, "same", "launch"))
        elif prev is None:
            actions.append(EnvAction(name, value, "set", "launch"))
        elif forced:
            actions.append(EnvAction(name, value, "overridden", "launch", previous=prev))
        else:
            # torchrun/hand-set values were read by detect(); keep theirs.
            actions.append(EnvAction(name, prev, "kept-user", "launch", previous=prev, proposed=value))
            continue
        env[name] = value

    layers: list[tuple[str, dict[str, tuple[str, str]]]] = []
    if binding is not None:
        layers.append(("binding", {k: (v, "") for k, v in binding_env(binding).items()}))
    if profile_vars:
        layers.append((f"profile {profile_name}", dict(profile_vars)))
    for origin, variables in layers:
        for name, (value, source) in variables.items():
            prev = environ.get(name)
            if prev is None:
                env[name] = value
                actions.append(EnvAction(name, value, "set", origin, source=source))
            elif prev == value:
                actions.append(EnvAction(name, value, "same", origin, source=source))
            else:
                actions.append(EnvAction(name, prev, "kept-user", origin, prev, value, source))
    return EnvPlan(env, tuple(actions))
