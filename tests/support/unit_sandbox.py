"""The systemd unit's sandbox, rebuilt where systemd is not the init (a container, CI):
its [Service] keys read from runtime/deploy/edgecast-runtime.service and turned into
a bubblewrap command line, with the unit's system-call filter compiled by libseccomp.

What is reproduced: the read-only system with the state folder the only writable
path (ProtectSystem=strict, StateDirectory=), /opt/edgecast read-only, an empty
private working directory (RuntimeDirectory=, WorkingDirectory=), a private /tmp and
/dev (PrivateTmp=, PrivateDevices=), an unprivileged user in a user namespace with
no capabilities (DynamicUser=, PrivateUsers=, CapabilityBoundingSet=), no new
privileges, the unit's Environment= and UMask=, and (when python3-seccomp is there)
SystemCallFilter= with SystemCallErrorNumber=, RestrictAddressFamilies= and
MemoryDenyWriteExecute= as systemd 252 builds them. Not reproduced: the cgroup
settings (MemoryMax=, IPAddressDeny=/IPAddressAllow=), ProtectKernel*=, ProtectClock=,
ProtectProc=, RestrictNamespaces=, LockPersonality= and KeyringMode=, which need
systemd's own mount, cgroup and seccomp set-up (the host name and IPC are private
through bubblewrap's namespaces)."""

import json
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "runtime" / "deploy" / "edgecast-runtime.service"
SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-seccomp lives
DYNAMIC_UID = 61184  # the first id systemd gives a DynamicUser=
ADDRESS_FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


def unit_settings(path: Path = UNIT) -> dict:
    """The unit's keys by section: {section: {key: [values in order]}}, continuation
    lines joined (comments inside a continued ExecStart= are skipped, as systemd does)."""
    sections, section, pending = {}, None, ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if pending:
            if line.startswith(("#", ";")):
                continue
            line, pending = pending + " " + line, ""
        elif not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def service_settings(path: Path = UNIT) -> dict:
    """[Service] with one value per key (the last), list-valued keys kept whole."""
    service = unit_settings(path)["Service"]
    return {key: values[-1] for key, values in service.items()} | {
        "Environment": " ".join(service.get("Environment", [])),
        "SystemCallFilter": service.get("SystemCallFilter", []),
    }


def syscall_groups() -> dict:
    """systemd's named system-call groups (`systemd-analyze syscall-filter`), each a
    list of names and @group references."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                             text=True, check=True).stdout
    groups, current = {}, None
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names, groups: dict) -> set:
    found = set()
    for name in names:
        if name.startswith("@"):
            found |= expand(groups[name], groups)
        else:
            found.add(name)
    return found


def allowed_syscalls(filters: list, groups: dict) -> set:
    """An allow-list filter as systemd composes it: the first line allows (with
    @default always in), each `~` line takes calls out again."""
    allowed = expand(["@default"], groups)
    for entry in filters:
        if entry.startswith("~"):
            allowed -= expand(entry[1:].split(), groups)
        else:
            allowed |= expand(entry.split(), groups)
    return allowed


# Run by Debian's python3 (libseccomp's bindings are not in the runtime's venv).
_COMPILE = r"""
import json, sys, seccomp
spec = json.load(sys.stdin)
errno = spec["errno"]
flt = seccomp.SyscallFilter(seccomp.ERRNO(errno))
conditional = {"socket", "mmap", "mprotect", "pkey_mprotect", "shmat"}
for name in spec["allow"]:
    if name in conditional:
        continue
    try:
        flt.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError):
        pass  # a name of another architecture
for family in spec["families"]:
    flt.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, family))
W, X, SHM_EXEC = 2, 4, 0o100000
if spec["deny_write_execute"]:  # as systemd's MemoryDenyWriteExecute=
    for prot in (0, W, X):
        flt.add_rule(seccomp.ALLOW, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, W | X, prot))
    for name in ("mprotect", "pkey_mprotect"):
        flt.add_rule(seccomp.ALLOW, name, seccomp.Arg(2, seccomp.MASKED_EQ, X, 0))
    flt.add_rule(seccomp.ALLOW, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, 0))
else:
    for name in ("mmap", "mprotect", "pkey_mprotect", "shmat"):
        flt.add_rule(seccomp.ALLOW, name)
with open(spec["out"], "wb") as out:
    flt.export_bpf(out)
"""


def seccomp_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode == 0


def compile_filter(settings: dict, out: Path) -> int:
    """Write the unit's system-call filter as a BPF program; returns how many calls it allows."""
    errno_names = {"EPERM": 1, "EACCES": 13, "ENOSYS": 38}
    allowed = allowed_syscalls(settings["SystemCallFilter"], syscall_groups())
    families = [ADDRESS_FAMILIES[name] for name in settings["RestrictAddressFamilies"].split()]
    spec = {"allow": sorted(allowed), "families": families, "out": str(out),
            "errno": errno_names[settings.get("SystemCallErrorNumber", "EPERM")],
            "deny_write_execute": settings.get("MemoryDenyWriteExecute") == "yes"}
    subprocess.run([SYSTEM_PYTHON, "-c", _COMPILE], input=json.dumps(spec), text=True,
                   check=True, capture_output=True)
    return len(allowed)


def bwrap_works() -> str:
    """'' when bubblewrap can build a sandbox here, else why not."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (tests/runtime/setup.sh installs bubblewrap)"
    probe = subprocess.run(["bwrap", "--unshare-user", "--uid", str(DYNAMIC_UID), "--ro-bind", "/", "/",
                            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "true"],
                           capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"bwrap cannot sandbox here: {probe.stderr.strip()}"


SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what systemd gives a service


def shown_again(root: str, folders) -> list:
    """--ro-bind of each host folder under `root`, for after the sandbox's empty tmpfs
    on `root`: the venv running the tests in a clone under /tmp, say, which its
    scripts' #! lines name (on a hub the venv is /opt/edgecast/venv itself)."""
    binds = []
    for folder in folders:
        if Path(folder).is_relative_to(root):
            binds += ["--ro-bind", str(folder), str(folder)]
    return binds


def bwrap_command(settings: dict, *, opt: Path, state: Path, runtime: Path, environment: dict,
                  seccomp_fd=None, visible=(sys.prefix,)) -> list:
    """bubblewrap's arguments for the unit's sandbox; `opt`, `state` and `runtime` are the
    host folders seen as /opt/edgecast (read-only), the StateDirectory= and the
    RuntimeDirectory= (both writable); `environment`: what systemd adds to the unit's
    Environment= (NOTIFY_SOCKET, WATCHDOG_USEC); `visible`: host folders that stay
    readable at their own paths even where a private tmpfs would hide them."""
    assert settings["ProtectSystem"] == "strict" and settings["PrivateTmp"] == "yes"
    assert settings["PrivateDevices"] == "yes" and settings["NoNewPrivileges"] == "yes"
    assert settings["DynamicUser"] == "yes" and settings["CapabilityBoundingSet"] == ""
    state_dir = "/var/lib/" + settings["StateDirectory"]
    runtime_dir = "/run/" + settings["RuntimeDirectory"]
    command = ["bwrap", "--die-with-parent", "--new-session",
               "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup",
               "--uid", str(DYNAMIC_UID), "--gid", str(DYNAMIC_UID), "--cap-drop", "ALL",
               "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--tmpfs", "/tmp", *shown_again("/tmp", visible),
               "--tmpfs", "/opt", "--ro-bind", str(opt), "/opt/edgecast", *shown_again("/opt", visible),
               "--remount-ro", "/opt",
               "--tmpfs", "/var/lib", "--bind", str(state), state_dir, *shown_again("/var/lib", visible),
               "--remount-ro", "/var/lib",
               "--tmpfs", "/run", "--bind", str(runtime), runtime_dir, *shown_again("/run", visible),
               "--remount-ro", "/run",
               "--chdir", settings["WorkingDirectory"], "--clearenv"]
    variables = {"PATH": SYSTEMD_PATH}
    for assignment in shlex.split(settings["Environment"]):
        name, _, value = assignment.partition("=")
        variables[name] = value
    for name, value in {**variables, **environment}.items():
        command += ["--setenv", name, value]
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    return command


def exec_start(settings: dict) -> list:
    return shlex.split(settings["ExecStart"])


def commented_exec_start(command: str, path: Path = UNIT) -> list:
    """The unit's commented-out variant `# ExecStart=... COMMAND ...` (the MQTT one)."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("ExecStart=") and f" {command} " in line:
            joined = line
            while joined.endswith("\\"):
                index += 1
                joined = joined[:-1].rstrip() + " " + lines[index]
            return shlex.split(joined.partition("=")[2])
    raise AssertionError(f"{path} has no commented ExecStart= for {command!r}")


# Keys the systemd-run test sets itself: a unique state and runtime folder (not a real
# install's), a short watchdog, no restarts (a failure must show), no reload command.
_SET_BY_THE_TEST = {"ExecStart", "ExecReload", "Restart", "RestartSec", "RestartPreventExitStatus",
                    "StateDirectory", "RuntimeDirectory", "WorkingDirectory", "WatchdogSec", "Type"}


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None


def systemd_run_command(unit_name: str, opt: Path, argv: list, watchdog_seconds: float,
                        path: Path = UNIT) -> list:
    """`systemd-run --wait --pipe` of `argv` as a transient service with every other key
    of the unit's [Service] section as it is; `opt` appears as /opt/edgecast (read-only),
    the state and runtime folders are named after `unit_name`."""
    service = unit_settings(path)["Service"]
    command = ["systemd-run", "--wait", "--pipe", f"--unit={unit_name}",
               f"--service-type={service['Type'][-1]}",
               f"--property=StateDirectory={unit_name}", f"--property=RuntimeDirectory={unit_name}",
               f"--property=WorkingDirectory=/run/{unit_name}",
               f"--property=WatchdogSec={watchdog_seconds:g}s", "--property=Restart=no",
               f"--property=BindReadOnlyPaths={opt}:/opt/edgecast"]
    for key, values in service.items():
        if key not in _SET_BY_THE_TEST:
            command += [f"--property={key}={value}" for value in values]
    state_dir = "/var/lib/" + service["StateDirectory"][-1] + "/"
    return command + [part.replace(state_dir, f"/var/lib/{unit_name}/") for part in argv]
