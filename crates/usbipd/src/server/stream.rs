//! What a connection is to the handshake and the session: a byte stream that splits into a
//! reader and a writer, and that is a plain TCP socket when it can be handed to the extension.
//! Plain USB/IP connections are `TcpStream`s; TLS ones are rustls streams over one.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// The two halves: the session task reads from one and writes its replies to the other.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// The TCP socket itself, when the connection is nothing more (so that it can be handed
    /// to another process); otherwise the connection back.
    fn into_tcp(self) -> Result<TcpStream, Self>;
}

impl Conn for TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }
}

/// A TLS connection: its records are encrypted in this process, so it cannot be handed over.
pub type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

impl Conn for TlsConn {
    type Reader = tokio::io::ReadHalf<TlsConn>;
    type Writer = tokio::io::WriteHalf<TlsConn>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Err(self)
    }
}
