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
    ) -> Self {
        Self { outbox, sender, clock, policy }
    }

    /// One round: sends what is due now. The caller loops and sleeps.
    pub async fn deliver_due(&self) -> Result<DeliveryReport, PortError> {
        let now = self.clock.now();
        let due = self.outbox.claim_due(now, now + self.policy.lease, self.policy.batch).await?;
        let mut report = DeliveryReport::default();
        for queued in due {
            match self.sender.send(&queued.mail).await {
                Ok(()) => {
                    self.outbox.mark_sent(queued.id).await?;
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
                    self.outbox.mark_failed(queued.id, retry_at, &error.to_string()).await?;
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
    use mockall::predicate::eq;
    use time::macros::datetime;

    fn queued(id: i64, attempts: i32) -> QueuedMail {
        let to = Email::parse("ada@example.com").unwrap();
        QueuedMail { id, attempts, mail: OutgoingMail { to, subject: "s".into(), text: "t".into(), html: "h".into() } }
    }

    fn delivery(outbox: MockOutbox, sender: MockMailSender) -> MailDelivery {
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| datetime!(2026-11-21 10:00 UTC));
        MailDelivery::new(Arc::new(outbox), Arc::new(sender), Arc::new(clock), DeliveryPolicy::default())
    }

    #[tokio::test]
    async fn sent_mail_leaves_the_queue() {
        let mut outbox = MockOutbox::new();
        outbox.expect_claim_due().returning(|_, _, _| Ok(vec![queued(7, 0)]));
        outbox.expect_mark_sent().with(eq(7)).times(1).returning(|_| Ok(()));
        let mut sender = MockMailSender::new();
        sender.expect_send().times(1).returning(|_| Ok(()));
        let report = delivery(outbox, sender).deliver_due().await.unwrap();
        assert_eq!(report, DeliveryReport { sent: 1, failed: 0 });
    }

    #[tokio::test]
    async fn transient_failure_is_retried_with_backoff() {
        let mut outbox = MockOutbox::new();
        outbox.expect_claim_due().returning(|_, _, _| Ok(vec![queued(7, 2)]));
        outbox
            .expect_mark_failed()
            .withf(|id, retry_at, _| *id == 7 && *retry_at == Some(datetime!(2026-11-21 10:00:16 UTC)))
            .times(1)
            .returning(|_, _, _| Ok(()));
        let mut sender = MockMailSender::new();
        sender.expect_send().returning(|_| Err(SendError::Transient("connection refused".into())));
        let report = delivery(outbox, sender).deliver_due().await.unwrap();
        assert_eq!(report, DeliveryReport { sent: 0, failed: 1 });
    }

    #[tokio::test]
    async fn permanent_failure_is_not_retried() {
        let mut outbox = MockOutbox::new();
        outbox.expect_claim_due().returning(|_, _, _| Ok(vec![queued(7, 0)]));
        outbox.expect_mark_failed().withf(|_, retry_at, _| retry_at.is_none()).times(1).returning(|_, _, _| Ok(()));
        let mut sender = MockMailSender::new();
        sender.expect_send().returning(|_| Err(SendError::Permanent("550 no such user".into())));
        delivery(outbox, sender).deliver_due().await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let mut outbox = MockOutbox::new();
        outbox.expect_claim_due().returning(|_, _, _| Ok(vec![queued(7, 24)]));
        outbox.expect_mark_failed().withf(|_, retry_at, _| retry_at.is_none()).times(1).returning(|_, _, _| Ok(()));
        let mut sender = MockMailSender::new();
        sender.expect_send().returning(|_| Err(SendError::Transient("timeout".into())));
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
