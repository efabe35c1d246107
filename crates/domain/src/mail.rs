//! The mails Gatehouse sends, composed here so every adapter sends the same words.

use crate::email::Email;
use crate::session::OpaqueToken;

/// A message ready for the outbox: one recipient, a plain-text and an HTML part.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub to: Email,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Bodies carry one-time links, so they stay out of logs.
impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMail").field("to", &self.to).field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Where the links in mails point: always the configured frontend, never a
/// host taken from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// The frontend's base URL, without a trailing slash.
    pub frontend_url: String,
    pub verify_email_path: String,
    pub reset_password_path: String,
    pub login_path: String,
}

impl Links {
    pub fn new(frontend_url: &str) -> Self {
        Self {
            frontend_url: frontend_url.trim_end_matches('/').to_owned(),
            verify_email_path: "/verify-email".into(),
            reset_password_path: "/reset-password".into(),
            login_path: "/login".into(),
        }
    }

    fn page(&self, path: &str) -> String {
        format!("{}/{}", self.frontend_url, path.trim_start_matches('/'))
    }

    /// Tokens are base64url, so they need no escaping in a query string.
    fn with_token(&self, path: &str, token: &OpaqueToken) -> String {
        format!("{}?token={}", self.page(path), token.expose())
    }

    pub fn verify_email(&self, token: &OpaqueToken) -> String {
        self.with_token(&self.verify_email_path, token)
    }

    pub fn reset_password(&self, token: &OpaqueToken) -> String {
        self.with_token(&self.reset_password_path, token)
    }

    pub fn login(&self) -> String {
        self.page(&self.login_path)
    }
}

/// Escapes text for an HTML body. Links built here are safe already; this
/// guards against a frontend URL with odd characters.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn compose(to: &Email, subject: &str, lines: &[&str], link: Option<(&str, &str)>) -> OutgoingMail {
    let mut text = lines.join("\n\n");
    let mut html = String::from("<!doctype html>\n<html><body>\n");
    for line in lines {
        html.push_str(&format!("<p>{}</p>\n", html_escape(line)));
    }
    if let Some((label, url)) = link {
        text.push_str(&format!("\n\n{label}:\n{url}"));
        let url = html_escape(url);
        html.push_str(&format!("<p><a href=\"{url}\">{}</a></p>\n", html_escape(label)));
    }
    text.push_str("\n\n— Gatehouse\n");
    html.push_str("<p>— Gatehouse</p>\n</body></html>\n");
    OutgoingMail { to: to.clone(), subject: subject.to_owned(), text, html }
}

pub fn verification(to: &Email, links: &Links, token: &OpaqueToken) -> OutgoingMail {
    compose(
        to,
        "Confirm your email address",
        &[
            "Welcome! Please confirm that this is your email address.",
            "The link is valid for 24 hours. If you did not sign up, ignore this message.",
        ],
        Some(("Confirm your address", &links.verify_email(token))),
    )
}

/// Sent instead of a second account when someone signs up with a known address,
/// so signup never reveals which addresses are registered.
pub fn already_registered(to: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "Someone tried to sign up with your address",
        &[
            "Someone, maybe you, tried to create an account with this address, which already has one.",
            "If it was you, log in, or reset your password from the login page. Otherwise you can ignore this message.",
        ],
        Some(("Log in", &links.login())),
    )
}

pub fn mfa_enabled(to: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "Two-factor authentication is on",
        &[
            "Logging in to your account now asks for a code from your authenticator app after the password.",
            "Keep your recovery codes somewhere safe. If this was not you, reset your password at once.",
        ],
        Some(("Log in", &links.login())),
    )
}

pub fn mfa_disabled(to: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "Two-factor authentication is off",
        &[
            "Logging in to your account no longer asks for a code after the password.",
            "If this was not you, reset your password at once and turn two-factor authentication on again.",
        ],
        Some(("Log in", &links.login())),
    )
}

pub fn password_changed(to: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "Your password was changed",
        &[
            "The password of your account was just changed, and your other sessions were logged out.",
            "If this was not you, reset your password at once from the login page.",
        ],
        Some(("Log in", &links.login())),
    )
}

pub fn password_reset(to: &Email, links: &Links, token: &OpaqueToken, minutes: i64) -> OutgoingMail {
    compose(
        to,
        "Reset your password",
        &[
            "Someone, hopefully you, asked to reset the password of your account.",
            &format!("The link is valid for {minutes} minutes and works once. If you did not ask, ignore this message: your password stays as it is."),
        ],
        Some(("Choose a new password", &links.reset_password(token))),
    )
}

/// To an account an administrator created without a password.
pub fn invitation(to: &Email, links: &Links, token: &OpaqueToken) -> OutgoingMail {
    compose(
        to,
        "You are invited: choose your password",
        &[
            "An administrator created an account for you with this address.",
            "Choose your password with the link below; it is valid for 24 hours and works once.",
        ],
        Some(("Choose your password", &links.reset_password(token))),
    )
}

pub fn password_was_reset(to: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "Your password was reset",
        &[
            "The password of your account was just reset through a mailed link, and every session was logged out.",
            "If this was not you, reset it again at once and check the security of your mailbox.",
        ],
        Some(("Log in", &links.login())),
    )
}

/// To the new address: the link that makes the change.
pub fn confirm_new_address(to: &Email, links: &Links, token: &OpaqueToken) -> OutgoingMail {
    compose(
        to,
        "Confirm your new email address",
        &[
            "Someone, hopefully you, asked to move their account to this address.",
            "The address changes only when this link is used. If you did not ask, ignore this message.",
        ],
        Some(("Confirm this address", &links.verify_email(token))),
    )
}

/// To the old address, at once: a change was asked for.
pub fn address_change_requested(to: &Email, new_address: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "A change of your email address was requested",
        &[
            &format!("Someone with your password asked to move your account to {new_address}. It changes once that mailbox confirms."),
            "If this was not you, change your password at once.",
        ],
        Some(("Log in", &links.login())),
    )
}

/// To a new address that another account already holds, so the requester learns nothing.
pub fn address_in_use(to: &Email, links: &Links) -> OutgoingMail {
    compose(
        to,
        "Someone tried to use your address",
        &[
            "Someone tried to move another account to this address, which already has an account. Nothing was changed.",
            "If this was you, log in to the account that has this address instead.",
        ],
        Some(("Log in", &links.login())),
    )
}

pub fn goodbye(to: &Email) -> OutgoingMail {
    compose(
        to,
        "Your account was deleted",
        &["Your account and everything it held were deleted, as you asked. Thank you for having been with us."],
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_mail_links_to_the_frontend_in_both_parts() {
        let to = Email::parse("ada@example.com").unwrap();
        let links = Links::new("https://app.example.com/");
        let mail = verification(&to, &links, &OpaqueToken::new("tok_123".into()));
        let link = "https://app.example.com/verify-email?token=tok_123";
        assert!(mail.text.contains(link));
        assert!(mail.html.contains(&format!("href=\"{link}\"")));
        assert_eq!(mail.to, to);
    }

    #[test]
    fn debug_hides_the_body() {
        let to = Email::parse("ada@example.com").unwrap();
        let mail = verification(&to, &Links::new("http://x"), &OpaqueToken::new("tok_123".into()));
        assert!(!format!("{mail:?}").contains("tok_123"));
    }
}
