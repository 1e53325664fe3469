//! Fan-out of "the kill state changed" to every gateway process on the host.
//!
//! Each gateway binds a Unix datagram socket in `<db>.control/` (mode 0700,
//! so only the user running Airlock can reach it). After a kill or resume is
//! committed, [`notify_all`] sends one byte to every socket there; a gateway
//! wakes in its [`Listener::recv`] and re-reads [`crate::ControlStore::active`].
//! The datagram carries no data: the store is the truth, a spurious wake-up
//! costs one query, and a lost one is covered by the gateway's own re-read.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::error::ControlError;

/// The longest socket path the kernel takes is 107 bytes (`sun_path`); a socket name here is
/// at most 33 (`<pid>-<12 hex>.sock`).
const MAX_DIR_LEN: usize = 107 - 1 - 33;

/// The directory of gateway sockets for the database `db`: `<db>.control`, or, when that path
/// is too long for a Unix socket, a private directory in the system temp dir named after the
/// database's absolute path (the same for every process that uses `db`).
pub fn socket_dir(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".control");
    let beside = PathBuf::from(s);
    if beside.as_os_str().len() <= MAX_DIR_LEN {
        return beside;
    }
    let absolute = std::path::absolute(db).unwrap_or_else(|_| db.to_owned());
    let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!(
        "airlock-ctl-{}-{}",
        nix::unistd::getuid(),
        hex::encode(digest.get(..8).unwrap_or_default())
    ))
}

/// Creates the socket directory, or checks that the existing one is a directory of ours that
/// nobody else can enter: a shared temp dir must not let another user plant it.
fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::getuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of this user; refusing to use it for control sockets",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Wakes every gateway listening on `db`; returns how many were reached.
/// Sockets whose process is gone (connection refused, or not a socket any
/// more) are removed. Never blocks on a slow gateway.
pub fn notify_all(db: &Path) -> Result<usize, ControlError> {
    let dir = socket_dir(db);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(ControlError::Io {
                context: "cannot list gateway sockets in",
                path: dir,
                source,
            })
        }
    };
    let sender =
        std::os::unix::net::UnixDatagram::unbound().map_err(|source| ControlError::Io {
            context: "cannot create a socket to notify",
            path: dir.clone(),
            source,
        })?;
    sender
        .set_nonblocking(true)
        .map_err(|source| ControlError::Io {
            context: "cannot create a socket to notify",
            path: dir.clone(),
            source,
        })?;
    let mut reached = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        match sender.send_to(&[1], &path) {
            Ok(_) => reached += 1,
            // A full queue means a wake-up is already pending there.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => reached += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                // Nobody listens: a gateway that died without cleaning up.
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => tracing::warn!(socket = %path.display(), error = %e, "cannot notify gateway"),
        }
    }
    Ok(reached)
}

/// One gateway's wake-up socket; removed from the directory on drop.
#[derive(Debug)]
pub struct Listener {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl Listener {
    /// Binds `<db>.control/<pid>-<random>.sock`, creating the directory
    /// (mode 0700) if needed. Needs a tokio runtime with I/O enabled.
    pub fn bind(db: &Path) -> io::Result<Listener> {
        let dir = socket_dir(db);
        ensure_private_dir(&dir)?;
        let mut r = [0u8; 6];
        crate::auth::random_bytes(&mut r).map_err(io::Error::other)?;
        let path = dir.join(format!("{}-{}.sock", std::process::id(), hex::encode(r)));
        let socket = tokio::net::UnixDatagram::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Listener { socket, path })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a notification; several pending ones count as one.
    pub async fn recv(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 16];
        self.socket.recv(&mut buf).await?;
        while self.socket.try_recv(&mut buf).is_ok() {}
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_database_path_too_long_for_a_socket_still_gets_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir
            .path()
            .join("a-rather-long-directory-name-for-a-test".repeat(3));
        std::fs::create_dir_all(&deep).unwrap();
        let db = deep.join("airlock-audit.db");
        let sockets = socket_dir(&db);
        assert!(
            sockets.starts_with(std::env::temp_dir()),
            "{}",
            sockets.display()
        );
        assert_eq!(
            sockets,
            socket_dir(&db),
            "every process must find the same directory"
        );
        let mut a = Listener::bind(&db).unwrap();
        assert!(a.path().as_os_str().len() <= 107);
        assert_eq!(notify_all(&db).unwrap(), 1);
        tokio::time::timeout(Duration::from_secs(5), a.recv())
            .await
            .unwrap()
            .unwrap();
        drop(a);
        let _ = std::fs::remove_dir(&sockets);
    }

    #[tokio::test]
    async fn notify_reaches_every_bound_listener() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut a = Listener::bind(&db).unwrap();
        let mut b = Listener::bind(&db).unwrap();
        assert_eq!(notify_all(&db).unwrap(), 2);
        tokio::time::timeout(Duration::from_secs(5), a.recv())
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.recv())
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn many_notifications_coalesce_and_stale_sockets_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut a = Listener::bind(&db).unwrap();
        // A gateway killed with -9 leaves its socket file behind, with nobody reading it.
        let gone_path = socket_dir(&db).join("1-dead.sock");
        drop(std::os::unix::net::UnixDatagram::bind(&gone_path).unwrap());
        assert!(gone_path.exists());
        for _ in 0..3 {
            notify_all(&db).unwrap();
        }
        assert!(!gone_path.exists(), "stale socket removed");
        tokio::time::timeout(Duration::from_secs(5), a.recv())
            .await
            .unwrap()
            .unwrap();
        // Coalesced: nothing further is pending.
        assert!(tokio::time::timeout(Duration::from_millis(50), a.recv())
            .await
            .is_err());
    }

    #[test]
    fn no_directory_means_nobody_to_notify() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(notify_all(&dir.path().join("x.db")).unwrap(), 0);
    }

    #[tokio::test]
    async fn drop_removes_the_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let l = Listener::bind(&db).unwrap();
        let p = l.path().to_owned();
        assert!(p.exists());
        drop(l);
        assert!(!p.exists());
    }
}
