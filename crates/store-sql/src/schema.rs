//! The tables of `migrations/postgres` and `migrations/sqlite`, one schema for both
//! (the two column types that differ are in [`crate::sql_types`]).

diesel::table! {
    users (id) {
        id -> BigInt,
        email -> Text,
        email_key -> Text,
        password_hash -> Nullable<Text>,
        first_name -> Text,
        last_name -> Text,
        is_active -> Bool,
        is_staff -> Bool,
        is_superuser -> Bool,
        is_verified -> Bool,
        mfa_enabled -> Bool,
        date_joined -> crate::sql_types::UtcTimestamp,
        last_login -> Nullable<crate::sql_types::UtcTimestamp>,
    }
}

diesel::table! {
    profiles (user_id) {
        user_id -> BigInt,
        phone -> Nullable<Text>,
        gender -> Nullable<Text>,
        bio -> Text,
    }
}

diesel::table! {
    groups (id) {
        id -> BigInt,
        name -> Text,
    }
}

diesel::table! {
    group_permissions (group_id, permission) {
        group_id -> BigInt,
        permission -> Text,
    }
}

diesel::table! {
    user_groups (user_id, group_id) {
        user_id -> BigInt,
        group_id -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> crate::sql_types::UuidKey,
        user_id -> BigInt,
        created_at -> crate::sql_types::UtcTimestamp,
        last_used_at -> crate::sql_types::UtcTimestamp,
        expires_at -> crate::sql_types::UtcTimestamp,
        revoked_at -> Nullable<crate::sql_types::UtcTimestamp>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Text>,
        amr -> Text,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> crate::sql_types::UuidKey,
        issued_at -> crate::sql_types::UtcTimestamp,
        expires_at -> crate::sql_types::UtcTimestamp,
        used_at -> Nullable<crate::sql_types::UtcTimestamp>,
    }
}

diesel::table! {
    one_time_tokens (token_hash) {
        token_hash -> Text,
        user_id -> BigInt,
        purpose -> Text,
        new_email -> Nullable<Text>,
        created_at -> crate::sql_types::UtcTimestamp,
        expires_at -> crate::sql_types::UtcTimestamp,
        used_at -> Nullable<crate::sql_types::UtcTimestamp>,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        recipient -> Text,
        subject -> Text,
        text_body -> Text,
        html_body -> Text,
        created_at -> crate::sql_types::UtcTimestamp,
        attempts -> Integer,
        next_attempt_at -> Nullable<crate::sql_types::UtcTimestamp>,
        last_error -> Nullable<Text>,
        leased_by -> Nullable<Text>,
    }
}

diesel::table! {
    throttle_windows (scope, subject) {
        scope -> Text,
        subject -> Text,
        opened_at -> crate::sql_types::UtcTimestamp,
        hits -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> crate::sql_types::UtcTimestamp,
        event -> Text,
        user_id -> Nullable<BigInt>,
        actor_id -> Nullable<BigInt>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        detail -> Text,
    }
}

diesel::table! {
    django_imports (user_id) {
        user_id -> BigInt,
        password_hash -> Nullable<Text>,
        imported_at -> crate::sql_types::UtcTimestamp,
    }
}

diesel::table! {
    totp_factors (user_id) {
        user_id -> BigInt,
        secret -> Text,
        confirmed_at -> Nullable<crate::sql_types::UtcTimestamp>,
        last_step -> Nullable<BigInt>,
    }
}

diesel::table! {
    recovery_codes (user_id, code_hash) {
        user_id -> BigInt,
        code_hash -> Text,
        used_at -> Nullable<crate::sql_types::UtcTimestamp>,
    }
}

diesel::table! {
    mfa_challenges (token_hash) {
        token_hash -> Text,
        user_id -> BigInt,
        expires_at -> crate::sql_types::UtcTimestamp,
        failures -> BigInt,
    }
}

diesel::joinable!(profiles -> users (user_id));
diesel::joinable!(django_imports -> users (user_id));
diesel::joinable!(user_groups -> users (user_id));
diesel::joinable!(user_groups -> groups (group_id));
diesel::joinable!(group_permissions -> groups (group_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(one_time_tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    profiles,
    groups,
    group_permissions,
    user_groups,
    sessions,
    refresh_tokens,
    one_time_tokens,
    outbox,
    throttle_windows,
    audit_events,
    django_imports,
    totp_factors,
    recovery_codes,
    mfa_challenges,
);
