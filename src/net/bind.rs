//! Binding listeners: TCP with the kernel's deepest backlog, Unix sockets
//! that never steal a live server's path, and removal of the socket files
//! this server created.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};

/// Listen backlog for every listener: as deep as the kernel allows (it caps
/// the value at `net.core.somaxconn`, 4096 by default), as Go's and so
/// websocketd's listeners do. The standard library's 128 overflows when a
/// burst of clients connects while children are being spawned, and a dropped
/// SYN costs the client a one-second retransmission.
const LISTEN_BACKLOG: u32 = i32::MAX as u32;

/// Binds a TCP listener; "all interfaces" over IPv6 falls back to IPv4 on
/// a host without IPv6.
pub async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match listen_tcp(addr) {
        Ok(l) => Ok(l),
        Err(_) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            listen_tcp(v4).with_context(|| format!("cannot listen on {v4}"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    // A restarted server must not wait for old connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds a Unix socket, removing a stale socket file but refusing to steal
/// the path from a live server. The file is removed when `files` is dropped.
///
/// With `mode` (`--socketmode`, `--control-mode`, `--publish-mode`) the file gets those
/// permission bits after `bind` and before `listen`: until `listen` every
/// connect is refused, so nobody gets in under the umask's mode meanwhile.
pub fn bind_unix(
    path: &Path,
    mode: Option<u32>,
    files: &mut SocketFiles,
) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by a running server", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let cannot_listen = || format!("cannot listen on {}", path.display());
    let socket = bound_unix(path).with_context(cannot_listen)?;
    files.0.push(path.to_path_buf());
    if let Some(mode) = mode {
        set_mode(path, mode)
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    listen_unix(socket).with_context(cannot_listen)
}

fn bound_unix(path: &Path) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    Ok(socket)
}

fn listen_unix(socket: socket2::Socket) -> std::io::Result<UnixListener> {
    socket.listen(LISTEN_BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
}

/// A listening socket passed in by the service manager, as a listener.
#[derive(Debug)]
pub enum Adopted {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Takes over a socket systemd passed (socket activation): a listening
/// stream socket, TCP (IPv4 or IPv6) or Unix. Anything else (a datagram
/// socket, one not listening, a FIFO) is refused with the reason: serving
/// it would fail on the first accept.
pub fn adopt(passed: crate::systemd::Passed) -> anyhow::Result<Adopted> {
    use socket2::{Domain, Socket, Type};
    let what = format!("passed socket {:?}", passed.name);
    let socket = Socket::from(passed.fd);
    let kind = socket
        .r#type()
        .with_context(|| format!("{what} is not a socket"))?;
    anyhow::ensure!(
        kind == Type::STREAM,
        "{what} is not a stream socket (ListenStream=)"
    );
    let listening = socket.is_listener().with_context(|| what.clone())?;
    anyhow::ensure!(listening, "{what} is not listening");
    socket.set_nonblocking(true).with_context(|| what.clone())?;
    match socket.domain().with_context(|| what.clone())? {
        Domain::IPV4 | Domain::IPV6 => Ok(Adopted::Tcp(TcpListener::from_std(socket.into())?)),
        Domain::UNIX => Ok(Adopted::Unix(UnixListener::from_std(socket.into())?)),
        other => anyhow::bail!("{what} has an unsupported address family ({other:?})"),
    }
}

/// Sets a socket file's permission bits. By path: on Linux `fchmod` on the
/// socket would not change the file.
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Unix socket files this server created, removed when dropped (however
/// the server ends).
#[derive(Debug, Default)]
pub struct SocketFiles(Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    use crate::systemd::Passed;

    fn passed(fd: impl Into<std::os::fd::OwnedFd>) -> Passed {
        Passed {
            fd: fd.into(),
            name: "test".into(),
        }
    }

    #[tokio::test]
    async fn listening_tcp_and_unix_sockets_are_adopted_and_the_rest_refused() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let Adopted::Tcp(listener) = adopt(passed(tcp)).unwrap() else {
            panic!("a TCP listener");
        };
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        listener.accept().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(matches!(adopt(passed(unix)).unwrap(), Adopted::Unix(_)));

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = adopt(passed(udp)).unwrap_err().to_string();
        assert!(err.contains("not a stream socket"), "{err}");
        let unbound =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let err = adopt(passed(unbound)).unwrap_err().to_string();
        assert!(err.contains("not listening"), "{err}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = adopt(passed(file)).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
    }

    #[tokio::test]
    async fn a_unix_socket_gets_its_mode_and_is_removed_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut files = SocketFiles::default();
        let listener = bind_unix(&path, Some(0o640), &mut files).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        listener.accept().await.unwrap();
        drop(files);
        assert!(!path.exists());
    }
}
