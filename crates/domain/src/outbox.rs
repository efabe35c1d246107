//! Delivery of the durable outbox: lease due mails, send, record the outcome.

use std::sync::Arc;
use time::Duration;

use crate::error::PortError;
use crate::ports::{Clock, MailSender, Outbox, SendError};

#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Mails taken per round.
    pub batch: i64,
    /// How long a taken mail is reserved for this worker; longer than one send.
    pub lease: Duration,
    /// Attempts before a transiently failing mail is given up.
    pub max_attempts: i32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            batch: 20,
            lease: Duration::minutes(2),
            max_attempts: 25,
            first_backoff: Duration::seconds(2),
            max_backoff: Duration::hours(1),
        }
    }
}

impl DeliveryPolicy {
    /// Exponential backoff after the `attempts`-th failure, capped.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let factor = 2_i32.saturating_pow(u32::try_from(attempts.clamp(0, 30)).unwrap_or(30));
        (self.first_backoff * factor).min(self.max_backoff)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: usize,
    pub failed: usize,
}

#[derive(Clone)]
pub struct MailDelivery {
    outbox: Arc<dyn Outbox>,
    sender: Arc<dyn MailSender>,
    clock: Arc<dyn Clock>,
    policy: DeliveryPolicy,
    /// This worker's name on the leases it takes.
    owner: String,
}

impl std::fmt::Debug for MailDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailDelivery").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl MailDelivery {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        sender: Arc<dyn MailSender>,
        clock: Arc<dyn Clock>,
        policy: DeliveryPolicy,
        owner: String,
    ) -> Self {
        Self { outbox, sender, clock, policy, owner }
    }

    /// One round: sends what is due now. The caller loops and sleeps.
    /// Delivers due mail, one lease per message, up to a batch. A message
    /// whose lease was lost meanwhile (it outlasted the lease, and another
    /// worker took it) is left to that worker.
    pub async fn deliver_due(&self) -> Result<DeliveryReport, PortError> {
        let mut report = DeliveryReport::default();
        for _ in 0..self.policy.batch {
            let now = self.clock.now();
            let Some(queued) = self.outbox.claim_next(now, now + self.policy.lease, &self.owner).await? else {
                break;
            };
            match self.sender.send(&queued.mail, &queued.message_key()).await {
                Ok(()) => {
                    if !self.outbox.mark_sent(queued.id, &self.owner).await? {
                        tracing::warn!(mail_id = queued.id, "mail sent after its lease was lost");
                    }
                    report.sent += 1;
                }
                Err(error) => {
                    let attempts = queued.attempts + 1;
                    let retry_at = match &error {
                        SendError::Transient(_) if attempts < self.policy.max_attempts => {
                            Some(self.clock.now() + self.policy.backoff(attempts))
                        }
                        _ => None,
                    };
                    tracing::warn!(mail_id = queued.id, attempts, will_retry = retry_at.is_some(), %error, "mail delivery failed");
                    self.outbox.mark_failed(queued.id, &self.owner, retry_at, &error.to_string()).await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::Email;
    use crate::mail::OutgoingMail;
    use crate::ports::{MockClock, MockMailSender, MockOutbox, QueuedMail};
    use std::sync::Mutex;
    use time::macros::datetime;

    const NOW: time::OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn queued(id: i64, attempts: i32) -> QueuedMail {
        let to = Email::parse("ada@example.com").unwrap();
        let mail = OutgoingMail { to, subject: "s".into(), text: "t".into(), html: "h".into() };
        QueuedMail { id, attempts, mail, created_at: NOW }
    }

    /// An outbox that lends `mail` once, leased to the test worker.
    fn lending(mail: QueuedMail) -> MockOutbox {
        let slot = Mutex::new(Some(mail));
        let mut outbox = MockOutbox::new();
        outbox
            .expect_claim_next()
            .withf(|_, until, owner| *until == NOW + Duration::minutes(2) && owner == "worker-1")
            .returning(move |_, _, _| Ok(slot.lock().unwrap().take()));
        outbox
    }

    fn delivery(outbox: MockOutbox, sender: MockMailSender) -> MailDelivery {
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| NOW);
        let policy = DeliveryPolicy::default();
        MailDelivery::new(Arc::new(outbox), Arc::new(sender), Arc::new(clock), policy, "worker-1".into())
    }

    #[tokio::test]
    async fn sent_mail_leaves_the_queue_with_a_stable_message_id() {
        let mut outbox = lending(queued(7, 0));
        outbox
            .expect_mark_sent()
            .withf(|id, owner| *id == 7 && owner == "worker-1")
            .times(1)
            .returning(|_, _| Ok(true));
        let mut sender = MockMailSender::new();
        let key = queued(7, 0).message_key();
        sender.expect_send().withf(move |_, message_key| message_key == key).times(1).returning(|_, _| Ok(()));
        let report = delivery(outbox, sender).deliver_due().await.unwrap();
        assert_eq!(report, DeliveryReport { sent: 1, failed: 0 });
        assert_eq!(queued(7, 0).message_key(), queued(7, 3).message_key(), "the same at every attempt");
        assert_ne!(queued(7, 0).message_key(), queued(8, 0).message_key());
    }

    #[tokio::test]
    async fn transient_failure_is_retried_with_backoff() {
        let mut outbox = lending(queued(7, 2));
        outbox
            .expect_mark_failed()
            .withf(|id, _, retry_at, _| *id == 7 && *retry_at == Some(datetime!(2026-11-21 10:00:16 UTC)))
            .times(1)
            .returning(|_, _, _, _| Ok(true));
        let mut sender = MockMailSender::new();
        sender.expect_send().returning(|_, _| Err(SendError::Transient("connection refused".into())));
        let report = delivery(outbox, sender).deliver_due().await.unwrap();
        assert_eq!(report, DeliveryReport { sent: 0, failed: 1 });
    }

    #[tokio::test]
    async fn permanent_failure_is_not_retried() {
        let mut outbox = lending(queued(7, 0));
        outbox
            .expect_mark_failed()
            .withf(|_, _, retry_at, _| retry_at.is_none())
            .times(1)
            .returning(|_, _, _, _| Ok(true));
        let mut sender = MockMailSender::new();
        sender.expect_send().returning(|_, _| Err(SendError::Permanent("550 no such user".into())));
        delivery(outbox, sender).deliver_due().await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let mut outbox = lending(queued(7, 24));
        outbox
            .expect_mark_failed()
            .withf(|_, _, retry_at, _| retry_at.is_none())
            .times(1)
            .returning(|_, _, _, _| Ok(true));
        let mut sender = MockMailSender::new();
        sender.expect_send().returning(|_, _| Err(SendError::Transient("timeout".into())));
        delivery(outbox, sender).deliver_due().await.unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = DeliveryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::seconds(4));
        assert_eq!(policy.backoff(3), Duration::seconds(16));
        assert_eq!(policy.backoff(30), Duration::hours(1));
    }
}
