//! Landlock: the filesystem allowlist, built in the parent so the child only has to
//! call `landlock_restrict_self` (a plain syscall, safe after `fork`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use crate::error::SandboxError;
use crate::profile::Layer;

/// The newest ABI this crate was tested against; older kernels get the subset they know
/// (best effort), and what that subset lacks another layer gives or the sandbox does not
/// start (`guarantee::decide`); a kernel without Landlock is refused.
const TARGET_ABI: ABI = ABI::V6;

/// Device files every program expects to read and write.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"];

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
const CREATE_RULESET_VERSION: libc::c_uint = 1;

/// `LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR`: what the child grants on
/// the `/proc` it mounts itself (that mount does not exist yet when the parent builds rules).
pub(crate) const PROC_ACCESS: u64 = (1 << 2) | (1 << 3);

/// The kernel's Landlock ABI version, or a negative errno-style value when it has none.
pub fn kernel_abi() -> i64 {
    // SAFETY: the version query takes no pointers that are read (NULL, size 0) and has no
    // side effects.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        v
    }
}

/// A ready ruleset: the child adds the `/proc` rule (when asked) and restricts itself.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) fd: OwnedFd,
}

/// Builds the ruleset for `read` (read + execute), `write` (everything), the usual
/// device files, and — when `deny_tcp` — no TCP bind or connect at all, except a connect
/// to `proxy_port` (the egress proxy inside the sandbox's own namespace).
pub(crate) fn prepare(
    read: &[PathBuf],
    write: &[&Path],
    deny_tcp: bool,
    proxy_port: Option<u16>,
) -> Result<Prepared, SandboxError> {
    let abi = kernel_abi();
    if abi < 1 {
        return Err(SandboxError::Unsupported {
            layer: Layer::Landlock,
            reason: format!(
                "this kernel has no Landlock (ABI query gave {abi}); it needs Linux 5.13+ \
                 with `landlock` in the `lsm=` boot list"
            ),
        });
    }
    for w in write {
        if !w.exists() {
            return Err(SandboxError::Path {
                path: w.to_path_buf(),
                message: "a writable path must exist".into(),
            });
        }
    }
    let err = |what: &str| {
        let what = what.to_owned();
        move |e: landlock::RulesetError| SandboxError::Prepare {
            layer: Layer::Landlock,
            what,
            source: Box::new(e),
        }
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err("handle filesystem access"))?;
    if deny_tcp {
        // Handled with no rule: every TCP bind and connect is refused (ABI 4+).
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(err("handle network access"))?;
    }
    // Signals and abstract sockets stay inside the sandbox (ABI 6+).
    ruleset = ruleset
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(err("scope signals and abstract sockets"))?;
    let device_access: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::WriteFile;
    let created = ruleset
        .create()
        .map_err(err("create the ruleset"))?
        .add_rules(path_beneath_rules(read, AccessFs::from_read(TARGET_ABI)))
        .map_err(err("add a readable path"))?
        .add_rules(path_beneath_rules(write, AccessFs::from_all(TARGET_ABI)))
        .map_err(err("add a writable path"))?
        .add_rules(path_beneath_rules(DEVICES, device_access))
        .map_err(err("add the device files"))?
        .add_rules(
            proxy_port
                .filter(|_| deny_tcp)
                .map(|port| Ok(NetPort::new(port, AccessNet::ConnectTcp))),
        )
        .map_err(err("allow the egress proxy's port"))?;
    let fd: Option<OwnedFd> = created.into();
    let fd = fd.ok_or_else(|| SandboxError::Unsupported {
        layer: Layer::Landlock,
        reason: "the kernel refused to create a Landlock ruleset".into(),
    })?;
    Ok(Prepared { fd })
}
