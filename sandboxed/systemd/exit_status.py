"""systemd's exit statuses for a unit process that could not be started (systemd.exec(5)).

When systemd fails to set up a unit's process (user, namespaces, working
directory...) before exec, the process exits with one of these statuses; the
names are systemd's own (``217/USER``), the texts say what usually causes it.
"""

from __future__ import annotations

from typing import Final

#: status -> (systemd's name, what it means, in our words)
EXIT_STATUSES: Final[dict[int, tuple[str, str]]] = {
    200: ("CHDIR", "could not change to WorkingDirectory= (missing, or not enterable by User=)"),
    201: ("NICE", "could not set Nice="),
    202: ("FDS", "could not close or pass file descriptors"),
    203: ("EXEC", "could not execute the interpreter (missing, or not executable by User=)"),
    204: ("MEMORY", "ran out of memory while setting the process up"),
    205: ("LIMITS", "could not apply a Limit*= resource limit"),
    206: ("OOM_ADJUST", "could not set OOMScoreAdjust="),
    207: ("SIGNAL_MASK", "could not set the signal mask"),
    208: ("STDIN", "could not set up standard input"),
    209: ("STDOUT", "could not set up standard output"),
    210: ("CHROOT", "could not change to RootDirectory="),
    211: ("IOPRIO", "could not set IOSchedulingClass=/IOSchedulingPriority="),
    212: ("TIMERSLACK", "could not set TimerSlackNSec="),
    213: ("SECUREBITS", "could not set SecureBits="),
    214: ("SETSCHEDULER", "could not set CPUSchedulingPolicy="),
    215: ("CPUAFFINITY", "could not set CPUAffinity="),
    216: ("GROUP", "could not find or set Group= / SupplementaryGroups= (no such group?)"),
    217: ("USER", "could not find or set User= (no such user?)"),
    218: ("CAPABILITIES", "could not drop or set capabilities"),
    219: ("CGROUP", "could not set up the unit's cgroup"),
    220: ("SETSID", "could not create a session"),
    221: ("CONFIRM", "execution was refused at the confirmation prompt"),
    222: ("STDERR", "could not set up standard error"),
    224: ("PAM", "PAM= session set-up failed"),
    225: ("NETWORK", "could not set up PrivateNetwork= or NetworkNamespacePath="),
    226: (
        "NAMESPACE",
        "could not set up the mount namespace (a path in ReadWritePaths=, ReadOnlyPaths=, "
        "InaccessiblePaths=, BindPaths=... does not exist, or the kernel refused a mount)",
    ),
    227: ("NO_NEW_PRIVILEGES", "could not set NoNewPrivileges="),
    228: ("SECCOMP", "could not install SystemCallFilter= (an unknown group or system call?)"),
    229: ("SELINUX_CONTEXT", "could not set SELinuxContext="),
    230: ("PERSONALITY", "could not set Personality="),
    231: ("APPARMOR_PROFILE", "could not set AppArmorProfile="),
    232: ("ADDRESS_FAMILIES", "could not install RestrictAddressFamilies="),
    233: ("RUNTIME_DIRECTORY", "could not create RuntimeDirectory="),
    235: ("CHOWN", "could not change the owner of the standard streams"),
    236: ("SMACK_PROCESS_LABEL", "could not set SmackProcessLabel="),
    237: ("KEYRING", "could not set up KeyringMode="),
    238: ("STATE_DIRECTORY", "could not create StateDirectory="),
    239: ("CACHE_DIRECTORY", "could not create CacheDirectory="),
    240: ("LOGS_DIRECTORY", "could not create LogsDirectory="),
    241: ("CONFIGURATION_DIRECTORY", "could not create ConfigurationDirectory="),
    242: ("NUMA_POLICY", "could not set NUMAPolicy="),
    243: ("CREDENTIALS", "could not set up LoadCredential=/SetCredential="),
    245: ("BPF", "could not apply a BPF program (IPAddressDeny=, RestrictFileSystems=...)"),
}


def describe_exit_status(status: int) -> str:
    """``"217/USER: could not find or set User= ..."``, or ``"status 3"`` for another status."""
    known = EXIT_STATUSES.get(status)
    if known is None:
        return f"status {status}"
    name, text = known
    return f"{status}/{name}: {text}"
