//! The mail-sender port on lettre: SMTP (`smtp://`, `smtps://`) for real
//! delivery, or one `.eml` file per message (`file://DIR`) for development.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{MailSender, SendError};
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Body, Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP conversation may take before it counts as a transient failure.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum MailerConfigError {
    #[error("expected smtp://host:port, smtps://user:pass@host:port or file://DIR")]
    UnknownScheme,
    #[error("invalid SMTP URL: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("invalid sender address: {0}")]
    From(#[from] lettre::address::AddressError),
    #[error("cannot create the mail directory: {0}")]
    Directory(#[from] std::io::Error),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Sends the outbox's mails through the configured transport.
pub struct LettreMailer {
    from: Mailbox,
    transport: Transport,
    description: String,
}

impl std::fmt::Debug for LettreMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LettreMailer").field("transport", &self.description).finish_non_exhaustive()
    }
}

impl LettreMailer {
    /// `url` is `smtp://host:port` (plain, add `?tls=required` for STARTTLS),
    /// `smtps://user:pass@host:port` (implicit TLS), or `file://DIR`.
    pub fn from_url(url: &str, from: &str) -> Result<Self, MailerConfigError> {
        let from: Mailbox = from.parse()?;
        let (transport, description) = if let Some(dir) = url.strip_prefix("file://") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            (Transport::File(AsyncFileTransport::new(&dir)), format!("files in {}", dir.display()))
        } else if url.starts_with("smtp://") || url.starts_with("smtps://") {
            let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.timeout(Some(SMTP_TIMEOUT)).build();
            (Transport::Smtp(smtp), redact(url))
        } else {
            return Err(MailerConfigError::UnknownScheme);
        };
        Ok(Self { from, transport, description })
    }

    /// Where mail goes, without credentials: for the start-up log.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The message, its `Message-ID` made of `message_key` at the sender's domain.
    fn message(&self, mail: &OutgoingMail, message_key: &str) -> Result<Message, SendError> {
        let to: Mailbox = mail.to.as_ref().parse().map_err(|e| SendError::Permanent(format!("bad recipient: {e}")))?;
        Message::builder()
            .message_id(Some(format!("<{message_key}@{}>", self.from.email.domain())))
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .multipart(MultiPart::alternative_plain_html(readable(&mail.text), readable(&mail.html)))
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }
}

/// SMTP's limit on a line, CRLF excluded.
const MAX_LINE_BYTES: usize = 998;

/// 8bit keeps links intact and greppable (quoted-printable would turn `=`
/// into `=3D` and may fold a token across lines). lettre only picks 8bit for
/// lines under 76 bytes, so the body is handed over encoded when every line
/// fits SMTP's own limit, and left to lettre's choice otherwise.
fn readable(text: &str) -> Body {
    if text.lines().all(|line| line.len() <= MAX_LINE_BYTES) && !text.contains('\0') {
        let crlf = text.lines().collect::<Vec<_>>().join("\r\n") + "\r\n";
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit)
    } else {
        Body::new(text.to_owned())
    }
}

/// Drops the user-info part of a URL so a password never reaches a log.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[async_trait]
impl MailSender for LettreMailer {
    async fn send(&self, mail: &OutgoingMail, message_key: &str) -> Result<(), SendError> {
        let message = self.message(mail, message_key)?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    SendError::Permanent(e.to_string())
                } else {
                    SendError::Transient(e.to_string())
                }
            }),
            Transport::File(file) => {
                file.send(message).await.map(|_| ()).map_err(|e| SendError::Transient(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::Email;
    use mailin_embedded::response::{self, Response};
    use mailin_embedded::{Handler, Server};
    use std::sync::{Arc, Mutex};

    fn mail() -> OutgoingMail {
        OutgoingMail {
            to: Email::parse("ada@example.com").unwrap(),
            subject: "Confirm your email address".into(),
            text: "Open https://app.example.com/verify-email?token=abc".into(),
            html: "<p><a href=\"https://app.example.com/verify-email?token=abc\">Confirm</a></p>".into(),
        }
    }

    #[derive(Clone, Default)]
    struct Inbox {
        messages: Arc<Mutex<Vec<String>>>,
        current: Arc<Mutex<Vec<u8>>>,
        refuse: bool,
    }

    impl Handler for Inbox {
        fn rcpt(&mut self, _to: &str) -> Response {
            if self.refuse {
                response::NO_MAILBOX
            } else {
                response::OK
            }
        }

        fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
            self.current.lock().unwrap().extend_from_slice(buf);
            Ok(())
        }

        fn data_end(&mut self) -> Response {
            let message = std::mem::take(&mut *self.current.lock().unwrap());
            self.messages.lock().unwrap().push(String::from_utf8_lossy(&message).into_owned());
            response::OK
        }
    }

    /// A real SMTP server on a loopback port, on its own thread.
    fn smtp_server(refuse: bool) -> (u16, Inbox) {
        let inbox = Inbox { refuse, ..Inbox::default() };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = Server::new(inbox.clone());
        server.with_name("localhost").with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        (port, inbox)
    }

    #[tokio::test]
    async fn smtp_round_trip_delivers_both_parts() {
        let (port, inbox) = smtp_server(false);
        let mailer =
            LettreMailer::from_url(&format!("smtp://127.0.0.1:{port}"), "Gatehouse <no-reply@localhost>").unwrap();
        mailer.send(&mail(), "outbox.1.2").await.unwrap();
        let messages = inbox.messages.lock().unwrap().clone();
        assert_eq!(messages.len(), 1);
        let message = &messages[0];
        assert!(message.contains("To: ada@example.com"));
        assert!(message.contains("Subject: Confirm your email address"));
        assert!(message.contains("text/plain"));
        assert!(message.contains("text/html"));
        assert!(message.contains("https://app.example.com/verify-email?token=abc"), "links survive encoding");
        assert!(message.contains("Message-ID: <outbox.1.2@localhost>"), "the outbox's stable id: {message}");
    }

    #[tokio::test]
    async fn a_refused_recipient_is_permanent() {
        let (port, _inbox) = smtp_server(true);
        let mailer = LettreMailer::from_url(&format!("smtp://127.0.0.1:{port}"), "no-reply@localhost").unwrap();
        assert!(matches!(mailer.send(&mail(), "outbox.1.2").await, Err(SendError::Permanent(_))));
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mailer = LettreMailer::from_url(&format!("smtp://127.0.0.1:{port}"), "no-reply@localhost").unwrap();
        assert!(matches!(mailer.send(&mail(), "outbox.1.2").await, Err(SendError::Transient(_))));
    }

    #[tokio::test]
    async fn file_transport_writes_one_eml_per_message() {
        let dir = std::env::temp_dir().join(format!("gatehouse-mail-{}", std::process::id()));
        let mailer = LettreMailer::from_url(&format!("file://{}", dir.display()), "no-reply@localhost").unwrap();
        mailer.send(&mail(), "outbox.1.2").await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].extension().unwrap(), "eml");
        assert!(std::fs::read_to_string(&files[0]).unwrap().contains("verify-email?token=abc"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn unknown_schemes_and_bad_senders_are_refused() {
        assert!(matches!(LettreMailer::from_url("http://x", "a@b.c"), Err(MailerConfigError::UnknownScheme)));
        assert!(matches!(
            LettreMailer::from_url("smtp://localhost:25", "not an address"),
            Err(MailerConfigError::From(_))
        ));
    }

    /// The pooled SMTP transport needs a runtime, even to be dropped.
    #[tokio::test]
    async fn credentials_never_reach_the_description() {
        let mailer = LettreMailer::from_url("smtps://user:hunter2@mail.example.com:465", "a@b.c").unwrap();
        assert_eq!(mailer.describe(), "smtps://***@mail.example.com:465");
    }
}
