//! The seccomp filter, compiled to BPF in the parent; the child only loads it.
//!
//! Denied calls fail with `EPERM` (so a server sees a clean error and can go on), except
//! `clone3` (and `openat2`, where it is refused), which fail with `ENOSYS`: their flags live
//! in memory a filter cannot read, and `ENOSYS` makes the C library fall back to `clone`
//! (`openat`), whose flags the filter does check.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::SandboxError;
use crate::profile::Layer;

/// Syscalls no sandboxed server needs, and that open a way out or into the kernel.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_setns, "setns"),
];

/// `clone` flags that create namespaces: refused like `unshare`.
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Socket families `socket(2)` may create; every other one gets `EPERM` (netlink, packet,
/// vsock, …), `AF_UNIX` included: a Unix socket of its own is how a sandboxed process would
/// reach one of the host's (D-Bus, ssh-agent, docker.sock, Airlock's control sockets), and
/// Landlock does not govern `connect(2)` to a socket file. Connected pairs stay allowed.
const SOCKET_FAMILIES: &[u64] = &[libc::AF_INET as u64, libc::AF_INET6 as u64];

/// The type bits of `socket(2)`'s and `socketpair(2)`'s second argument (the rest are
/// `SOCK_NONBLOCK` and `SOCK_CLOEXEC`).
const SOCK_TYPE_MASK: u64 = 0xf;

/// On x86_64 the x32 ABI reuses the native audit arch with this bit set in the syscall
/// number: a filter keyed on numbers must refuse all of them, or every rule can be dodged.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The names of the denied syscalls, for `airlock sandbox probe` and docs.
pub fn denied_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = DENIED.iter().map(|(_, n)| *n).collect();
    v.extend([
        "clone (namespace flags)",
        "clone3",
        "socket (families other than AF_INET, AF_INET6)",
        "socketpair (other than AF_UNIX stream or seqpacket)",
        "ioctl TIOCSTI, TIOCLINUX (typing into the terminal)",
    ]);
    v
}

/// The filters to load, in order. Several programs stack: the kernel runs them all and
/// the strictest answer wins.
///
/// `refuse_truncate`: also refuse, in the place of a Landlock without the truncate right
/// (ABI < 3), `truncate(2)` by path, an `open` that truncates without asking for write
/// access (Landlock checks the access asked for; the kernel truncates anyway), and
/// `openat2` (its flags are in memory a filter cannot read; `ENOSYS` makes callers fall back).
///
/// `allow_unix`: the profile names Unix sockets the process may use (`unix_sockets`), so
/// `socket(AF_UNIX)` is allowed; the filesystem view then shows only those of the host's socket
/// files beneath the hidden directories.
pub(crate) fn programs(
    refuse_truncate: bool,
    allow_unix: bool,
) -> Result<Vec<BpfProgram>, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| prepare_err("arch", e))?;
    let eperm = SeccompAction::Errno(libc::EPERM as u32);

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in DENIED {
        // An empty rule list matches the syscall whatever its arguments.
        rules.insert(*nr, Vec::new());
    }
    let unix = [libc::AF_UNIX as u64];
    let families = SOCKET_FAMILIES
        .iter()
        .chain(if allow_unix { &unix[..] } else { &[] });
    let family_not_allowed = SeccompRule::new(
        families
            .map(|f| cond(0, SeccompCmpOp::Ne, *f))
            .collect::<Result<_, _>>()?,
    )
    .map_err(|e| prepare_err("socket rule", e))?;
    rules.insert(libc::SYS_socket, vec![family_not_allowed]);
    // A pair is born connected: a stream or seqpacket end cannot be pointed elsewhere
    // (`EISCONN`), a datagram end could `sendto` any socket file, so it is refused.
    let pair_rules = vec![
        SeccompRule::new(vec![cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?])
            .map_err(|e| prepare_err("socketpair rule", e))?,
        SeccompRule::new(vec![cond(
            1,
            SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
            libc::SOCK_DGRAM as u64,
        )?])
        .map_err(|e| prepare_err("socketpair rule", e))?,
    ];
    rules.insert(libc::SYS_socketpair, pair_rules);
    // A command that shares the user's terminal (`airlock exec`) could push keystrokes into the
    // shell the user returns to (TIOCSTI, or TIOCLINUX on a virtual console): a way out of any
    // sandbox where the kernel still allows it (`dev.tty.legacy_tiocsti = 1`).
    let typing = [libc::TIOCSTI, libc::TIOCLINUX]
        .iter()
        .map(|req| {
            // `Ioctl` is an unsigned long here and an int elsewhere.
            #[allow(clippy::unnecessary_cast)]
            let req = *req as u64;
            SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, req)?])
                .map_err(|e| prepare_err("ioctl rule", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, typing);
    if refuse_truncate {
        rules.insert(libc::SYS_truncate, Vec::new());
        let read_only_trunc = |flags_arg: u8| -> Result<SeccompRule, SandboxError> {
            SeccompRule::new(vec![
                cond(
                    flags_arg,
                    SeccompCmpOp::MaskedEq(libc::O_ACCMODE as u64),
                    libc::O_RDONLY as u64,
                )?,
                cond(
                    flags_arg,
                    SeccompCmpOp::MaskedEq(libc::O_TRUNC as u64),
                    libc::O_TRUNC as u64,
                )?,
            ])
            .map_err(|e| prepare_err("open rule", e))
        };
        #[cfg(target_arch = "x86_64")]
        rules.insert(libc::SYS_open, vec![read_only_trunc(1)?]);
        rules.insert(libc::SYS_openat, vec![read_only_trunc(2)?]);
    }
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|flag| {
            SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(*flag), *flag)?])
                .map_err(|e| prepare_err("clone rule", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);

    let main = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch)
        .map_err(|e| prepare_err("build the filter", e))?;
    let mut enosys = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    if refuse_truncate {
        enosys.insert(libc::SYS_openat2, Vec::new());
    }
    let clone3 = SeccompFilter::new(
        enosys,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| prepare_err("build the clone3 filter", e))?;
    let mut out = vec![
        BpfProgram::try_from(main).map_err(|e| prepare_err("compile the filter", e))?,
        BpfProgram::try_from(clone3).map_err(|e| prepare_err("compile the clone3 filter", e))?,
    ];
    #[cfg(target_arch = "x86_64")]
    out.push(deny_x32());
    Ok(out)
}

/// Loads one compiled filter into the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`).
/// Returns the raw syscall result (negative on error, with `errno` set). Makes no allocation,
/// so it is safe between fork and exec.
///
/// # Safety
/// Call only where installing a filter on this thread is intended (a pre-exec hook): it
/// restricts every later syscall of the thread and its children.
pub(crate) unsafe fn install(prog: &BpfProgram) -> libc::c_long {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).unwrap_or(u16::MAX),
        // seccompiler's sock_filter has the kernel's layout.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the program.
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    }
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| prepare_err("condition", e))
}

/// `nr >= X32_SYSCALL_BIT` → `ENOSYS`, else allow. Hand-written: four instructions.
#[cfg(target_arch = "x86_64")]
fn deny_x32() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(BPF_LD_W_ABS, 0, 0, NR_OFFSET),
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

fn prepare_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> SandboxError {
    SandboxError::Prepare {
        layer: Layer::Seccomp,
        what: what.to_owned(),
        source: Box::new(e),
    }
}
