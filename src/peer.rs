//! Who is connected: the peer as the listener saw it, the client a trusted
//! proxy names, and a handle for asking the kernel whether the peer is gone.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::env::RemoteInfo;
use crate::proxy::TrustedProxies;

/// Who is connected, as the listener saw it.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
        /// Whether the connection is TLS (`--ssl`).
        tls: bool,
        /// The TCP socket, for asking the kernel whether the peer has gone.
        socket: PeerSocket,
    },
    Unix,
}

impl Peer {
    /// The listening port the connection came in on (TCP only).
    pub fn local_port(&self) -> Option<u16> {
        match self {
            Peer::Tcp { local, .. } => Some(local.port()),
            Peer::Unix => None,
        }
    }

    /// The TCP socket, if this is a TCP peer.
    pub fn socket(&self) -> Option<PeerSocket> {
        match self {
            Peer::Tcp { socket, .. } => Some(socket.clone()),
            Peer::Unix => None,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Peer::Tcp { tls: true, .. })
    }

    fn remote(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp { remote, .. } => Some(*remote),
            Peer::Unix => None,
        }
    }

    /// The peer for logs: its address, or `unix`.
    pub fn text(&self) -> String {
        match self.remote() {
            Some(remote) => remote.to_string(),
            None => "unix".into(),
        }
    }
}

/// A connection's socket descriptor while the connection is open, `None`
/// once its [`Watched`] owner has dropped it.
type SharedFd = Arc<Mutex<Option<RawFd>>>;

fn lock(fd: &SharedFd) -> MutexGuard<'_, Option<RawFd>> {
    // The critical sections only read or clear the number: poison is moot.
    fd.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on a TCP connection's socket, for asking the kernel about its
/// state. It cannot outlive the descriptor: the connection's [`Watched`]
/// clears it (under the same lock a query holds) before the socket closes,
/// after which every query answers "gone".
#[derive(Debug, Clone)]
pub struct PeerSocket(SharedFd);

impl PeerSocket {
    /// True once the peer has closed or reset the connection (or the
    /// connection is closed here), even while unread data is still queued
    /// in front of its FIN (which a read would only reach after that data).
    pub fn peer_closed(&self) -> bool {
        let fd = lock(&self.0);
        let Some(fd) = *fd else {
            return true;
        };
        // SAFETY: tcp_info is plain old data; getsockopt writes at most
        // `len` bytes into it, and the fd stays open while we hold the lock
        // (Watched's Drop takes it before the socket is closed).
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // Linux tcp_states.h: TCP_CLOSE = 7, TCP_CLOSE_WAIT = 8.
        rc == 0 && matches!(info.tcpi_state, 7 | 8)
    }
}

/// A connection's stream, owning it, with the [`PeerSocket`] handle tied to
/// its life.
#[derive(Debug)]
pub struct Watched<S> {
    io: S,
    fd: SharedFd,
}

impl<S: AsRawFd> Watched<S> {
    /// Wraps `io`; the handle answers for it until the wrapper is dropped.
    pub fn new(io: S) -> (Self, PeerSocket) {
        let fd = Arc::new(Mutex::new(Some(io.as_raw_fd())));
        let socket = PeerSocket(fd.clone());
        (Watched { io, fd }, socket)
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        // Runs before `io` is dropped (and the descriptor closed).
        *lock(&self.fd) = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How the client's address is learned: which proxies are believed, and
/// whether names are looked up.
#[derive(Debug, Clone, Copy)]
pub struct AddressPolicy<'a> {
    pub trusted_proxies: &'a TrustedProxies,
    pub reverse_lookup: bool,
}

impl AddressPolicy<'_> {
    /// REMOTE_ADDR, REMOTE_HOST, REMOTE_PORT: the peer, or the client named
    /// by a trusted proxy (whose port we do not know).
    pub async fn remote_info(&self, peer: &Peer, headers: &HeaderMap) -> RemoteInfo {
        let peer_addr = peer.remote();
        let forwarded = self
            .trusted_proxies
            .client_ip(peer_addr.map(|a| a.ip()), headers);
        match (forwarded, peer_addr) {
            (Some(ip), _) => {
                let ip = ip.to_canonical();
                let host = self.host(ip).await;
                RemoteInfo::Forwarded { ip, host }
            }
            (None, Some(addr)) => {
                let ip = addr.ip().to_canonical();
                let host = self.host(ip).await;
                RemoteInfo::Peer {
                    ip,
                    host,
                    port: addr.port(),
                }
            }
            (None, None) => RemoteInfo::Unix,
        }
    }

    /// REMOTE_HOST: the name with `--reverselookup` (when one is found in
    /// time), else the address.
    async fn host(&self, ip: std::net::IpAddr) -> String {
        if self.reverse_lookup {
            if let Some(name) = reverse(ip).await {
                return name;
            }
        }
        ip.to_string()
    }

    /// Whether the client spoke HTTPS: to us (`--ssl`), or to a trusted
    /// proxy that ended TLS and says so.
    pub fn is_https(&self, peer: &Peer, headers: &HeaderMap) -> bool {
        peer.is_tls()
            || self
                .trusted_proxies
                .forwarded_https(peer.remote().map(|a| a.ip()), headers)
    }
}

/// A bounded reverse DNS lookup, off the runtime's workers.
async fn reverse(ip: std::net::IpAddr) -> Option<String> {
    let lookup = tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok());
    match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
        Ok(Ok(name)) => name,
        _ => None,
    }
}

/// The client as the access log and `wspipe ctl list` show it: the address
/// a trusted proxy forwarded (with the proxy), or else the peer.
pub fn client_text(peer: &Peer, remote: &RemoteInfo) -> String {
    match remote {
        RemoteInfo::Forwarded { ip, .. } => format!("{ip} via {}", peer.text()),
        _ => peer.text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_handle_answers_gone_once_the_connection_is_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (watched, socket) = Watched::new(server);
        assert!(!socket.peer_closed(), "both ends open");
        drop(watched);
        // The number may be reused by the next socket opened: the handle
        // must not look at it any more.
        let _reuse = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(socket.peer_closed());
        drop(client);
    }

    #[test]
    fn the_peer_closing_is_seen_before_its_data_is_read() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (_watched, socket) = Watched::new(server);
        client.write_all(b"unread").unwrap();
        drop(client);
        // The FIN follows the data at once on loopback; poll briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !socket.peer_closed() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(socket.peer_closed());
    }
}
