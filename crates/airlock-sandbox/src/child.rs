//! What runs in the new process between `fork` and `exec`.
//!
//! Everything here must be async-signal-safe: the parent may have other threads, one of
//! which may hold the allocator's lock at the moment of `fork`. So the [`Plan`] is built
//! in the parent (paths as C strings, the Landlock ruleset as an fd, seccomp as BPF) and
//! the child only makes raw syscalls on it: no allocation, no locks, no panics.
//!
//! With namespaces on, the process tree is
//!
//! ```text
//! supervisor (the pid the caller sees; new user, mount, net namespaces; the filesystem
//!              view of `view`; waits, exits alike)
//!   └─ init    (pid 1 of the new PID namespace; mounts /proc, reaps, forwards signals)
//!        └─ command (its own working directory, rlimits, no_new_privs, Landlock, seccomp,
//!                    then exec)
//! ```
//!
//! When init exits the kernel kills everything left in the namespace, and init dies with
//! the supervisor (`PR_SET_PDEATHSIG`): killing the supervisor kills the whole tree.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use seccompiler::BpfProgram;

use crate::profile::Layer;
use crate::view::{View, MAX_SHOWN};

/// One step of the set-up; its number is written to the report pipe when it fails, so the
/// parent can say which layer broke (the exec machinery only carries an errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    JoinCgroup = 1,
    DropGroups,
    DropGid,
    DropUid,
    Dumpable,
    Unshare,
    DenySetgroups,
    UidMap,
    GidMap,
    MountPrivate,
    ForkInit,
    DeathSignal,
    MountProc,
    ForkCommand,
    Rlimit,
    NoNewPrivs,
    LandlockProc,
    LandlockRestrict,
    Seccomp,
    LoopbackUp,
    ProxyListen,
    ProxyHandOver,
    ViewClone,
    ViewHide,
    ViewShow,
    ViewSeal,
    Chdir,
}

impl Step {
    const ALL: [Step; 27] = [
        Step::JoinCgroup,
        Step::DropGroups,
        Step::DropGid,
        Step::DropUid,
        Step::Dumpable,
        Step::Unshare,
        Step::DenySetgroups,
        Step::UidMap,
        Step::GidMap,
        Step::MountPrivate,
        Step::ForkInit,
        Step::DeathSignal,
        Step::MountProc,
        Step::ForkCommand,
        Step::Rlimit,
        Step::NoNewPrivs,
        Step::LandlockProc,
        Step::LandlockRestrict,
        Step::Seccomp,
        Step::LoopbackUp,
        Step::ProxyListen,
        Step::ProxyHandOver,
        Step::ViewClone,
        Step::ViewHide,
        Step::ViewShow,
        Step::ViewSeal,
        Step::Chdir,
    ];

    pub(crate) fn from_byte(b: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u8 == b)
    }

    /// The layer the step belongs to and what it does, for the error message.
    pub(crate) fn describe(self) -> (Layer, &'static str) {
        use Layer::*;
        match self {
            Step::JoinCgroup => (Rlimits, "joining the sandbox's cgroup"),
            Step::LoopbackUp => (Network, "bringing up lo in the new network namespace"),
            Step::ProxyListen => (Network, "listening for the egress proxy on 127.0.0.1"),
            Step::ProxyHandOver => (Network, "handing the proxy socket to Airlock"),
            Step::DropGroups => (Namespaces, "dropping supplementary groups"),
            Step::DropGid => (Namespaces, "switching to the sandbox gid"),
            Step::DropUid => (Namespaces, "switching to the sandbox uid"),
            Step::Dumpable => (Namespaces, "prctl(PR_SET_DUMPABLE)"),
            Step::Unshare => (Namespaces, "unshare(user, mount, pid, net)"),
            Step::DenySetgroups => (Namespaces, "writing /proc/self/setgroups"),
            Step::UidMap => (Namespaces, "writing /proc/self/uid_map"),
            Step::GidMap => (Namespaces, "writing /proc/self/gid_map"),
            Step::MountPrivate => (Namespaces, "making mounts private"),
            Step::ForkInit => (Namespaces, "forking the PID namespace's init"),
            Step::DeathSignal => (Namespaces, "prctl(PR_SET_PDEATHSIG)"),
            Step::MountProc => (Namespaces, "mounting /proc for the new PID namespace"),
            Step::ForkCommand => (Namespaces, "forking the command"),
            Step::Rlimit => (Rlimits, "setrlimit"),
            Step::NoNewPrivs => (Seccomp, "prctl(PR_SET_NO_NEW_PRIVS)"),
            Step::LandlockProc => (Landlock, "adding the /proc rule"),
            Step::LandlockRestrict => (Landlock, "landlock_restrict_self"),
            Step::Seccomp => (Seccomp, "loading the seccomp filter"),
            Step::ViewClone => (Namespaces, "cloning a granted path (open_tree)"),
            Step::ViewHide => (Namespaces, "covering a hidden directory with a tmpfs"),
            Step::ViewShow => (Namespaces, "showing a granted path again (move_mount)"),
            Step::ViewSeal => (Namespaces, "making a covering tmpfs read-only"),
            Step::Chdir => (Namespaces, "entering the working directory"),
        }
    }
}

/// Resource limits to set, as the kernel takes them.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    pub(crate) cpu: Option<libc::rlimit>,
    pub(crate) data: Option<libc::rlimit>,
    pub(crate) nproc: Option<libc::rlimit>,
}

/// Everything the child needs, prepared in the parent.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Airlock's pid: the supervisor checks it is still its parent.
    pub(crate) parent: libc::pid_t,
    /// Drop to this uid/gid first (Airlock runs as root; the command never does).
    pub(crate) drop_to: Option<(libc::uid_t, libc::gid_t)>,
    /// New user, mount and PID namespaces.
    pub(crate) namespaces: bool,
    /// A new network namespace too.
    pub(crate) new_net: bool,
    /// Only a network namespace (namespaces off, Airlock root): unshared before dropping root.
    pub(crate) net_only: bool,
    pub(crate) uid_map: CString,
    pub(crate) gid_map: CString,
    pub(crate) limits: Option<Limits>,
    /// The Landlock ruleset, and whether to add the fresh `/proc` to it.
    pub(crate) landlock: Option<OwnedFd>,
    pub(crate) seccomp: Vec<BpfProgram>,
    /// Write end of the report pipe (one byte: the failed [`Step`]).
    pub(crate) report: OwnedFd,
    /// `cgroup.procs` of each of the sandbox's groups: joined first, before any fork.
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    /// Egress: the supervisor's end of the pair it sends the proxy's listening socket on.
    pub(crate) proxy: Option<OwnedFd>,
    /// The filesystem view set up in the new mount namespace (namespaces on).
    pub(crate) view: Option<View>,
    /// Where the command starts: its private directory, or `/`; never Airlock's own.
    pub(crate) cwd: CString,
}

/// The pid a supervisor or init forwards termination signals to.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// Signals passed on to the child, so a polite stop reaches the command.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// `struct landlock_path_beneath_attr` (packed in the kernel's uapi).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `LANDLOCK_RULE_PATH_BENEATH`.
const RULE_PATH_BENEATH: libc::c_int = 1;

/// The pre-exec hook. Returns only in the process that goes on to exec the command.
pub(crate) fn run(plan: &Plan) -> io::Result<()> {
    // SAFETY: every call below is a raw syscall on memory prepared by the parent; none
    // allocates or takes a lock (see the module docs).
    unsafe {
        for fd in &plan.cgroup_procs {
            check(plan, Step::JoinCgroup, crate::cgroup::join(fd.as_raw_fd()))?;
        }
        if plan.net_only {
            check(plan, Step::Unshare, libc::unshare(libc::CLONE_NEWNET))?;
        }
        if let Some((uid, gid)) = plan.drop_to {
            check(plan, Step::DropGroups, libc::setgroups(0, std::ptr::null()))?;
            check(plan, Step::DropGid, libc::setresgid(gid, gid, gid))?;
            check(plan, Step::DropUid, libc::setresuid(uid, uid, uid))?;
            // A uid change makes /proc/self root-owned; the maps below need it ours.
            check(
                plan,
                Step::Dumpable,
                libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0),
            )?;
        }
        if plan.namespaces {
            enter_namespaces(plan)?;
        } else {
            // No supervisor in between: the command itself dies with Airlock (set after the
            // uid change, which clears it).
            check(
                plan,
                Step::DeathSignal,
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
            )?;
            if libc::getppid() != plan.parent {
                libc::_exit(1);
            }
        }
        check(plan, Step::Chdir, libc::chdir(plan.cwd.as_ptr()))?;
        if let Some(limits) = &plan.limits {
            set_limits(plan, limits)?;
        }
        check(
            plan,
            Step::NoNewPrivs,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
        if let Some(ruleset) = &plan.landlock {
            restrict_fs(plan, ruleset.as_raw_fd())?;
        }
        for prog in &plan.seccomp {
            let r = crate::syscalls::install(prog);
            check(plan, Step::Seccomp, r as libc::c_int)?;
        }
    }
    Ok(())
}

/// Unshares, maps ids, forks init and the command; returns in the command only.
unsafe fn enter_namespaces(plan: &Plan) -> io::Result<()> {
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    if plan.new_net {
        flags |= libc::CLONE_NEWNET;
    }
    // The supervisor dies with Airlock, even a SIGKILLed one (set after the uid change,
    // which clears it); if Airlock is already gone, stop here.
    check(
        plan,
        Step::DeathSignal,
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
    )?;
    if libc::getppid() != plan.parent {
        libc::_exit(1);
    }
    check(plan, Step::Unshare, libc::unshare(flags))?;
    // Unprivileged users must give up setgroups before they may map a gid.
    write_file(plan, Step::DenySetgroups, c"/proc/self/setgroups", c"deny")?;
    write_file(plan, Step::UidMap, c"/proc/self/uid_map", &plan.uid_map)?;
    write_file(plan, Step::GidMap, c"/proc/self/gid_map", &plan.gid_map)?;
    // Our mounts (the new /proc) stay in this namespace.
    let r = libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    );
    check(plan, Step::MountPrivate, r)?;
    if let Some(view) = &plan.view {
        show_view(plan, view)?;
    }
    if let Some(pair) = &plan.proxy {
        proxy_listener(plan, pair.as_raw_fd())?;
    }

    // The first child is pid 1 of the new PID namespace.
    let init = libc::fork();
    check(plan, Step::ForkInit, init)?;
    if init > 0 {
        wait_and_exit(init);
    }
    check(
        plan,
        Step::DeathSignal,
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
    )?;
    let r = libc::mount(
        c"proc".as_ptr(),
        c"/proc".as_ptr(),
        c"proc".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    );
    check(plan, Step::MountProc, r)?;
    let command = libc::fork();
    check(plan, Step::ForkCommand, command)?;
    if command > 0 {
        wait_and_exit(command);
    }
    Ok(())
}

/// `open_tree` flags: a detached copy of the mount tree at the path, submounts included.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
/// `move_mount` flag: the source is the fd itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// In the supervisor, in the new mount namespace: clones each granted path shown again,
/// covers each hidden directory with an empty tmpfs, attaches the clones on top, and makes
/// the tmpfs read-only. A granted path the sandbox's user cannot reach (`EACCES`, gone
/// since) stays hidden: it would be unreadable inside anyway.
unsafe fn show_view(plan: &Plan, view: &View) -> io::Result<()> {
    let mut trees: [RawFd; MAX_SHOWN] = [-1; MAX_SHOWN];
    for (i, shown) in view.show.iter().enumerate().take(MAX_SHOWN) {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            shown.path.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        ) as libc::c_int;
        if fd < 0 {
            let errno = *libc::__errno_location();
            if matches!(
                errno,
                libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ELOOP
            ) {
                continue;
            }
            close_all(&trees);
            return Err(report(plan, Step::ViewClone));
        }
        trees[i] = fd;
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for dir in &view.hide {
        let r = libc::mount(
            c"tmpfs".as_ptr(),
            dir.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            c"mode=0755,size=1m".as_ptr().cast(),
        );
        if r < 0 {
            close_all(&trees);
            return Err(report(plan, Step::ViewHide));
        }
    }
    for (i, shown) in view.show.iter().enumerate().take(MAX_SHOWN) {
        let tree = trees[i];
        if tree < 0 {
            continue;
        }
        for parent in &shown.parents {
            libc::mkdir(parent.as_ptr(), 0o755);
        }
        if shown.dir {
            libc::mkdir(shown.path.as_ptr(), 0o755);
        } else {
            let f = libc::open(
                shown.path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            );
            if f >= 0 {
                libc::close(f);
            }
        }
        let r = libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            shown.path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) as libc::c_int;
        if r < 0 {
            close_all(&trees);
            return Err(report(plan, Step::ViewShow));
        }
        libc::close(tree);
        trees[i] = -1;
    }
    for dir in &view.hide {
        let r = libc::mount(
            std::ptr::null(),
            dir.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
            std::ptr::null(),
        );
        check(plan, Step::ViewSeal, r)?;
    }
    Ok(())
}

unsafe fn close_all(fds: &[RawFd]) {
    for fd in fds {
        if *fd >= 0 {
            libc::close(*fd);
        }
    }
}

/// In the supervisor, inside the new network namespace: brings `lo` up, listens on
/// 127.0.0.1:PROXY_PORT and sends that socket to Airlock, keeping no copy. The command
/// (forked later) never holds it; it can only connect to it.
unsafe fn proxy_listener(plan: &Plan, pair: RawFd) -> io::Result<()> {
    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    check(plan, Step::LoopbackUp, s)?;
    let mut ifr: libc::ifreq = std::mem::zeroed();
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    let r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
    if r < 0 {
        libc::close(s);
        return Err(report(plan, Step::LoopbackUp));
    }
    ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
    libc::close(s);
    check(plan, Step::LoopbackUp, r)?;

    let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    check(plan, Step::ProxyListen, l)?;
    let mut addr: libc::sockaddr_in = std::mem::zeroed();
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = crate::egress::PROXY_PORT.to_be();
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    let r = libc::bind(
        l,
        (&addr as *const libc::sockaddr_in).cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    );
    if r < 0 || libc::listen(l, 128) < 0 {
        let e = report(plan, Step::ProxyListen);
        libc::close(l);
        return Err(e);
    }

    // One SCM_RIGHTS message carrying `l`; the buffer is sized and aligned for one fd.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32);
    msg.msg_controllen = space as usize;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    if cmsg.is_null() {
        libc::close(l);
        return Err(report(plan, Step::ProxyHandOver));
    }
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
    std::ptr::copy_nonoverlapping(
        (&l as *const libc::c_int).cast::<u8>(),
        libc::CMSG_DATA(cmsg),
        std::mem::size_of::<libc::c_int>(),
    );
    let n = libc::sendmsg(pair, &msg, libc::MSG_NOSIGNAL);
    let e = if n < 0 {
        Some(report(plan, Step::ProxyHandOver))
    } else {
        None
    };
    libc::close(l);
    e.map_or(Ok(()), Err)
}

unsafe fn set_limits(plan: &Plan, limits: &Limits) -> io::Result<()> {
    let core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    check(
        plan,
        Step::Rlimit,
        libc::setrlimit(libc::RLIMIT_CORE, &core),
    )?;
    if let Some(l) = &limits.cpu {
        check(plan, Step::Rlimit, libc::setrlimit(libc::RLIMIT_CPU, l))?;
    }
    if let Some(l) = &limits.data {
        check(plan, Step::Rlimit, libc::setrlimit(libc::RLIMIT_DATA, l))?;
    }
    if let Some(l) = &limits.nproc {
        check(plan, Step::Rlimit, libc::setrlimit(libc::RLIMIT_NPROC, l))?;
    }
    Ok(())
}

unsafe fn restrict_fs(plan: &Plan, ruleset: RawFd) -> io::Result<()> {
    if plan.namespaces {
        // The /proc mounted above is this PID namespace's own: only the sandbox's processes.
        let fd = libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        check(plan, Step::LandlockProc, fd)?;
        let attr = PathBeneathAttr {
            allowed_access: crate::fs_rules::PROC_ACCESS,
            parent_fd: fd,
        };
        let r = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0,
        );
        libc::close(fd);
        check(plan, Step::LandlockProc, r as libc::c_int)?;
    }
    let r = libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0);
    check(plan, Step::LandlockRestrict, r as libc::c_int)
}

/// Stdin, stdout and stderr on `/dev/null`, every other descriptor closed: a waiting helper
/// holds none of the command's pipes (their EOF means the command closed them).
///
/// # Safety
/// Only in a forked helper that needs none of its descriptors; async-signal-safe.
unsafe fn keep_no_fds() {
    // SAFETY: plain syscalls on descriptor numbers; nothing here allocates.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
    }
}

/// Supervisor and init: keep no fds (so the caller sees EOF and exec success as soon as
/// the command has them), forward signals, wait for `child`, exit with its status.
unsafe fn wait_and_exit(child: libc::pid_t) -> ! {
    FORWARD_TO.store(child, Ordering::Relaxed);
    for sig in FORWARDED {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut());
    }
    keep_no_fds();
    let mut code = 1;
    loop {
        let mut status = 0;
        // Init reaps every orphan in the namespace; the supervisor has only one child.
        let r = libc::waitpid(-1, &mut status, 0);
        if r == child {
            code = exit_code(status);
            break;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            break;
        }
    }
    libc::_exit(code)
}

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; the pid is our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: libc::c_int) -> libc::c_int {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

unsafe fn write_file(
    plan: &Plan,
    step: Step,
    path: &std::ffi::CStr,
    text: &std::ffi::CStr,
) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    check(plan, step, fd)?;
    let bytes = text.to_bytes();
    let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    libc::close(fd);
    if n < 0 || n as usize != bytes.len() {
        return Err(report(plan, step));
    }
    Ok(())
}

/// A negative result is a failure of `step`: report it, return the errno.
unsafe fn check(plan: &Plan, step: Step, r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(report(plan, step))
    } else {
        Ok(())
    }
}

unsafe fn report(plan: &Plan, step: Step) -> io::Error {
    let err = io::Error::last_os_error();
    let byte = [step as u8];
    libc::write(plan.report.as_raw_fd(), byte.as_ptr().cast(), 1);
    err
}

// === the keeper of an unsandboxed command ===

/// Makes `cmd`'s whole process tree end with the calling process, for a command that runs
/// with no sandbox (`sandbox = "off"`): no PID namespace holds that tree, so something must
/// end it if Airlock dies without cleaning up (a crash, `kill -9`).
///
/// The process Airlock sees is a keeper: it leads a process group of its own (this sets
/// `process_group(0)`), forks the command into that group, waits for it and exits with its
/// status. The keeper dies with Airlock (`PR_SET_PDEATHSIG`, delivered as SIGHUP, which it
/// catches) and then SIGKILLs its group: the command and everything it forked that stayed in
/// the group. SIGTERM, SIGINT and SIGQUIT sent to the group reach the command directly; the
/// keeper ignores them and waits. A SIGKILL of the group ends everything at once, the keeper
/// included.
///
/// Not covered: a process that leaves the group (`setsid`, `setpgid`) — it asked to be
/// something else's, and only a PID namespace (the sandbox) holds such a process.
///
/// The parent-death signal follows the *thread* that spawns: call `spawn` from a thread
/// that lives as long as the command should (Airlock's main thread).
pub fn end_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: `keep` makes only async-signal-safe syscalls (see the module docs).
    unsafe {
        cmd.pre_exec(move || keep(parent));
    }
}

/// Parent death: the whole group goes, the keeper with it.
extern "C" fn end_group(_sig: libc::c_int) {
    // SAFETY: kill is async-signal-safe; 0 is the caller's own process group.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

/// In the forked child: becomes the keeper and returns only in the command's process.
fn keep(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: raw syscalls on stack memory only; nothing allocates or locks.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = end_group as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(libc::SIGHUP, &act, std::ptr::null_mut()) != 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP, 0, 0, 0) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // Airlock died before the signal was armed: nothing may start.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        let keeper = libc::getpid();
        let command = libc::fork();
        if command < 0 {
            return Err(io::Error::last_os_error());
        }
        if command == 0 {
            // The command: SIGHUP as usual (exec resets the handler too), and it dies with the
            // keeper, should the keeper alone be killed.
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != keeper {
                libc::_exit(1);
            }
            return Ok(());
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // Keep no fds: the command alone holds the pipes (EOF means it closed them), and the
        // exec-status pipe closes when the command execs.
        keep_no_fds();
        loop {
            let mut status = 0;
            let r = libc::waitpid(command, &mut status, 0);
            if r == command {
                libc::_exit(exit_code(status));
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}
