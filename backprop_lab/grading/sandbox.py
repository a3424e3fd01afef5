"""Sandboxed kernel launcher and the probe that says which isolation this machine allows.

The grader writes a kernel spec whose argv is, with full isolation (Linux, root)::

    unshare --pid --fork --kill-child --mount --mount-proc --ipc \\
        python -m backprop_lab.grading.sandbox --config CONFIG -f {connection_file}

and runs each pytest/nbval process inside ``unshare --net`` with only the loopback interface
up, so the kernel shares a network namespace with nothing but the grader's client. This
module then (still root, inside the new PID, mount and IPC namespaces): reads the connection
file, covers ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``, ``/root``, ``/home`` and the
configured paths with empty tmpfs mounts, sets resource limits, switches to a fresh
unprivileged uid, and execs
``ipykernel`` with a clean environment. The kernel is PID 1 of its namespace: when it ends,
everything it forked ends too.

Without root or namespaces only the resource limits and a clean environment apply.

A memory and CPU budget for a submission as a whole (a kernel and everything it forks) needs
cgroup v2 with the ``memory``, ``cpu`` and ``pids`` controllers delegated to the grader
(:func:`cgroup_parent`): each kernel then joins a cgroup of its own under the grader's, before
it drops root. Where that is not possible the per-process limits above are all there is, and
the isolation label (the gradebook's isolation column) and the grader's stderr say so.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

KERNEL_NAME = "backprop-lab-sandbox"
#: The folder (next to the graded notebook) that the grader prepares for trusted verdicts.
CHECK_FOLDER = "check"
# (backprop_lab.checks.seeding's names, spelled out: the launcher stays free of NumPy)
CHECK_DIR_ENV = "BACKPROP_LAB_CHECK_DIR"
LEGACY_SEED_ENV = "BACKPROP_LAB_SEED"
COVERED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/root", "/home")
UID_BASE = 200_000
UID_SPAN = 500_000
#: Set (to anything) to grade without namespaces or a uid switch, e.g. to debug a kernel.
DISABLE_ENV = "BACKPROP_LAB_NO_SANDBOX"
CGROUP_CONTROLLERS = ("memory", "cpu", "pids")
CGROUP_PREFIX = "backprop-lab-"


def probe() -> dict:
    """Which protections work here: {'uid': bool, 'netns': bool, 'pidns': bool, 'mountns': bool,
    'notes': [...]} (tried for real, once)."""
    notes = []
    result = {"uid": False, "netns": False, "pidns": False, "mountns": False, "ipcns": False}
    if os.environ.get(DISABLE_ENV):
        notes.append(f"sandbox disabled ({DISABLE_ENV} is set): only resource limits apply")
        return {**result, "notes": notes}
    if not sys.platform.startswith("linux"):
        notes.append("not Linux: no namespaces, no uid switch")
        return {**result, "notes": notes}
    if os.geteuid() != 0:
        notes.append("not root: the kernel runs as the grader's user")
    else:
        result["uid"] = True
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if os.geteuid() == 0 and unshare:

        def works(args):
            try:
                r = subprocess.run(args, capture_output=True, timeout=20)
                return r.returncode == 0
            except (OSError, subprocess.SubprocessError):
                return False

        result["netns"] = bool(ip) and works([unshare, "--net", "sh", "-c", f"{ip} link set lo up"])
        result["pidns"] = works([unshare, "--pid", "--fork", "--kill-child", "true"])
        result["ipcns"] = works([unshare, "--ipc", "true"])
        result["mountns"] = works(
            [
                unshare,
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "sh",
                "-c",
                "mount -t tmpfs none /tmp",
            ]
        )
    for key, what in (
        ("netns", "network namespace (the kernel keeps the network)"),
        ("pidns", "PID namespace (forked processes may outlive the kernel)"),
        ("mountns", "mount namespace (the kernel sees the whole file system)"),
        ("ipcns", "IPC namespace (SysV shared memory and semaphores are the host's)"),
    ):
        if os.geteuid() == 0 and not result[key]:
            notes.append(f"no {what}")
    return {**result, "notes": notes}


def isolation_label(p: dict, extra: list[str] = ()) -> str:
    notes = list(p.get("notes", [])) + list(extra)
    return "full" if not notes else "partial: " + "; ".join(notes)


# --------------------------------------------------------------------------- cgroups


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def own_cgroup() -> tuple[str | None, str]:
    """(the directory of this process's cgroup v2, '') or (None, why there is none)."""
    if not sys.platform.startswith("linux"):
        return None, "not Linux"
    try:
        mounts = [ln.split() for ln in _read("/proc/self/mounts").splitlines()]
        rel = next(
            (ln[3:] for ln in _read("/proc/self/cgroup").splitlines() if ln.startswith("0::")),
            None,
        )
    except OSError as exc:
        return None, f"cannot read /proc ({exc.strerror})"
    points = [m[1] for m in mounts if len(m) > 2 and m[2] == "cgroup2"]
    if not points or rel is None:
        return None, "no cgroup v2 hierarchy is mounted"
    for point in points:
        own = os.path.normpath(point + "/" + rel.strip())
        if os.path.isfile(os.path.join(own, "cgroup.controllers")):
            return own, ""
    return None, f"the grader's cgroup {rel.strip()} is not visible under {', '.join(points)}"


def cgroup_parent(tag: str) -> tuple[str | None, str]:
    """Create the cgroup under which each grading kernel gets a cgroup of its own.

    Returns (its directory, '') or (None, why not). The grader's own cgroup must offer the
    memory, cpu and pids controllers and be writable (root, or a delegated cgroup). When it
    holds the grader alone, the grader moves itself into a leaf ``backprop-lab-grader`` (a
    cgroup that hands controllers to children may not hold processes itself).
    """
    if os.environ.get(DISABLE_ENV):
        return None, f"{DISABLE_ENV} is set"
    own, why = own_cgroup()
    if own is None:
        return None, why
    try:
        offered = set(_read(os.path.join(own, "cgroup.controllers")).split())
    except OSError as exc:
        return None, f"cannot read {own}/cgroup.controllers ({exc.strerror})"
    missing = [c for c in CGROUP_CONTROLLERS if c not in offered]
    if missing:
        return None, (
            f"cgroup v2 offers no {'/'.join(missing)} controller to the grader's cgroup "
            f"(it offers: {' '.join(sorted(offered)) or 'none'})"
        )
    wanted = " ".join(f"+{c}" for c in CGROUP_CONTROLLERS)
    control = os.path.join(own, "cgroup.subtree_control")
    try:
        try:
            _write(control, wanted)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            procs = _read(os.path.join(own, "cgroup.procs")).split()
            if procs != [str(os.getpid())]:
                return None, (
                    f"the grader's cgroup {own} holds other processes, so it cannot hand "
                    "memory and CPU to child cgroups (run the grader in a cgroup of its own, "
                    "e.g. systemd-run --scope -p Delegate=yes backprop-lab grade ...)"
                )
            leaf = os.path.join(own, CGROUP_PREFIX + "grader")
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), "0")
            _write(control, wanted)
        parent = os.path.join(own, f"{CGROUP_PREFIX}{tag}")
        os.makedirs(parent, exist_ok=True)
        _write(os.path.join(parent, "cgroup.subtree_control"), wanted)
    except OSError as exc:
        return None, f"cannot create a child cgroup of {own} ({exc.strerror or exc})"
    return parent, ""


def remove_cgroups(parent: str, keep_parent: bool = True) -> None:
    """Remove the (empty) kernel cgroups under ``parent``; the parent too unless kept."""
    try:
        leaves = [e.path for e in os.scandir(parent) if e.is_dir()]
    except OSError:
        return
    for leaf in leaves:
        try:
            os.rmdir(leaf)
        except OSError:
            pass  # a kernel still runs in it
    if not keep_parent:
        try:
            os.rmdir(parent)
        except OSError:
            pass


def remove_stale_cgroups() -> None:
    """Kernel cgroups of graders that were killed (their pid is gone)."""
    own, _ = own_cgroup()
    if own is None:
        return
    try:
        entries = [e for e in os.scandir(own) if e.name.startswith(CGROUP_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(CGROUP_PREFIX) :].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            remove_cgroups(entry.path, keep_parent=False)


def join_cgroup(cfg: dict, name: str) -> None:
    """In the kernel launcher (still root): a cgroup with the submission's budget, joined."""
    parent = cfg.get("cgroup")
    if not parent:
        return
    leaf = os.path.join(parent, name)
    os.makedirs(leaf, exist_ok=True)
    mb = int(cfg.get("memory_mb", 4096))
    period = 100_000
    quota = max(1000, int(float(cfg.get("cpus", 1.0)) * period))
    settings = [
        ("memory.max", str(mb * 2**20)),
        ("memory.swap.max", "0"),
        ("cpu.max", f"{quota} {period}"),
        ("pids.max", str(int(cfg.get("max_processes", 64)))),
    ]
    for key, value in settings:
        path = os.path.join(leaf, key)
        if key == "memory.swap.max" and not os.path.exists(path):
            continue  # no swap accounting: nothing to limit
        _write(path, value)
    _write(os.path.join(leaf, "cgroup.procs"), "0")


def kernel_argv(config_path: str, p: dict) -> list[str]:
    inner = [
        sys.executable,
        "-m",
        "backprop_lab.grading.sandbox",
        "--config",
        config_path,
        "-f",
        "{connection_file}",
    ]
    if p.get("pidns") and p.get("mountns"):
        ipc = ["--ipc"] if p.get("ipcns") else []  # private SysV IPC, gone with the kernel
        return [
            shutil.which("unshare"),
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--mount-proc",
            *ipc,
            *inner,
        ]
    return inner


def network_prefix(p: dict) -> list[str]:
    """Command prefix that runs the grader's pytest in a private network namespace."""
    if not p.get("netns"):
        return []
    return [
        shutil.which("unshare"),
        "--net",
        "sh",
        "-c",
        f'{shutil.which("ip")} link set lo up && exec "$@"',
        "sh",
    ]


# --------------------------------------------------------------------------- inside


_MS_BIND, _MS_REC = 4096, 16384


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    enc = [None if x is None else x.encode() for x in (source, target, fstype, data)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def needed_paths() -> list[str]:
    """Directories the kernel must still see: the interpreter, the venv, the package."""
    import importlib.util

    package = importlib.util.find_spec("backprop_lab").origin  # found, not imported
    paths = {
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.realpath(package)),  # the package itself, not its repo
    }
    return sorted(os.path.realpath(p) for p in paths)


def _cover(covered: list[str], hidden: list[str]) -> None:
    """Cover directories with empty tmpfs mounts and bind back what the kernel needs.

    ``covered`` (such as /tmp and /home) are covered first and the needed paths (the Python
    environment, the backprop_lab package) are bound back into them; ``hidden`` (the
    source notebooks, the submissions, the output, --hide paths) are covered last, so a
    hidden folder stays hidden even when it lies inside a tree that was bound back.
    """
    covered = [p for p in covered if os.path.isdir(p)]
    keep = [n for n in needed_paths() if any(n.startswith(p.rstrip("/") + "/") for p in covered)]
    fds = {n: os.open(n, os.O_RDONLY | os.O_DIRECTORY) for n in keep}
    for p in covered:
        if os.path.isdir(p):  # (a covered parent may already have hidden it)
            _mount("none", p, "tmpfs", 0, "size=64m,mode=755")
    for n, fd in fds.items():
        os.makedirs(n, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", n, None, _MS_BIND | _MS_REC, None)
        os.close(fd)
    for p in hidden:
        if os.path.isdir(p):
            _mount("none", p, "tmpfs", 0, "size=1m,mode=755")


def _limits(cfg: dict) -> None:
    mb = int(cfg.get("memory_mb", 4096))
    for res, value in (
        (resource.RLIMIT_AS, mb * 2**20),
        (resource.RLIMIT_CPU, int(cfg.get("cpu_seconds", 120))),
        (resource.RLIMIT_FSIZE, 64 * 2**20),
        (resource.RLIMIT_NOFILE, 256),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass
    if os.geteuid() == 0 and cfg.get("switch_uid"):
        n = int(cfg.get("max_processes", 64))
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = argv[argv.index("--config") + 1]
    connection = argv[argv.index("-f") + 1]
    cfg = json.loads(Path(config).read_text())
    conn_text = Path(connection).read_text()
    isolate = cfg.get("isolate", False) and os.geteuid() == 0
    uid = UID_BASE + zlib.crc32(connection.encode()) % UID_SPAN
    # the budget of the submission as a whole; a kernel that cannot join it does not start
    # (the gradebook would otherwise claim a budget that was not there)
    join_cgroup(cfg, f"kernel-{zlib.crc32(connection.encode()):08x}-{os.getpid()}")
    # trusted verdicts: the grader prepared <the notebook's folder>/check (the kernel starts
    # there); the kernel gets that folder and no seed
    check = os.path.join(os.getcwd(), CHECK_FOLDER) if cfg.get("trusted") else None
    if check is not None and not os.path.isdir(check):
        check = None
    check_fd = os.open(check, os.O_RDONLY | os.O_DIRECTORY) if check and isolate else None
    if isolate:
        _cover([*COVERED, *cfg.get("cover", [])], list(cfg.get("hide", [])))
        home = Path("/tmp/kernel")
    else:
        import tempfile

        scratch = cfg.get("scratch")
        if scratch:
            os.makedirs(scratch, mode=0o700, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix="kernel-", dir=scratch))
    home.mkdir(parents=True, exist_ok=True)
    if check_fd is not None:  # the grader's folder is hidden; bind the check folder back
        check = str(home / CHECK_FOLDER)
        os.makedirs(check, exist_ok=True)
        _mount(f"/proc/self/fd/{check_fd}", check, None, _MS_BIND, None)
        os.close(check_fd)
    conn_copy = home / "connection.json"
    conn_copy.write_text(conn_text)
    os.chmod(conn_copy, 0o600)
    switch = isolate and cfg.get("switch_uid", True)
    if switch:
        for p in (home, conn_copy):
            os.chown(p, uid, uid)
        if check is not None:  # the kernel reads inputs/ (the grader's) and writes outputs/
            os.makedirs(os.path.join(check, "outputs"), exist_ok=True)
            os.chown(os.path.join(check, "outputs"), uid, uid)
        os.chmod(home, 0o700)
    env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "IPYTHONDIR": str(home / ".ipython"),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
        "MPLBACKEND": "Agg",
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if check is not None:
        env[CHECK_DIR_ENV] = check
    elif cfg.get("seed") is not None:  # legacy check cells: the oracle runs in the kernel
        env[LEGACY_SEED_ENV] = str(cfg["seed"])
    for key in ("OPENBLAS_CORETYPE", "VIRTUAL_ENV"):
        if key in os.environ:
            env[key] = os.environ[key]
    _limits({**cfg, "switch_uid": switch})
    os.chdir(home)
    if switch:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    args = [
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        str(conn_copy),
        "--IPKernelApp.exec_lines=['import backprop_lab.grading.kernel_startup']",
        "--HistoryManager.enabled=False",
    ]
    os.execve(sys.executable, args, env)


if __name__ == "__main__":
    main()
