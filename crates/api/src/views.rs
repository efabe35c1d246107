//! The JSON shapes of responses.

use gatehouse_domain::auth::{LoginOutcome, TokenPair};
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
            groups: user.groups,
            date_joined: timestamp(user.date_joined),
            last_login: user.last_login.map(timestamp),
            profile: ProfileView { phone: user.profile.phone, gender: user.profile.gender, bio: user.profile.bio },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokensView {
    pub access: String,
    pub refresh: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

impl From<TokenPair> for TokensView {
    fn from(pair: TokenPair) -> Self {
        Self {
            access: pair.access.expose().to_owned(),
            refresh: pair.refresh.expose().to_owned(),
            token_type: "Bearer",
            expires_in: pair.expires_in,
        }
    }
}

/// Token fields and the user, as login answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginView {
    #[serde(flatten)]
    pub tokens: TokensView,
    pub user: UserView,
}

impl From<LoginOutcome> for LoginView {
    fn from(outcome: LoginOutcome) -> Self {
        Self { tokens: outcome.tokens.into(), user: outcome.user.into() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignupView {
    pub email: String,
    pub is_verified: bool,
    #[serde(flatten)]
    #[schema(schema_with = login_fields_when_present)]
    pub login: Option<LoginView>,
}

/// The document's shape of a signup's optional login: the token fields and
/// `user`, all present or all absent (absent while verification is required).
fn login_fields_when_present() -> utoipa::openapi::Object {
    use utoipa::openapi::{schema::Schema, Ref, RefOr};
    use utoipa::PartialSchema;
    let mut fields = match TokensView::schema() {
        RefOr::T(Schema::Object(tokens)) => tokens,
        _ => utoipa::openapi::Object::new(),
    };
    fields.required.clear();
    fields.properties.insert("user".to_owned(), RefOr::Ref(Ref::from_schema_name("UserView")));
    fields.description = Some("Present when the account may log in at once (verification not required).".to_owned());
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
