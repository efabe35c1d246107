//! The connection beneath the HTTP service. actix-http answers a request it
//! cannot parse (400), whose head is too large (431) or too slow (408) by
//! itself, with an empty body, before any middleware runs. [`ContractIo`]
//! rewrites exactly those answers into the contract's JSON shape as they
//! leave, and after one reads out what the client still sends, so that
//! closing does not reset the connection before the client reads the answer.
//! It also notices when the client hangs up ([`HangUp`]), so that a request
//! whose client has gone is not hashed for.

use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::http::StatusCode;
use actix_web::rt::net::TcpStream;
use actix_web::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::ApiError;

/// How long a connection whose answer was rewritten is read out before closing.
const LINGER: Duration = Duration::from_secs(2);

/// The answers actix-http writes on its own, each with the message the
/// contract's shape carries instead.
const OWN_ANSWERS: [(&[u8], StatusCode, &str); 3] = [
    (b"HTTP/1.1 400 Bad Request\r\n", StatusCode::BAD_REQUEST, "The request is not well-formed HTTP."),
    (b"HTTP/1.1 408 Request Timeout\r\n", StatusCode::REQUEST_TIMEOUT, "The request head did not arrive in time."),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "The request headers are too large.",
    ),
];

/// Whether the client has closed its side of the connection: read end of
/// stream, or a failed read. HTTP/1.1 clients do not half-close, so a
/// request still being handled then has nobody waiting for its answer.
#[derive(Debug, Default)]
pub struct HangUp {
    closed: AtomicBool,
    notify: tokio::sync::Notify,
}

impl HangUp {
    fn mark(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the client has hung up.
    pub async fn wait(&self) {
        let mut notified = pin!(self.notify.notified());
        notified.as_mut().enable();
        if !self.is_closed() {
            notified.await;
        }
    }
}

/// A connection whose server-written error answers are in the contract's shape.
#[derive(Debug)]
pub struct ContractIo {
    /// Always there until dropped; taken then to linger after a rewritten answer.
    inner: Option<TcpStream>,
    /// Rewritten bytes not yet taken by the connection.
    pending: Vec<u8>,
    /// An answer was rewritten: the connection ends after it.
    rewrote: bool,
    hang_up: Arc<HangUp>,
}

impl ContractIo {
    pub fn new(inner: TcpStream) -> Self {
        Self { inner: Some(inner), pending: Vec::new(), rewrote: false, hang_up: Arc::default() }
    }

    /// What the connection's requests read to learn that their client has gone.
    pub fn hang_up(&self) -> Arc<HangUp> {
        self.hang_up.clone()
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.inner.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Hands the rewritten bytes to the connection; ready once all are taken.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let stream = self.inner.as_mut().ok_or(io::ErrorKind::NotConnected)?;
            let written = ready!(Pin::new(stream).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

/// After a rewritten answer the server drops the connection with the
/// client's input unread, which would reset it and could destroy the answer
/// before the client reads it: close the writing side, then read out what
/// the client still sends, for a little while, before closing.
impl Drop for ContractIo {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take().filter(|_| self.rewrote) else { return };
        actix_web::rt::spawn(async move {
            let _ = stream.shutdown().await;
            let mut scratch = [0u8; 8192];
            let drain = async { while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}

/// `bytes` with actix-http's own empty error answer, if it holds one,
/// replaced by the same answer with a JSON body. Only a head that declares
/// an empty body is replaced: the service's own errors always carry one.
fn rewrite(bytes: &[u8]) -> Option<Vec<u8>> {
    let (start, status, message) = OWN_ANSWERS.iter().find_map(|(line, status, message)| {
        bytes.windows(line.len()).position(|w| w == *line).map(|at| (at, *status, *message))
    })?;
    let head_len = bytes[start..].windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &bytes[start..start + head_len];
    if !head.windows(19).any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n")) {
        return None;
    }
    let body = ApiError::of_status(status, message).error_response().into_body().try_into_bytes().unwrap_or_default();
    let date = head.split(|b| *b == b'\n').find(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:"));
    let mut answer = Vec::with_capacity(bytes.len() + body.len() + 160);
    answer.extend_from_slice(&bytes[..start]);
    answer.extend_from_slice(&head[..head.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2]);
    answer.extend_from_slice(b"content-type: application/json\r\n");
    answer.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    answer.extend_from_slice(b"connection: close\r\nx-content-type-options: nosniff\r\n");
    answer.extend_from_slice(b"content-security-policy: default-src 'none'; frame-ancestors 'none'\r\n");
    if let Some(date) = date {
        answer.extend_from_slice(date);
        answer.push(b'\n');
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(&body);
    answer.extend_from_slice(&bytes[start + head_len..]);
    Some(answer)
}

impl AsyncRead for ContractIo {
    /// The dispatcher keeps reading while a request is handled, so an end
    /// of stream is seen as soon as the client hangs up.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (before, room) = (buf.filled().len(), buf.remaining() > 0);
        let read = this.stream()?.poll_read(cx, buf);
        match &read {
            Poll::Ready(Ok(())) if room && buf.filled().len() == before => this.hang_up.mark(),
            Poll::Ready(Err(_)) => this.hang_up.mark(),
            _ => {}
        }
        read
    }
}

impl AsyncWrite for ContractIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if !this.rewrote {
            if let Some(answer) = rewrite(buf) {
                this.rewrote = true;
                this.pending = answer;
                // The original bytes count as taken; the rewrite goes out in their place.
                let _ = this.poll_pending(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        this.stream()?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.stream()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_own_empty_answers_are_rewritten() {
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\ndate: Wed, 02 Dec 2026 04:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(rewrite(own).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
        assert!(answer.contains("content-type: application/json\r\n"));
        assert!(answer.contains("date: Wed, 02 Dec 2026 04:00:00 GMT\r\n"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.starts_with("{\"code\":\"request_header_too_large\""), "{body}");

        let after = b"{\"a\":1}HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let answer = String::from_utf8(rewrite(after).unwrap()).unwrap();
        assert!(answer.starts_with("{\"a\":1}HTTP/1.1 400 Bad Request\r\n"), "what came before is kept");
        assert!(answer.ends_with("{\"code\":\"validation_error\",\"errors\":{\"non_field_errors\":[\"The request is not well-formed HTTP.\"]}}"), "{answer}");

        let service_error = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"code\":\"x\"}";
        assert_eq!(rewrite(service_error), None, "the service's own answers pass untouched");
        assert_eq!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
    }
}
