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
pub fn bind_unix(path: &Path, files: &mut SocketFiles) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by a running server", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        listen_unix(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    files.0.push(path.to_path_buf());
    Ok(listener)
}

fn listen_unix(path: &Path) -> std::io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
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
