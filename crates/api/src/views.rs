//! The JSON shapes of responses.

use gatehouse_domain::auth::TokenPair;
use gatehouse_domain::User;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// RFC 3339 in UTC.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub is_verified: bool,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    /// Login asks for a TOTP code after the password.
    pub mfa_enabled: bool,
    pub groups: Vec<String>,
    pub date_joined: String,
    pub last_login: Option<String>,
    pub profile: ProfileView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    pub phone: Option<String>,
    pub gender: Option<String>,
    pub bio: String,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.get(),
            email: user.email.into_inner(),
            first_name: user.first_name,
            last_name: user.last_name,
            is_verified: user.is_verified,
            is_active: user.is_active,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            mfa_enabled: user.mfa_enabled,
            groups: user.groups,
            date_joined: timestamp(user.date_joined),
            last_login: user.last_login.map(timestamp),
            profile: ProfileView { phone: user.profile.phone, gender: user.profile.gender, bio: user.profile.bio },
        }
    }
}

/// A token pair as the request asked for it (`transport`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TokensView {
    Bearer(BearerTokensView),
    Cookie(CookieTokensView),
}

/// `"transport": "body"`: the tokens themselves.
#[derive(Debug, Serialize, ToSchema)]
pub struct BearerTokensView {
    pub access: String,
    pub refresh: String,
    #[schema(pattern = "^Bearer$")]
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

/// `"transport": "cookie"`: the tokens are in httpOnly cookies; the page
/// keeps only the CSRF token, to send back as `X-CSRF-Token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CookieTokensView {
    #[schema(pattern = "^Cookie$")]
    pub token_type: &'static str,
    /// Seconds the access cookie lives.
    pub expires_in: u64,
    pub csrf_token: String,
}

impl TokensView {
    pub fn bearer(pair: &TokenPair) -> Self {
        Self::Bearer(BearerTokensView {
            access: pair.access.expose().to_owned(),
            refresh: pair.refresh.expose().to_owned(),
            token_type: "Bearer",
            expires_in: pair.expires_in,
        })
    }

    pub fn cookie(pair: &TokenPair, csrf_token: String) -> Self {
        Self::Cookie(CookieTokensView { token_type: "Cookie", expires_in: pair.expires_in, csrf_token })
    }
}

/// Token fields and the user, as login answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginView {
    #[serde(flatten)]
    pub tokens: TokensView,
    pub user: UserView,
}

/// A login of an account with two-factor authentication, after the password.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequiredView {
    /// Always true.
    pub mfa_required: bool,
    /// Finishes the login at `POST /api/v1/auth/login/mfa`, with a code.
    pub mfa_token: String,
    /// Seconds the `mfa_token` lives (300).
    pub expires_in: u64,
}

/// What a login answers: a session, or a request for the second factor.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswerView {
    Session(Box<LoginView>),
    MfaRequired(MfaRequiredView),
}

/// Recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodesView {
    /// Ten single-use codes, each good for one login instead of a TOTP code.
    pub recovery_codes: Vec<String>,
}

/// A pending TOTP setup, for the user's authenticator app.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetupView {
    /// The secret in base32, to type in.
    pub secret: String,
    /// `otpauth://totp/…`, to show as a QR code.
    pub otpauth_uri: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignupView {
    pub email: String,
    pub is_verified: bool,
    #[serde(flatten)]
    #[schema(schema_with = login_fields_when_present)]
    pub login: Option<LoginView>,
}

/// The document's shape of a signup's optional login: the token fields of
/// either transport and `user`, present or absent together (absent while
/// verification is required).
fn login_fields_when_present() -> utoipa::openapi::Object {
    use utoipa::openapi::{schema::Schema, Ref, RefOr};
    use utoipa::PartialSchema;
    let mut fields = utoipa::openapi::Object::new();
    for transport in [BearerTokensView::schema(), CookieTokensView::schema()] {
        if let RefOr::T(Schema::Object(tokens)) = transport {
            fields.properties.extend(tokens.properties);
        }
    }
    fields.properties.insert("user".to_owned(), RefOr::Ref(Ref::from_schema_name("UserView")));
    fields.description = Some(
        "Present when the account may log in at once (verification not required): the token fields of the \
         requested transport and `user`."
            .to_owned(),
    );
    fields
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedView {
    pub user: UserView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_used_at: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub current: bool,
}

impl SessionView {
    pub fn new(session: gatehouse_domain::session::SessionInfo, current: bool) -> Self {
        Self {
            id: session.id.to_string(),
            created_at: timestamp(session.created_at),
            last_used_at: timestamp(session.last_used_at),
            user_agent: session.user_agent,
            ip: session.ip,
            current,
        }
    }
}
