//! Waiting for more bytes while listener filters peek (nothing is consumed). A peek leaves
//! the socket readable, so readiness alone cannot say when new bytes come; and a peer that
//! sent a few bytes and then closed leaves those bytes peekable forever. This waits a little
//! between peeks that saw nothing new, and reports the peer's close.

use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Waits until more than `n` bytes may be peekable. `seen` is the count the previous peek
/// saw. Err(()) when the peer closed its side (no more bytes will come) or the socket failed.
pub async fn wait_for_more(stream: &TcpStream, n: usize, seen: &mut usize) -> Result<(), ()> {
    if n == *seen {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    *seen = n;
    let ready = stream.ready(Interest::READABLE).await.map_err(|_| ())?;
    if ready.is_read_closed() {
        return Err(());
    }
    Ok(())
}
