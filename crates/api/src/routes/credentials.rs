//! Changing the password.

use actix_web::{web, HttpResponse};
use gatehouse_domain::error::NON_FIELD_ERRORS;
use gatehouse_domain::{FieldErrors, PlainPassword};
use serde_json::json;

use crate::body::Fields;
use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::state::AppState;

/// `new_password` and the optional `new_password2`, which must match when sent.
fn new_password(fields: &mut Fields) -> String {
    let new_password = fields.required_str("new_password");
    let confirmation = fields.optional_str("new_password2");
    if confirmation.is_some_and(|c| c != new_password) {
        fields.error(NON_FIELD_ERRORS, "Passwords do not match.");
    }
    new_password
}

pub async fn change_password(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: crate::body::JsonBody,
) -> Result<HttpResponse, ApiError> {
    let mut fields = body.fields();
    let old_password = fields.required_str("old_password");
    let new_password = new_password(&mut fields);
    fields.finish()?;
    let old_password =
        PlainPassword::parse(&old_password).map_err(|rule| FieldErrors::single("old_password", rule.to_string()))?;
    state.auth.change_password(caller.0, &old_password, &new_password).await?;
    Ok(HttpResponse::Ok().json(json!({ "detail": "Your password was changed; your other sessions were logged out." })))
}
