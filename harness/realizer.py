"""Applies the registrations of one program run to a real Docker Engine, as the providers and Pulumi's engine would.

The Pulumi CLI and the provider plugins cannot be installed here, so the Docker tier (the dev stack, on a
private daemon) and the rehearsal (the prod stack, on a rehearsal host) run the program on the mock engine
(harness/mock_engine.py) and hand what it registered to a Realizer. The Realizer drives the Engine API, the
shell and the host the way the sources below do, so that a scenario shows what a real `pulumi up` leaves.

Sources, by release. Each rule below names the one it follows in brackets:
- [docker v4.5.0] kreuzwerker/terraform-provider-docker v4.5.0, the Terraform provider pulumi-docker 5.x
  bridges (the `upstream` submodule of pulumi-docker v5.1.0 is at v4.5.0), files in internal/provider/:
  resource_docker_container.go (the schema: ForceNew, Optional+Computed, defaults),
  resource_docker_container_funcs.go (Create, Read, Update, Delete), resource_docker_container_structures.go
  (ports, volumes), resource_docker_network.go and resource_docker_network_funcs.go,
  resource_docker_volume.go, resource_docker_image.go and resource_docker_image_funcs.go (`RemoteImage`),
  config.go (the ssh connection).
- [docker 5.2.0] pulumi-docker 5.2.0, the version uv.lock installs: its SDK (pulumi_docker/_inputs.py,
  container.py, network.py, volume.py, remote_image.py, image.py, provider.py) gives the names and types of
  what the program sends, and two container arguments v4.5.0 does not have: `owner` and `group` on uploads
  (kreuzwerker issue #996, after v4.5.0, whose schema refuses those keys as "Invalid or unknown key") and
  `deviceCgroupRules`. The provider code behind them is not in the sources read, so for these two the SDK's
  descriptions are the reference.
- [docker native] pulumi-docker's own code, read at v5.1.0, the newest tag of the mirror read (it has no
  5.2.0 tag): the `Image` resource in provider/provider.go (Check, Diff, Update, Delete) and
  provider/image.go, and provider/resources.go, which marks a container delete-before-replace.
- [command 1.2.1] pulumi-command 1.2.1, provider/pkg/provider/local/: commandController.go (Create, Update,
  Delete) and commandOutputs.go (how a command runs); provider/pkg/provider/common/inputs.go (`triggers`
  replaces).
- [engine] Pulumi's engine, pkg/resource/deploy/: step_generator.go (processIgnoreChanges; a replace where
  the provider's diff or `replace_on_changes` asks for one; the `delete_before_replace` option, when set,
  overriding the provider's choice; a protected resource's replace refused) and step.go (DeleteStep.Apply:
  a protected resource's delete refused).
- [random] pulumi-random: nothing of it runs here. A password or an id keeps the value the mock engine gave
  it (a password's is derived from its name and keepers, so a keeper change gives a new one, as a replace
  would).

Order and the connection:
- registrations are applied in the order the SDK sent them (each after its inputs resolved, so after what it
  depends on), checked against the recorded dependencies [engine];
- the docker provider's `host` [docker v4.5.0, config.go]: `unix://` (dev) is the daemon the Realizer was
  given; `ssh://user@address` (prod) is reached as the provider reaches it, one
  `ssh <sshOpts> -l user -- address docker system dial-stdio` per connection (harness/ssh_relay.py), and only
  when the host layer's address is that address; otherwise the run is refused. When the instance is
  replaced, or the ssh options change, the client is made again (with the API version of the first
  connection: the new instance may still be booting).

Networks, volumes and images [docker v4.5.0]:
- a network or a volume is created by name with its driver, options and labels; every one of their arguments
  is ForceNew, so any change replaces it;
- `RemoteImage` finds the image locally, as findImage looks there before it pulls; no registry is reachable,
  so on the host layer the image is loaded from the private daemon where a pull would fetch it. `image_id`
  is the local id. Deleting one (also a replaced one) removes the image unless `keep_locally`, with
  `force_remove`.

Containers [docker v4.5.0 unless marked]:
- create: the config and host config (binds for `volumes`, port bindings, restart policy, memory, swap,
  reservation and shm size in MB, CPU shares and set, log config, capabilities, security options, tmpfs,
  `read_only`, `init`, `privileged`, healthcheck durations parsed with Go's rules). On a daemon with the
  default bridge the container is created on `network_mode` (default `bridge`), then disconnected from
  `bridge` and connected to each `networks_advanced` network with its aliases, as Create does. Every upload
  is put with the archive API into `/` (tar header name = the file's path, mode from `permissions` or
  0644/0744, and [docker 5.2.0] numeric `owner`/`group`); then the container is started and, with `wait`,
  inspected once a second until healthy or `wait_timeout`. A create that fails once the container exists
  leaves it in the state, as the provider has stored its id;
- the state after create is what Read renders from `docker inspect` (names trimmed of `/`, durations as Go's
  `Duration.String()`, memory back in MB, `image` as the image id when the input is an id, ports and log
  options only when set, env, labels, uploads and volumes never read back);
- a later run diffs that state against the new inputs attribute by attribute (sets unordered, schema
  defaults for absent attributes, Optional+Computed attributes unset in the program never differ, the
  DiffSuppressFuncs of `user` and `working_dir`), minus `ignore_changes` [engine]. A changed ForceNew
  attribute, or one in `replace_on_changes` [engine], replaces the container; memory, swap, reservation,
  restart and CPU changes are applied with `docker update` (Update); `must_run` starts a stopped container
  (Read sets it false when the container is not running); any other change (a healthcheck or tmpfs edit
  without `replace_on_changes`) is an update that changes nothing on the Engine;
- a replace deletes the old container first with `delete_before_replace` [engine]; without it the new one
  is created first and the old one deleted after the run, which fails on a fixed name as it does for real;
- delete: stop with `destroy_grace_seconds` (0 when unset: an immediate kill), then remove with the
  anonymous volumes (`remove_volumes`, default true).

Commands, `command:local:Command` [command 1.2.1]:
- `create` runs with `/bin/sh -c`, its `stdin` and its `environment`, with DOCKER_HOST set to the target
  daemon (for prod, the relay's socket) and DOCKER_CONTEXT removed; a non-zero exit fails the run; stdout
  and stderr are kept without their last newline;
- only a `triggers` change replaces a command; any other change is an update that runs `update`, or
  `create` again when there is none; a delete, also of a replaced command after its replacement, runs the
  old state's `delete` with the old state's `stdin` and `environment`;
- with a host layer a command runs as written: its ssh may go to the host's address only, anything else is
  refused. Without one (dev) it runs here; a leading `ssh ... user@host` would be dropped and any other ssh
  refused, so nothing leaves this machine.

Built images, `docker:index/image:Image` [docker native]: Check adds `build.contextDigest`, a hash of the
Dockerfile and of every context file the ignore file (`<Dockerfile>.dockerignore`, else
`<context>/.dockerignore`) lets through, with its mode, and sets the host's platform (here linux/amd64) when
none is given; Diff compares those inputs, and any change is an update that builds again under the same name
(never a replace); Create and Update build with BuildKit (the provider's default builder) from the filtered
context, tag `imageName`, and with `skipPush` return the local image id as `repoDigest`; Delete does
nothing, so the image stays on the daemon. The build runs with a docker CLI that has BuildKit (the provider
drives the same Engine API with its own session) against the target daemon: for prod, the host's own
BuildKit over the relay, with the image of a `BASE_IMAGE` build argument loaded onto the host first.

The host layer (prod): everything under `memos:index:EcsHost`. With a host layer (the HostLayer protocol;
harness/rehearsal.py and harness/rehearsal_host.py provide it) the ECS instance is booted on the rehearsal
host with the user data the program rendered, and replaced when its id changes (the mock engine gives a
replaced instance a new id, as `pulumi up --replace` does). The program gives the instance
`delete_before_replace` [engine], so the commands its new id replaces (the readiness command, by its triggers)
are deleted first, newest first, and their `delete` runs against the old instance (the drain); the new
instance boots on the same disk and address, with the deployed `userData` when it is in `ignore_changes`
(processIgnoreChanges). The readiness command runs for real, over ssh. The other resources of the layer (the
network, key pair, disk, elastic IP, host key) stay on the mock engine. Without a host layer the layer is skipped,
and a prod run is refused at its provider's `ssh://` host.

`protect` [engine] is checked when the step is reached: a replace when its registration comes (what came
before it has been applied, and the run stops there), a delete when it runs (the deletes before it have
happened). A deleted `retain_on_delete` resource is forgotten, not deleted.

Deviations, each also named where it happens:
- the private test daemon has no default `bridge` (`--bridge=none`). There only, a container is created
  directly on its first `networks_advanced` network, `network_mode` is not compared
  (NOT_SHOWN_WITHOUT_BRIDGE), and a build without `network` runs its RUN steps on the host network. The
  rehearsal host's dockerd has the bridge, so there the provider's way is followed;
- no registry: see `RemoteImage`; a build that would push is refused, and a Dockerfile outside its context
  is not reproduced;
- `ignore_changes` is applied in two places: the mock engine's run against the previous one (both tiers'
  deployments make each run so) gives an ignored property its deployed value, as processIgnoreChanges does,
  so a replacement is created with the deployed value too [engine]; and the diff leaves ignored properties
  out. A run handed to `apply` that was not made against the previous one (a test's hand-edited run) has
  the program's new values in its replacements;
- the mock engine records `delete_before_replace` as a value only, so an option the program leaves unset
  counts as false. For a container the engine would then follow the provider, which asks for
  delete-before-replace [docker native, provider/resources.go]. The program sets the option on every
  container, so this does not arise.

Differences from the 5.2.0 SDK. HANDLED_*_INPUTS and IGNORED_*_INPUTS below list every argument of the
installed SDKs (docker, and pulumi-command's `local.Command`), the ignored ones each with the reason;
tests/harness/test_realizer_reference.py checks them against the SDKs and against what the program sends.
- Ignored (the program sets none of them but the role job's `logging`, which changes nothing on a run; a
  ForceNew one still replaces the container when it changes):
  container `attach`, `logs`, `start` (always started), `rm`, `containerReadRefreshTimeoutMilliseconds`
  (v4.5.0's Read only logs it), `cgroupParent`, `cgroupnsMode`, `cpus`, `cpuPeriod`, `cpuQuota`, `devices`,
  `deviceCgroupRules`, `deviceRequests`, the device read/write bps and iops, `gpus`, `dns`, `dnsOpts`,
  `dnsSearches`, `domainname`, `groupAdds`, `hosts`, `ipcMode`, `mounts`, `pidMode`, `platform`,
  `publishAllPorts`, `runtime`, `stdinOpen`, `storageOpts`, `sysctls`, `tty`, `ulimits`, `usernsMode`;
  volumes' `hostPath` (the entry would become an anonymous volume), `fromContainer` and `selinuxRelabel`;
  networksAdvanced's addresses, `linkLocalIps`, `macAddress`, `driverOpts` and `gwPriority`; uploads'
  `source` and `sourceHash` (the file would be uploaded empty). Network `ingress`, `ipv6` and IPAM; volume
  `cluster`; RemoteImage `build`, `platform`, `triggers`, `pullTriggers`; Image `build.addHosts`,
  `build.cacheFrom`, `registry`; provider TLS material, `context`, `registryAuth`,
  `disableDockerDaemonCheck`; command `logging`, `interpreter`, `dir`, asset and archive paths,
  `addPreviousOutputInEnv`.
- Treated differently: uploads' `owner` and `group` are strings that may name a user or group of the
  Pulumi host or give a numeric id; here only numeric ids are taken and a name is refused. `logDriver` unset
  is sent as json-file, where Create sends none and the daemon's default applies. `securityOpts`
  `systempaths=unconfined` goes to the Engine, where Create strips it and clears the masked and read-only
  paths. `stopTimeout` 0 is sent as 0, where Create sets it only when non-zero. `envs` and `labels` are
  Optional+Computed in v4.5.0 but treated as Optional, so removing every env or label replaces the
  container. `networksAdvanced.aliases` is a set in the schema but compared in order. RemoteImage
  `keepLocally` and `forceRemove` replace it when they change; they are not ForceNew (an update that reads
  the image again). Network and volume `name` are optional in the SDK (the bridge names them); here the
  program must set them. A volume's delete is neither forced nor retried while it is in use (v4.5.0 does
  both, for 30 s). The provider's `sshOpts` is a list in the SDK and reaches the realizer, as it reaches
  the provider, as a JSON string.
- Types, as the SDK declares them and the realizer converts them: `memory`, `memoryReservation`,
  `memorySwap` (-1: unlimited) and `shmSize` are ints in MB (times 1 MiB on the Engine); `stopTimeout`,
  `destroyGraceSeconds` and `waitTimeout` ints in seconds; healthcheck durations strings in Go's syntax
  (one ParseDuration refuses becomes 0, as the provider ignores the error); uploads' `permissions` an octal
  string (`^0[0-7]{3}$`); `cpus` a decimal string (ignored). The schema's sets (`envs`, `labels`, `dns`,
  `dnsOpts`, `dnsSearches`, `securityOpts`, `groupAdds`, `hosts`, `mounts`, `uploads`, `volumes`,
  `networksAdvanced`, capabilities' `adds` and `drops`) arrive as lists and compare unordered (SETS,
  _normal); `ports`, `command`, `entrypoints` and healthcheck `tests` are lists and compare in order;
  `logOpts`, `tmpfs`, `storageOpts` and `sysctls` are maps.
- Defaults, as the schema has them: `restart` "no", `mustRun` true, `networkMode` "bridge",
  `removeVolumes` true, `waitTimeout` 60, `start` true, a port's `ip` "0.0.0.0" and `protocol` "tcp",
  healthcheck durations "0s" and `retries` 0 (DEFAULTS, HEALTH_DEFAULTS, _normal).

What it cannot show: the CLI's own behaviour (previews, refresh, the state file, the secrets provider), the
plugins' protocol, the provider's connection reuse and retries, a real ECS instance (harness/rehearsal_host.py
lists how the rehearsal host differs), and the Alibaba Cloud resources, which stay on the mock engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import docker.models.images

from harness.mock_engine import ROOT, Registered, StackRun
from harness.ssh_relay import SshRelay
from lib.go_duration import format_go_duration, parse_go_duration

MIB = 1024 * 1024
CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"
BUILT_IMAGE = "docker:index/image:Image"
COMMAND = "command:local:Command"
DOCKER_PROVIDER = "pulumi:providers:docker"
INSTANCE = "alicloud:ecs/instance:Instance"

#: Container attributes (Pulumi names) whose change replaces the container: ForceNew in the schema.
FORCE_NEW = frozenset(
    (
        *("name", "readOnly", "image", "hostname", "domainname", "command", "entrypoints", "user", "dns", "dnsOpts"),
        *("dnsSearches", "publishAllPorts", "workingDir", "capabilities", "securityOpts", "runtime", "platform"),
        *("stopSignal", "stopTimeout", "mounts", "volumes", "ports", "hosts", "ulimits", "envs", "privileged"),
        *("devices", "deviceRequests", "labels", "shmSize", "logDriver", "logOpts", "networkMode", "networksAdvanced"),
        *("pidMode", "usernsMode", "uploads", "sysctls", "ipcMode", "groupAdds", "tty", "stdinOpen", "storageOpts"),
        *("gpus", "cpus", "cgroupnsMode", "cgroupParent"),
    )
)
#: Attributes the provider's Update applies to a running container.
UPDATABLE = frozenset({"memory", "memorySwap", "memoryReservation", "restart", "maxRetryCount", "cpuShares", "cpuSet"})
#: Optional + Computed attributes: unset in the program, they take whatever was read back.
COMPUTED = frozenset(
    (
        *("hostname", "command", "entrypoints", "securityOpts", "runtime", "platform", "stopSignal", "stopTimeout"),
        *("shmSize", "logDriver", "healthcheck", "ipcMode", "init"),
    )
)
#: Schema defaults of attributes the Read sets (others default to the zero value).
DEFAULTS: Mapping[str, Any] = {"restart": "no", "mustRun": True, "networkMode": "bridge"}
HEALTH_DEFAULTS: Mapping[str, Any] = {"interval": "0s", "timeout": "0s", "startPeriod": "0s", "startInterval": "0s",
                                      "retries": 0, "tests": []}  # fmt: skip
SETS = frozenset({"dns", "dnsOpts", "dnsSearches", "securityOpts", "groupAdds", "hosts", "mounts"})
#: Not compared on a daemon without a default bridge, with the reason (see the module docstring).
NOT_SHOWN_WITHOUT_BRIDGE = {"networkMode": "the private daemon has no default bridge network"}

# -- the SDK's arguments -------------------------------------------------------------------------------
# What the realizer does with every argument of the installed SDKs (pulumi-docker 5.2.0, pulumi-command
# 1.2.1), by resource type, in Pulumi names as the mock engine records them. A nested argument is written
# `parent.child`; an entry covers its own path and every path under it. HANDLED ones are applied, read
# back or diffed as the module docstring says; IGNORED ones are not reproduced, each with the reason.
# tests/harness/test_realizer_reference.py checks that the two tables of a type cover the SDK's arguments
# exactly once and that the program sends nothing they do not cover.

_NOT_SET_FORCE_NEW = "not set on the container; a change still replaces it (FORCE_NEW)"
_NOT_SET_IN_PLACE = "not set on the container; a change is an update that changes nothing on the Engine"
_NOT_CONNECTED = "not passed when the container is connected to the network"

HANDLED_CONTAINER_INPUTS = frozenset(
    (
        *("image", "name", "command", "entrypoints", "user", "envs", "workingDir", "hostname", "stopSignal"),
        *("stopTimeout", "labels.label", "labels.value", "restart", "maxRetryCount", "memory", "memorySwap"),
        *("memoryReservation", "cpuShares", "cpuSet", "shmSize", "logDriver", "logOpts", "securityOpts"),
        *("capabilities.adds", "capabilities.drops", "readOnly", "tmpfs", "init", "privileged", "networkMode"),
        *("ports.internal", "ports.external", "ports.ip", "ports.protocol"),
        *("volumes.containerPath", "volumes.volumeName", "volumes.readOnly"),
        *("healthcheck.tests", "healthcheck.interval", "healthcheck.timeout", "healthcheck.startPeriod"),
        *("healthcheck.startInterval", "healthcheck.retries", "networksAdvanced.name", "networksAdvanced.aliases"),
        *("uploads.file", "uploads.content", "uploads.contentBase64", "uploads.executable", "uploads.permissions"),
        *("uploads.owner", "uploads.group", "wait", "waitTimeout", "mustRun", "destroyGraceSeconds"),
        "removeVolumes",
    )
)
IGNORED_CONTAINER_INPUTS: Mapping[str, str] = {
    "attach": "the provider would wait for the container to exit; a service is never waited on here",
    "logs": "kept only with `attach`, which is not reproduced",
    "start": "always started (the default, true)",
    "rm": "AutoRemove is not set (Read's `rm` is still rendered)",
    "containerReadRefreshTimeoutMilliseconds": "v4.5.0's Read only logs it",
    "cpus": _NOT_SET_FORCE_NEW,
    "cpuPeriod": _NOT_SET_IN_PLACE,
    "cpuQuota": _NOT_SET_IN_PLACE,
    "deviceReadBps": _NOT_SET_IN_PLACE + " (v4.5.0's Update would apply it)",
    "deviceReadIops": _NOT_SET_IN_PLACE + " (v4.5.0's Update would apply it)",
    "deviceWriteBps": _NOT_SET_IN_PLACE + " (v4.5.0's Update would apply it)",
    "deviceWriteIops": _NOT_SET_IN_PLACE + " (v4.5.0's Update would apply it)",
    "deviceCgroupRules": "added after v4.5.0, so no rule to follow: " + _NOT_SET_IN_PLACE,
    **dict.fromkeys(
        (
            *("cgroupParent", "cgroupnsMode", "devices", "deviceRequests", "gpus", "dns", "dnsOpts", "dnsSearches"),
            *("domainname", "groupAdds", "hosts", "ipcMode", "mounts", "pidMode", "platform", "publishAllPorts"),
            *("runtime", "stdinOpen", "storageOpts", "sysctls", "tty", "ulimits", "usernsMode"),
        ),
        _NOT_SET_FORCE_NEW,
    ),
    "volumes.hostPath": "no bind of a host path is made: the entry would become an anonymous volume",
    "volumes.fromContainer": "VolumesFrom is not set (an entry needs a containerPath here)",
    "volumes.selinuxRelabel": "not added to the bind's mode",
    **dict.fromkeys(
        (
            *("networksAdvanced.ipv4Address", "networksAdvanced.ipv6Address", "networksAdvanced.linkLocalIps"),
            *("networksAdvanced.macAddress", "networksAdvanced.driverOpts", "networksAdvanced.gwPriority"),
        ),
        _NOT_CONNECTED,
    ),
    "uploads.source": "a file of the Pulumi host is not read: the upload would be empty",
    "uploads.sourceHash": "only diffed (it stands for `source`, which is not read)",
}
HANDLED_NETWORK_INPUTS = frozenset(
    {"name", "driver", "internal", "attachable", "options", "labels.label", "labels.value"}
)
IGNORED_NETWORK_INPUTS: Mapping[str, str] = {
    "ingress": "a swarm routing-mesh network: no swarm here",
    "ipv6": "EnableIPv6 is not set",
    "ipamDriver": "the daemon's default IPAM is used",
    "ipamOptions": "the daemon's default IPAM is used",
    "ipamConfigs": "the daemon's default IPAM is used (subnets are the daemon's choice)",
}
HANDLED_VOLUME_INPUTS = frozenset({"name", "driver", "driverOpts", "labels.label", "labels.value"})
IGNORED_VOLUME_INPUTS: Mapping[str, str] = {"cluster": "a swarm cluster volume: no swarm here"}
HANDLED_IMAGE_INPUTS = frozenset({"name", "keepLocally", "forceRemove"})
IGNORED_IMAGE_INPUTS: Mapping[str, str] = {
    "build": "a `RemoteImage` is not built: the image must be on the daemon (loaded onto the host)",
    "platform": "nothing is pulled: the image found locally is used whatever its platform",
    "pullTriggers": "nothing is pulled; like any input change here, a change replaces the resource",
    "triggers": "like any input change here, a change replaces the resource",
}
HANDLED_BUILT_IMAGE_INPUTS = frozenset(
    (
        *("imageName", "skipPush", "buildOnPreview", "build.context", "build.dockerfile", "build.args"),
        *("build.platform", "build.target", "build.network", "build.builderVersion"),
    )
)
IGNORED_BUILT_IMAGE_INPUTS: Mapping[str, str] = {
    "build.addHosts": "no --add-host is passed to the build",
    "build.cacheFrom": "no cache image is pulled (no registry is reachable)",
    "registry": "pushing is refused (skipPush must be true), so no registry is logged in to",
}
HANDLED_PROVIDER_INPUTS = frozenset({"host", "sshOpts"})
IGNORED_PROVIDER_INPUTS: Mapping[str, str] = {
    **dict.fromkeys(
        ("caMaterial", "certMaterial", "keyMaterial", "certPath"), "TLS to a tcp:// host is not reproduced"
    ),
    "context": "a Docker context, which would override `host`, is not reproduced",
    "disableDockerDaemonCheck": "the daemon is always checked by connecting to it",
    "registryAuth": "no registry is reachable",
}
HANDLED_COMMAND_INPUTS = frozenset({"create", "update", "delete", "stdin", "environment", "triggers"})
IGNORED_COMMAND_INPUTS: Mapping[str, str] = {
    "logging": "only says which output the provider logs; stdout and stderr are kept either way",
    "interpreter": "always `/bin/sh -c`, the default on Linux",
    "dir": "runs in this process's working directory, where the provider's default is its own",
    "assetPaths": "no assets are collected",
    "archivePaths": "no archive is collected",
    "addPreviousOutputInEnv": "PULUMI_COMMAND_STDOUT and PULUMI_COMMAND_STDERR of the previous run are not set",
}
#: Both tables of each type the realizer applies (the docker provider's own configuration among them).
INPUT_TABLES: Mapping[str, tuple[frozenset[str], Mapping[str, str]]] = {
    CONTAINER: (HANDLED_CONTAINER_INPUTS, IGNORED_CONTAINER_INPUTS),
    NETWORK: (HANDLED_NETWORK_INPUTS, IGNORED_NETWORK_INPUTS),
    VOLUME: (HANDLED_VOLUME_INPUTS, IGNORED_VOLUME_INPUTS),
    IMAGE: (HANDLED_IMAGE_INPUTS, IGNORED_IMAGE_INPUTS),
    BUILT_IMAGE: (HANDLED_BUILT_IMAGE_INPUTS, IGNORED_BUILT_IMAGE_INPUTS),
    DOCKER_PROVIDER: (HANDLED_PROVIDER_INPUTS, IGNORED_PROVIDER_INPUTS),
    COMMAND: (HANDLED_COMMAND_INPUTS, IGNORED_COMMAND_INPUTS),
}


def input_entries(type_token: str, path: str) -> list[str]:
    """The entries of `type_token`'s tables that cover the argument `path` (itself or a parent of it)."""
    handled, ignored = INPUT_TABLES[type_token]
    return [entry for entry in (*handled, *ignored) if path == entry or path.startswith(entry + ".")]


def input_rule(type_token: str, path: str) -> str | None:
    """What the realizer does with the argument `path` of `type_token`: "handled", the reason it is ignored,
    or None when no entry covers it."""
    handled, ignored = INPUT_TABLES[type_token]
    entries = input_entries(type_token, path)
    if not entries:
        return None
    return "handled" if entries[0] in handled else ignored[entries[0]]


class HostLayer(Protocol):
    """The prod host the realizer deploys to when the stack's Docker host is an ECS instance: it boots
    and replaces instances as the cloud would (harness/rehearsal.py), while the cloud resources
    themselves stay on the mock engine."""

    @property
    def address(self) -> str:
        """The instance's public address: the only one a command may ssh to."""
        ...

    @property
    def image_source(self) -> docker.DockerClient:
        """Where images come from (the host pulls them; no registry is reachable, so they are loaded)."""
        ...

    def instance_created(self, instance_id: str, user_data: str) -> None: ...

    def instance_replaced(self, instance_id: str, user_data: str) -> None: ...


class RealizeError(Exception):
    """A step the provider (or Pulumi) would have failed with; the message says which and why."""


@dataclass
class Applied:
    """One resource as it exists after a run."""

    registered: Registered
    #: Inputs with mock outputs replaced by the real ones: what the provider would have received.
    inputs: dict[str, Any]
    #: What the provider keeps in its state: the inputs overlaid with what its Read renders.
    state: dict[str, Any]
    real_id: str
    outputs: dict[str, Any] = field(default_factory=lambda: {})


@dataclass
class Step:
    op: str  # create | replace | update | same | delete | forget
    name: str
    changed: tuple[str, ...] = ()
    #: When the step began (epoch seconds): before it, nothing of this resource had changed.
    started: float = 0.0


def _zero(value: Any) -> Any:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, str):
        return ""
    if isinstance(value, list):
        return []
    if isinstance(value, dict):
        return {}
    return None


def _empty(value: Any) -> bool:
    return value in (None, "", [], {}, 0, False)


def _changed_inputs(registered: Registered, previous: Applied, inputs: Mapping[str, Any]) -> list[str]:
    """The top-level inputs that differ from the deployed ones, `ignore_changes` left out [engine]."""
    ignored = set(registered.options.get("ignore_changes") or [])
    return [
        k
        for k in sorted(set(previous.inputs) | set(inputs))
        if k not in ignored and _normal(k, previous.inputs.get(k)) != _normal(k, inputs.get(k))
    ]


def _normal(key: str, value: Any) -> Any:  # noqa: PLR0911 (one return per attribute kind)
    if value is None:
        return None
    if key in SETS and isinstance(value, list):
        return sorted(json.dumps(v, sort_keys=True) for v in value)
    if key == "capabilities" and isinstance(value, dict):
        return {k: sorted(value.get(k) or []) for k in ("adds", "drops")}
    if key == "healthcheck" and isinstance(value, dict):
        return {k: value.get(k, default) for k, default in HEALTH_DEFAULTS.items()}
    if key == "ports" and isinstance(value, list):
        return [
            {"internal": p["internal"], "external": p.get("external", 0), "ip": p.get("ip", "0.0.0.0"),  # noqa: S104
             "protocol": p.get("protocol", "tcp")}
            for p in value
        ]  # fmt: skip
    if key == "envs" and isinstance(value, list):
        return sorted(value)
    if key in ("labels", "uploads", "volumes", "networksAdvanced") and isinstance(value, list):
        return sorted(json.dumps(v, sort_keys=True) for v in value)
    return value


def render_read(inspect: Mapping[str, Any], planned: Mapping[str, Any]) -> dict[str, Any]:
    """What the provider's Read stores for a container (Pulumi names), given its `docker inspect`."""
    config, host = inspect["Config"], inspect["HostConfig"]
    running = bool(inspect["State"]["Running"])
    read: dict[str, Any] = {
        "name": inspect["Name"].lstrip("/"),
        "rm": host.get("AutoRemove", False),
        "readOnly": host.get("ReadonlyRootfs", False),
        "image": inspect["Image"] if str(planned.get("image", "")).startswith("sha256:") else config["Image"],
        "hostname": config.get("Hostname", ""),
        "domainname": config.get("Domainname", ""),
        "command": config.get("Cmd") or [],
        "entrypoints": config.get("Entrypoint") or [],
        "user": config.get("User", ""),
        "dns": host.get("Dns") or [],
        "dnsOpts": host.get("DnsOptions") or [],
        "dnsSearches": host.get("DnsSearch") or [],
        "securityOpts": host.get("SecurityOpt") or [],
        "publishAllPorts": host.get("PublishAllPorts", False),
        "restart": host["RestartPolicy"]["Name"],
        "maxRetryCount": host["RestartPolicy"].get("MaximumRetryCount", 0),
        "init": bool(host.get("Init")),
        "workingDir": config.get("WorkingDir", ""),
        "tmpfs": host.get("Tmpfs") or {},
        "privileged": host.get("Privileged", False),
        "memory": host.get("Memory", 0) // MIB,
        "memoryReservation": (host.get("MemoryReservation") or 0) // MIB,
        "memorySwap": (host.get("MemorySwap") or 0) // MIB
        if (host.get("MemorySwap") or 0) > 0
        else host.get("MemorySwap") or 0,
        "shmSize": (host.get("ShmSize") or 0) // MIB,
        "cpuShares": host.get("CpuShares", 0),
        "cpuSet": host.get("CpusetCpus", ""),
        "logDriver": host["LogConfig"]["Type"],
        "storageOpts": host.get("StorageOpt") or {},
        "networkMode": host.get("NetworkMode", ""),
        "usernsMode": host.get("UsernsMode", ""),
        "sysctls": host.get("Sysctls") or {},
        "ipcMode": host.get("IpcMode", ""),
        "groupAdds": host.get("GroupAdd") or [],
        "tty": config.get("Tty", False),
        "stdinOpen": config.get("OpenStdin", False),
        "stopSignal": config.get("StopSignal", ""),
        "stopTimeout": config.get("StopTimeout") or 0,
    }
    if host.get("CapAdd") or host.get("CapDrop"):
        read["capabilities"] = {"adds": host.get("CapAdd") or [], "drops": host.get("CapDrop") or []}
    if planned.get("logOpts"):
        read["logOpts"] = host["LogConfig"].get("Config") or {}
    if (running or planned.get("mustRun", True)) and planned.get("ports"):
        ports: list[dict[str, Any]] = []
        bindings = inspect["NetworkSettings"].get("Ports") or {}
        for key in sorted(bindings, key=lambda k: (int(k.split("/")[0]), k.split("/")[1])):
            internal, protocol = key.split("/")
            for binding in bindings[key] or []:
                ports.append({"internal": int(internal), "external": int(binding["HostPort"] or 0),
                              "ip": binding["HostIp"], "protocol": protocol})  # fmt: skip
        read["ports"] = ports
    health = config.get("Healthcheck")
    if health:
        read["healthcheck"] = {
            "tests": health.get("Test") or [],
            "interval": format_go_duration(health.get("Interval", 0)),
            "timeout": format_go_duration(health.get("Timeout", 0)),
            "startPeriod": format_go_duration(health.get("StartPeriod", 0)),
            "startInterval": format_go_duration(health.get("StartInterval", 0)),
            "retries": health.get("Retries", 0),
        }
    if not running and planned.get("mustRun", True):
        read["mustRun"] = False
    return read


def container_diff(
    state: Mapping[str, Any], inputs: Mapping[str, Any], read_keys: set[str], *, has_bridge: bool = False
) -> list[str]:
    """The attributes whose planned value differs from the state, as the provider's plan sees them."""
    changed: list[str] = []
    for key in sorted(set(state) | set(inputs)):
        if key in NOT_SHOWN_WITHOUT_BRIDGE and not has_bridge:
            continue
        if key in inputs:
            planned = inputs[key]
        elif key in COMPUTED:
            continue
        elif key in DEFAULTS:
            planned = DEFAULTS[key]
        else:
            planned = _zero(state.get(key))
        current = state.get(key, DEFAULTS.get(key, _zero(planned)))
        if key in ("user", "workingDir") and planned == "":
            continue
        if key not in read_keys and _empty(planned) and _empty(current):
            continue
        if _normal(key, planned) != _normal(key, current):
            changed.append(key)
    return changed


def _tar(upload: Mapping[str, Any]) -> bytes:
    content = str(upload.get("content") or "").encode()
    if upload.get("contentBase64"):
        import base64  # noqa: PLC0415

        content = base64.b64decode(upload["contentBase64"])
    executable_mode = 0o744 if upload.get("executable") else 0o644
    mode = int(str(upload["permissions"]), 8) if upload.get("permissions") else executable_mode
    info = tarfile.TarInfo(str(upload["file"]))
    info.size = len(content)
    info.mode = mode
    info.mtime = int(time.time())
    for attribute, key in (("uid", "owner"), ("gid", "group")):
        value = str(upload.get(key) or "0")
        if not value.isdigit():
            raise RealizeError(f"upload {upload['file']}: {key} {value!r} is a name; the stand-in takes numeric ids")
        setattr(info, attribute, int(value))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _ns(duration: Any) -> int:
    try:
        return parse_go_duration(str(duration))
    except ValueError:
        return 0  # the provider ignores ParseDuration's error, so an invalid value becomes 0


#: Components whose whole subtree is the Docker host itself: applied on the host layer when there is one
#: (the instance and its readiness command; the rest stays on the mock engine), else skipped.
HOST_LAYER = frozenset({"memos:index:EcsHost"})


def ignore_patterns(context: Path, dockerfile: Path) -> list[str]:
    """The provider's ignore file: `<Dockerfile>.dockerignore` first, else the context's `.dockerignore`."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            lines = (line.strip() for line in candidate.read_text().splitlines())
            return [line for line in lines if line and not line.startswith("#")]
    return []


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """One ignore pattern as Docker matches it: `*` and `?` stay within one path element, `**` crosses them."""
    body = pattern.strip("/")
    out = ""
    i = 0
    while i < len(body):
        if body.startswith("**", i):
            out, i = out + ".*", i + 2
        elif body[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif body[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(body[i]), i + 1
    return re.compile(f"^{out}$")


def context_files(context: Path, dockerfile: Path) -> list[str]:
    """The context's files (relative, in walk order) that the ignore file lets through.

    A path is excluded when the last pattern matching it or one of its parent directories is not a `!`
    exception; this covers the patterns the project uses (`*`, `!name`, plain paths)."""
    rules = [(p.startswith("!"), _pattern_regex(p.removeprefix("!"))) for p in ignore_patterns(context, dockerfile)]
    kept: list[str] = []
    for path in sorted(context.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(context).as_posix()
        parts = relative.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for exception, regex in rules:
            if any(regex.match(c) for c in candidates):
                excluded = not exception
        if not excluded:
            kept.append(relative)
    return kept


def context_digest(context: Path, dockerfile: Path) -> str:
    """`build.contextDigest` as the provider's Check computes it: the Dockerfile under the name
    `Dockerfile`, then each context file's path, mode string and content hash."""
    accumulated = bytearray()

    def add(name: str, mode: str, path: Path) -> None:
        accumulated.extend(name.encode() + mode.encode() + hashlib.sha256(path.read_bytes()).digest() + b"\0")

    add("Dockerfile", "----------", dockerfile)
    for relative in context_files(context, dockerfile):
        add(relative, stat.filemode((context / relative).stat().st_mode), context / relative)
    return hashlib.sha256(accumulated).hexdigest()


def buildkit_cli() -> str:
    """A docker CLI on PATH that builds with BuildKit: one with buildx, or one older than 23.0 (built in)."""
    seen: set[Path] = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        cli = Path(directory) / "docker"
        if not cli.is_file() or cli.resolve() in seen:
            continue
        seen.add(cli.resolve())
        if subprocess.run([cli, "buildx", "version"], capture_output=True, check=False).returncode == 0:
            return str(cli)
        version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False).stdout
        major = re.search(r"version (\d+)\.", version)
        if major and int(major.group(1)) < 23:  # 23.0 moved BuildKit into buildx
            return str(cli)
    raise RealizeError("no docker CLI on PATH builds with BuildKit (one with buildx, or one older than 23.0)")


def _in_host_layer(run: StackRun, registered: Registered) -> bool:
    parent = registered.parent
    while parent in run.resources:
        if run.resources[parent].type in HOST_LAYER:
            return True
        parent = run.resources[parent].parent
    return registered.type in HOST_LAYER


class Realizer:
    """Keeps what exists on one daemon across program runs and applies each new run to it."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        docker_host: str,
        project_dir: Path = ROOT,
        host_layer: HostLayer | None = None,
    ) -> None:
        self.client = client
        self.api = client.api
        self.docker_host = docker_host
        #: The prod host (instances booted and replaced as the cloud would), or None to skip the host layer.
        self.host_layer = host_layer
        #: The provider's SSH connection to the host, once its provider is registered.
        self.relay: SshRelay | None = None
        #: Commands deleted before an instance they depend on was replaced: their next create is a replace.
        self._replaced_first: set[str] = set()
        #: What each command's delete printed (the drain's warning, say), by resource name.
        self.delete_outputs: dict[str, subprocess.CompletedProcess[str]] = {}
        #: The ssh options the relay was made with, and the host's Engine API version once known.
        self._relay_options: list[str] = []
        self._api_version: str | None = None
        #: Where `pulumi` runs the program: a build's context and Dockerfile are relative to it.
        self.project_dir = project_dir
        self.applied: dict[str, Applied] = {}
        self.steps: list[Step] = []
        #: The output of each image build, by resource name.
        self.build_logs: dict[str, str] = {}

    # -- one run -----------------------------------------------------------------------------------
    def apply(self, run: StackRun) -> list[Step]:
        """Apply `run` on top of what earlier runs left; returns the steps taken, in order."""
        self.steps = []
        seen: set[str] = set()
        replacements: dict[str, str] = {}
        pending_deletes: list[Applied] = []
        for urn, registered in run.resources.items():
            missing = [d for d in registered.options["dependencies"] if d not in seen and d in run.resources]
            if missing:
                raise RealizeError(f"{registered.name} was registered before what it depends on: {missing}")
            seen.add(urn)
            if registered.type == DOCKER_PROVIDER:
                self._connect(registered)
                continue
            if not registered.options["custom"] or registered.type.startswith("pulumi:providers:"):
                continue
            inputs = _substitute(registered.inputs, replacements)
            previous = self.applied.get(urn)
            if _in_host_layer(run, registered):
                # The cloud resources stay on the mock engine; the instance's life and the readiness
                # command (its create and its drain) are real on the host layer.
                if self.host_layer is None:
                    continue
                if registered.type == INSTANCE:
                    self.applied[urn] = self._instance(registered, inputs, previous)
                    continue
                if registered.type != COMMAND:
                    continue
            handler = self._handlers().get(registered.type)
            if handler is None:
                if registered.type.startswith("random:"):
                    self.applied[urn] = Applied(registered, inputs, inputs, registered.mock_id, registered.mock_outputs)
                continue
            began, before = time.time(), len(self.steps)
            result = handler(registered, inputs, previous, pending_deletes)
            for step in self.steps[before:]:
                step.started = began
            self.applied[urn] = result
            for mock, real in _mock_to_real(registered, result).items():
                if mock != real:
                    replacements[mock] = real
        for old in reversed(pending_deletes):  # dependents first, as Pulumi deletes them
            self._delete(old)
        for urn in [u for u in self.applied if u not in run.resources]:
            gone = self.applied.pop(urn)
            self._check_protect(gone.registered, "delete")
            if gone.registered.options.get("retain_on_delete"):
                self.steps.append(Step("forget", gone.registered.name))
                continue
            self._delete(gone)
            self.steps.append(Step("delete", gone.registered.name))
        return self.steps

    def _connect(self, registered: Registered) -> None:
        """The docker provider's daemon: the local one, or the host over SSH with the provider's options."""
        host = str(registered.inputs.get("host") or "")
        if not host.startswith("ssh://"):
            return
        if self.host_layer is None:
            raise RealizeError(f"refusing to reach {host}: no rehearsal host stands in for it")
        user, _, address = host.removeprefix("ssh://").partition("@")
        if address != self.host_layer.address:
            raise RealizeError(f"refusing to reach {host}: the rehearsal host is {self.host_layer.address}")
        options = json.loads(registered.inputs.get("sshOpts") or "[]")
        if self.relay is not None and self._relay_options == options:
            return
        if self.relay is not None:
            self.relay.close()
        self.relay, self._relay_options = SshRelay(options, user, address), options
        self._reconnect()

    def _reconnect(self) -> None:
        """A new client through the relay (connections to a replaced or restarted host are gone)."""
        if self.relay is None:
            return
        # A client connects on first use only when it is told the API version (else it asks at once, and a
        # replaced instance is still booting): the version of the first connection, which stays the same.
        version = self._api_version or "auto"
        self.client = docker.DockerClient(base_url=self.relay.docker_host, timeout=600, version=version)
        self._api_version = self.client.api.api_version
        self.api = self.client.api
        self.docker_host = self.relay.docker_host

    def _instance(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None) -> Applied:
        """The ECS instance on the host layer: booted once, replaced when its id changes.

        Pulumi's engine creates even a replacement with the ignored inputs' old values (processIgnoreChanges,
        pkg/resource/deploy/step_generator.go), so with `ignore_changes=["userData"]` a new instance boots
        the first user data. The instance replaces with delete-before-replace, so its dependents whose
        replacement the new id forces (the readiness command, by its triggers) are deleted first, newest
        first, and their delete commands run against the old instance: the drain.
        """
        assert self.host_layer is not None
        user_data = str(inputs["userData"])
        applied = Applied(registered, inputs, inputs, registered.mock_id, {"id": registered.mock_id})
        if previous is None:
            self.host_layer.instance_created(registered.mock_id, user_data)
            self.steps.append(Step("create", registered.name))
            return applied
        if previous.real_id == registered.mock_id:
            self.steps.append(Step("same", registered.name))
            return Applied(registered, previous.inputs, previous.state, previous.real_id, previous.outputs)
        self._check_protect(previous.registered, "replace")
        if "userData" in (registered.options.get("ignore_changes") or []):
            user_data = str(previous.inputs["userData"])
            inputs = {**inputs, "userData": user_data}
        for dependent in reversed(list(self.applied.values())):
            triggers = json.dumps(dependent.inputs.get("triggers") or [])
            if dependent.registered.type == COMMAND and previous.real_id in triggers:
                self._delete(dependent)
                del self.applied[dependent.registered.urn]
                self._replaced_first.add(dependent.registered.urn)
        self.host_layer.instance_replaced(registered.mock_id, user_data)
        self._reconnect()
        self.steps.append(Step("replace", registered.name, ("id",)))
        return Applied(registered, inputs, inputs, registered.mock_id, {"id": registered.mock_id})

    def unprotect(self, name: str) -> None:
        """`pulumi state unprotect`: the state's flag is lifted (the program's own returns with the next run)."""
        for urn, applied in self.applied.items():
            if applied.registered.name == name:
                options = {**applied.registered.options, "protect": False}
                self.applied[urn] = dataclasses.replace(
                    applied, registered=dataclasses.replace(applied.registered, options=options)
                )

    def close(self) -> None:
        """End the provider's SSH connection, if there is one."""
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    def _handlers(self) -> dict[str, Callable[[Registered, dict[str, Any], Applied | None, list[Applied]], Applied]]:
        return {NETWORK: self._network, VOLUME: self._volume, IMAGE: self._image, CONTAINER: self._container,
                COMMAND: self._command, BUILT_IMAGE: self._built_image}  # fmt: skip

    @staticmethod
    def _check_protect(registered: Registered, what: str) -> None:
        if registered.options.get("protect"):
            raise RealizeError(f"{registered.name} is protected: Pulumi refuses to {what} it before any step runs")

    def _simple(
        self,
        registered: Registered,
        inputs: dict[str, Any],
        previous: Applied | None,
        create: Callable[[], Applied],
        pending: list[Applied],
    ) -> Applied:
        if previous is not None:
            changed = _changed_inputs(registered, previous, inputs)
            if not changed:
                self.steps.append(Step("same", registered.name))
                return Applied(registered, inputs, previous.state, previous.real_id, previous.outputs)
            return self._replace(registered, previous, create, pending, changed)
        result = create()
        self.steps.append(Step("create", registered.name))
        return result

    def _replace(
        self,
        registered: Registered,
        previous: Applied,
        create: Callable[[], Applied],
        pending: list[Applied],
        changed: Sequence[str],
    ) -> Applied:
        """Pulumi's replacement: refused when the state says protected; the old one deleted first with
        `delete_before_replace`, else after the run (so a fixed name collides, as it does for real)."""
        self._check_protect(previous.registered, "replace")
        if registered.options.get("delete_before_replace"):
            self._delete(previous)
            result = create()
        else:
            result = create()
            pending.append(previous)
        self.steps.append(Step("replace", registered.name, tuple(changed)))
        return result

    # -- networks, volumes, images -----------------------------------------------------------------
    def _network(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None,
                 pending: list[Applied]) -> Applied:  # fmt: skip
        def create() -> Applied:
            network = self.client.networks.create(
                inputs["name"],
                driver=inputs.get("driver") or "bridge",
                internal=bool(inputs.get("internal")),
                attachable=bool(inputs.get("attachable")),
                labels={item["label"]: item["value"] for item in inputs.get("labels", [])},
                options=inputs.get("options") or None,
            )
            return Applied(registered, inputs, inputs, str(network.id), {"name": inputs["name"]})

        return self._simple(registered, inputs, previous, create, pending)

    def _volume(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None,
                pending: list[Applied]) -> Applied:  # fmt: skip
        def create() -> Applied:
            volume = self.client.volumes.create(
                name=inputs["name"],
                driver=inputs.get("driver") or "local",
                driver_opts=inputs.get("driverOpts") or None,
                labels={item["label"]: item["value"] for item in inputs.get("labels", [])},
            )
            return Applied(registered, inputs, inputs, str(volume.name), {"name": inputs["name"]})

        return self._simple(registered, inputs, previous, create, pending)

    def _image(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None,
               pending: list[Applied]) -> Applied:  # fmt: skip
        def create() -> Applied:
            image = self.ensure_pulled(str(inputs["name"]))
            return Applied(registered, inputs, inputs, str(image.id), {"imageId": str(image.id)})

        return self._simple(registered, inputs, previous, create, pending)

    def check_image(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The provider's Check of a built image: dockerfile found, `contextDigest`, default platform."""
        build = dict(inputs.get("build") or {})
        build.setdefault("context", ".")
        build.setdefault("dockerfile", f"{build['context']}/Dockerfile")
        context, dockerfile = self.project_dir / build["context"], self.project_dir / build["dockerfile"]
        if not dockerfile.is_file():
            raise RealizeError(f"could not open dockerfile at relative path {build['dockerfile']!r}")
        build["contextDigest"] = context_digest(context, dockerfile)
        build.setdefault("platform", "linux/amd64")
        return {**inputs, "build": build, "buildOnPreview": bool(inputs.get("buildOnPreview", False))}

    def _built_image(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None,
                     pending: list[Applied]) -> Applied:  # fmt: skip
        checked = self.check_image(inputs)
        if previous is None:
            outputs = self._build(registered, checked)
            self.steps.append(Step("create", registered.name))
            return Applied(registered, checked, checked, str(checked["imageName"]), outputs)
        ignored = set(registered.options.get("ignore_changes") or [])
        changed = sorted(k for k in set(previous.inputs) | set(checked)
                         if k not in ignored and previous.inputs.get(k) != checked.get(k))  # fmt: skip
        if not changed:
            self.steps.append(Step("same", registered.name))
            return Applied(registered, checked, checked, previous.real_id, previous.outputs)
        outputs = self._build(registered, checked)  # the provider's Update builds again; never a replace
        self.steps.append(Step("update", registered.name, tuple(changed)))
        return Applied(registered, checked, checked, previous.real_id, outputs)

    def _build(self, registered: Registered, checked: Mapping[str, Any]) -> dict[str, Any]:
        build, name = checked["build"], str(checked["imageName"])
        if not checked.get("skipPush"):
            raise RealizeError(f"{registered.name}: pushing to a registry is not reproduced (no registry here)")
        context, dockerfile = self.project_dir / build["context"], self.project_dir / build["dockerfile"]
        relative = os.path.relpath(dockerfile, context)
        if relative.startswith(".."):
            raise RealizeError(f"{registered.name}: a Dockerfile outside its context is not reproduced")
        base = (build.get("args") or {}).get("BASE_IMAGE")
        if base and self.host_layer is not None:
            self.ensure_pulled(str(base))
        with tempfile.TemporaryDirectory(prefix="build-") as work:
            for file in [*context_files(context, dockerfile), relative]:
                (Path(work) / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / file, Path(work) / file)
            argv = [buildkit_cli(), "build", "--progress=plain", "--platform", build["platform"], "-f", relative,
                    "-t", name, *self._build_network(build.get("network"))]  # fmt: skip
            for key, value in sorted((build.get("args") or {}).items()):
                argv += ["--build-arg", f"{key}={value}"]
            if build.get("target"):
                argv += ["--target", build["target"]]
            buildkit = "0" if build.get("builderVersion") == "BuilderV1" else "1"
            env = {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": buildkit}
            env.pop("DOCKER_CONTEXT", None)
            result = subprocess.run([*argv, "."], cwd=work, env=env, capture_output=True, text=True, check=False,
                                    timeout=1200)  # fmt: skip
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise RealizeError(f"{registered.name}: error building image:\n{tail}")
        image = self.client.images.get(name)
        self.build_logs[registered.name] = result.stderr
        return {"imageName": name, "baseImageName": name, "repoDigest": str(image.id), "context": build["context"],
                "dockerfile": relative, "platform": build["platform"], "registryServer": ""}  # fmt: skip

    def ensure_pulled(self, name: str) -> docker.models.images.Image:
        """The image on the host, as a pull would leave it: there is no registry, so it is loaded from
        where the stand-ins are built, through the provider's SSH connection."""
        try:
            return self.client.images.get(name)
        except docker.errors.ImageNotFound:
            if self.host_layer is None:
                raise RealizeError(f"image {name} is not on the daemon and no registry is reachable") from None
        tar = self.host_layer.image_source.images.get(name).save(named=name)  # the tag travels with it
        for message in self.api.load_image(tar):  # pyright: ignore[reportUnknownVariableType]
            if isinstance(message, dict) and message.get("error"):  # pyright: ignore[reportUnknownMemberType]
                raise RealizeError(f"loading {name} onto the host: {message['error']}")
        return self.client.images.get(name)

    def has_bridge(self) -> bool:
        """Whether the target daemon has Docker's default bridge (the private test daemon has none)."""
        return any(network.name == "bridge" for network in self.client.networks.list(names=["bridge"]))

    def _build_network(self, network: str | None) -> list[str]:
        """The build's `--network`: as set; else Docker's default, or the host's on a daemon without a
        bridge (deviation: the provider leaves it to Docker's default, which needs the bridge)."""
        if network:
            return ["--network", network]
        return [] if self.has_bridge() else ["--network", "host"]

    # -- containers --------------------------------------------------------------------------------
    def container_name(self, registered: Registered, inputs: Mapping[str, Any]) -> str:
        return str(inputs.get("name") or registered.mock_outputs["name"])

    def _container(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None,
                   pending: list[Applied]) -> Applied:  # fmt: skip
        inputs = {**inputs, "name": self.container_name(registered, inputs)}
        if previous is None:
            result = self._create_container(registered, inputs)
            self.steps.append(Step("create", registered.name))
            return result
        state = self.refresh(previous)
        ignored = set(registered.options.get("ignore_changes") or [])
        read_keys = set(render_read(self.api.inspect_container(previous.real_id), state))
        changed = [
            k for k in container_diff(state, inputs, read_keys, has_bridge=self.has_bridge()) if k not in ignored
        ]
        replace_on = set(registered.options.get("replace_on_changes") or [])
        replacing = [k for k in changed if k in FORCE_NEW or k in replace_on]
        if replacing:
            return self._replace(registered, previous, lambda: self._create_container(registered, inputs), pending,
                                 changed)  # fmt: skip
        if not changed:
            self.steps.append(Step("same", registered.name))
            return Applied(registered, inputs, state, previous.real_id, previous.outputs)
        self._update_container(previous.real_id, inputs, changed)
        new_state = {**inputs, **render_read(self.api.inspect_container(previous.real_id), inputs)}
        self.steps.append(Step("update", registered.name, tuple(changed)))
        return Applied(registered, inputs, new_state, previous.real_id, previous.outputs)

    def refresh(self, applied: Applied) -> dict[str, Any]:
        """The provider's state for a container: what it planned, overlaid with what Read renders now."""
        return {**applied.state, **render_read(self.api.inspect_container(applied.real_id), applied.state)}

    def _update_container(self, container_id: str, inputs: Mapping[str, Any], changed: Sequence[str]) -> None:
        if set(changed) & UPDATABLE:
            swap = int(inputs.get("memorySwap") or 0)
            self.api.update_container(
                container_id,
                mem_limit=int(inputs.get("memory") or 0) * MIB or None,
                memswap_limit=(swap * MIB if swap > 0 else swap) or None,
                mem_reservation=int(inputs.get("memoryReservation") or 0) * MIB or None,
                cpu_shares=int(inputs.get("cpuShares") or 0) or None,
                cpuset_cpus=inputs.get("cpuSet") or None,
                restart_policy={
                    "Name": inputs.get("restart", "no"),
                    "MaximumRetryCount": inputs.get("maxRetryCount", 0),
                },
            )
        if "mustRun" in changed and inputs.get("mustRun", True):
            self.api.start(container_id)

    def _create_container(self, registered: Registered, inputs: dict[str, Any]) -> Applied:
        api = self.api
        networks = list(inputs.get("networksAdvanced") or [])
        # The provider creates the container on `network_mode` (default bridge), then disconnects it from
        # the bridge and connects every `networks_advanced` network (resource_docker_container_funcs.go).
        # Deviation (module docstring): without a default bridge, it is created on the first network.
        on_bridge = self.has_bridge()
        first = [] if on_bridge else networks[:1]
        binds = [
            f"{v['volumeName']}:{v['containerPath']}:{'ro' if v.get('readOnly') else 'rw'}"
            for v in inputs.get("volumes", [])
            if v.get("volumeName")
        ]
        port_bindings = {f"{p['internal']}/{p.get('protocol', 'tcp')}": (p.get("ip", "0.0.0.0"), p.get("external"))  # noqa: S104
                         for p in inputs.get("ports", [])}  # fmt: skip
        swap = int(inputs.get("memorySwap") or 0)
        capabilities = inputs.get("capabilities") or {}
        host_config = api.create_host_config(
            binds=binds or None,
            port_bindings=port_bindings or None,
            restart_policy={"Name": inputs.get("restart", "no"), "MaximumRetryCount": inputs.get("maxRetryCount", 0)},
            mem_limit=int(inputs.get("memory") or 0) * MIB or None,
            memswap_limit=(swap * MIB if swap > 0 else swap) or None,
            mem_reservation=int(inputs.get("memoryReservation") or 0) * MIB or None,
            cpu_shares=int(inputs.get("cpuShares") or 0) or None,
            cpuset_cpus=inputs.get("cpuSet") or None,
            shm_size=int(inputs["shmSize"]) * MIB if inputs.get("shmSize") else None,
            log_config={"Type": inputs.get("logDriver") or "json-file", "Config": inputs.get("logOpts") or {}},
            cap_add=capabilities.get("adds") or None,
            cap_drop=capabilities.get("drops") or None,
            security_opt=inputs.get("securityOpts") or None,
            read_only=bool(inputs.get("readOnly")),
            tmpfs=inputs.get("tmpfs") or None,
            init=bool(inputs.get("init")),
            privileged=bool(inputs.get("privileged")),
            network_mode=first[0]["name"] if first else inputs.get("networkMode", "bridge"),
        )
        health = inputs.get("healthcheck")
        healthcheck = (
            {
                "Test": health.get("tests") or [],
                "Interval": _ns(health.get("interval", "0s")),
                "Timeout": _ns(health.get("timeout", "0s")),
                "StartPeriod": _ns(health.get("startPeriod", "0s")),
                "StartInterval": _ns(health.get("startInterval", "0s")),
                "Retries": int(health.get("retries", 0)),
            }
            if health
            else None
        )
        networking = (
            api.create_networking_config(
                {first[0]["name"]: api.create_endpoint_config(aliases=first[0].get("aliases"))}
            )
            if first
            else None
        )
        try:
            created = api.create_container(
                image=inputs["image"],
                name=inputs["name"],
                command=inputs.get("command") or None,
                entrypoint=inputs.get("entrypoints") or None,
                user=inputs.get("user") or None,
                environment=inputs.get("envs") or None,
                working_dir=inputs.get("workingDir") or None,
                hostname=inputs.get("hostname") or None,
                labels={item["label"]: item["value"] for item in inputs.get("labels", [])} or None,
                ports=[(p["internal"], p.get("protocol", "tcp")) for p in inputs.get("ports", [])] or None,
                volumes=[v["containerPath"] for v in inputs.get("volumes", [])] or None,
                stop_signal=inputs.get("stopSignal") or None,
                stop_timeout=inputs.get("stopTimeout"),
                healthcheck=healthcheck,
                host_config=host_config,
                networking_config=networking,
            )
        except docker.errors.APIError as error:
            raise RealizeError(f"{registered.name}: Unable to create container: {error.explanation}") from None
        container_id = str(created["Id"])
        try:
            if on_bridge and networks:
                api.disconnect_container_from_network(container_id, "bridge")
            for network in networks[len(first) :]:
                api.connect_container_to_network(container_id, network["name"], aliases=network.get("aliases"))
            for upload in inputs.get("uploads", []):
                try:
                    api.put_archive(container_id, "/", _tar(upload))
                except docker.errors.APIError as error:
                    raise RealizeError(
                        f"{registered.name}: Unable to upload volume content: {error.explanation}"
                    ) from None
            api.start(container_id)
            if inputs.get("wait"):
                self._wait_healthy(registered.name, container_id, int(inputs.get("waitTimeout") or 60))
        except RealizeError:
            # The provider has already stored the id: the half-made container is in the state (tainted).
            self.applied[registered.urn] = Applied(registered, inputs, inputs, container_id, {"id": container_id})
            raise
        state = {**inputs, **render_read(api.inspect_container(container_id), inputs)}
        return Applied(registered, inputs, state, container_id, {"id": container_id, "name": inputs["name"]})

    def _wait_healthy(self, name: str, container_id: str, timeout: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.api.inspect_container(container_id)["State"]
            if state.get("Health") is None:
                raise RealizeError(f"{name}: 'wait' is set but the container has no healthcheck")
            if state["Health"]["Status"] == "healthy":
                return
            time.sleep(1)
        logs = self.api.logs(container_id, tail=20).decode(errors="replace")
        raise RealizeError(f"{name}: container failed to be in a healthy state in {timeout} s; logs:\n{logs}")

    # -- commands ----------------------------------------------------------------------------------
    def _command(self, registered: Registered, inputs: dict[str, Any], previous: Applied | None,
                 pending: list[Applied]) -> Applied:  # fmt: skip
        """pulumi-command 1.2 (provider/pkg/provider/local/command.go): only `triggers` replaces; any other
        change is an update that runs `update`, or `create` again when there is none; a delete (also of a
        replaced command, after its replacement) runs the old state's `delete`."""

        def run(text: str | None) -> dict[str, Any]:
            if not text:
                return {"stdout": "", "stderr": ""}
            result = self.run_shell(text, stdin=inputs.get("stdin"), environment=inputs.get("environment"))
            if result.returncode != 0:
                output = (result.stderr.strip() or result.stdout.strip())[-600:]
                raise RealizeError(f"{registered.name}: exit {result.returncode}: {output}")
            return {"stdout": result.stdout.removesuffix("\n"), "stderr": result.stderr.removesuffix("\n")}

        def create() -> Applied:
            return Applied(registered, inputs, inputs, registered.mock_id, run(inputs.get("create")))

        if previous is None:
            result = create()
            op = "replace" if registered.urn in self._replaced_first else "create"
            self._replaced_first.discard(registered.urn)
            self.steps.append(Step(op, registered.name))
            return result
        changed = _changed_inputs(registered, previous, inputs)
        if not changed:
            self.steps.append(Step("same", registered.name))
            return Applied(registered, inputs, previous.state, previous.real_id, previous.outputs)
        if "triggers" in changed:
            return self._replace(registered, previous, create, pending, changed)
        outputs = run(inputs.get("update") or inputs.get("create"))
        self.steps.append(Step("update", registered.name, tuple(changed)))
        return Applied(registered, inputs, inputs, previous.real_id, outputs)

    def run_shell(
        self, command: str, *, stdin: str | None = None, environment: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command line as `command:local` would. With a host layer it runs as written, its ssh going
        to the rehearsal host only; without one, on this daemon, an ssh prefix dropped."""
        if self.host_layer is not None:
            targets = set(re.findall(r"\b[a-z_][a-z0-9_-]*@([0-9a-zA-Z.:-]+)", command))
            if targets - {self.host_layer.address} or (re.search(r"\bssh\b", command) and not targets):
                raise RealizeError(f"refusing to run a command that would leave this machine: {command[:80]}")
        else:
            argv = shlex.split(command)
            if argv and argv[0] == "ssh":
                target = next(i for i, a in enumerate(argv) if re.match(r"^[^-][^@\s]*@\S+$", a))
                command = " ".join(argv[target + 1 :])
            if re.search(r"\bssh\b", command):
                raise RealizeError(f"refusing to run a command that would leave this machine: {command[:80]}")
        env = {**os.environ, **(environment or {}), "DOCKER_HOST": self.docker_host}
        env.pop("DOCKER_CONTEXT", None)
        return subprocess.run(["/bin/sh", "-c", command], input=stdin, env=env, capture_output=True, text=True,
                              check=False, timeout=900)  # fmt: skip

    # -- deletes -----------------------------------------------------------------------------------
    def _delete(self, applied: Applied) -> None:
        typ = applied.registered.type
        try:
            if typ == CONTAINER:
                grace = int(applied.inputs.get("destroyGraceSeconds") or 0)
                self.api.stop(applied.real_id, timeout=grace)
                self.api.remove_container(applied.real_id, v=applied.inputs.get("removeVolumes", True), force=True)
            elif typ == NETWORK:
                self.client.networks.get(applied.real_id).remove()
            elif typ == VOLUME:
                self.client.volumes.get(applied.real_id).remove()
            elif typ == IMAGE and not applied.inputs.get("keepLocally"):
                self.client.images.remove(applied.inputs["name"], force=bool(applied.inputs.get("forceRemove")))
            elif typ == COMMAND and applied.inputs.get("delete"):
                inputs = applied.inputs
                result = self.run_shell(str(inputs["delete"]), stdin=inputs.get("stdin"),
                                        environment=inputs.get("environment"))  # fmt: skip
                self.delete_outputs[applied.registered.name] = result
                if result.returncode != 0:
                    output = (result.stderr.strip() or result.stdout.strip())[-600:]
                    raise RealizeError(f"deleting {applied.registered.name}: exit {result.returncode}: {output}")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            raise RealizeError(f"deleting {applied.registered.name}: {error.explanation}") from None

    def destroy(self) -> None:
        """`pulumi destroy`: everything this realizer created, dependents first (protection ignored)."""
        for applied in reversed(list(self.applied.values())):
            self._delete(applied)
        self.applied.clear()


def _mock_to_real(registered: Registered, applied: Applied) -> dict[str, str]:
    """Mock output values that stand for real ones in dependents' inputs."""
    pairs: dict[str, str] = {}
    if registered.type == IMAGE:
        pairs[str(registered.mock_outputs["imageId"])] = applied.outputs["imageId"]
    elif registered.type == CONTAINER:
        pairs[registered.mock_id] = applied.real_id
    return pairs


def _substitute(value: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for mock, real in replacements.items():
            if mock in value:
                value = value.replace(mock, real)
        return value
    if isinstance(value, list):
        return [_substitute(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, replacements) for k, v in value.items()}
    return value
