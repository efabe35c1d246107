//! Every branch of the admin use cases, against mocked ports.

use super::*;
use crate::ports::{
    MockAccountStore, MockAdminStore, MockAdminWrites, MockAuditLog, MockClock, MockPasswordHasher, MockRandom,
    MockSessionStore,
};

fn service(store: MockAdminStore, accounts: MockAccountStore) -> AdminService {
    service_with(store, accounts, MockAdminWrites::new(), MockSessionStore::new())
}

fn service_with(
    store: MockAdminStore,
    accounts: MockAccountStore,
    writes: MockAdminWrites,
    sessions: MockSessionStore,
) -> AdminService {
    let mut clock = MockClock::new();
    clock.expect_now().returning(|| time::macros::datetime!(2026-11-21 10:00 UTC));
    let mut random = MockRandom::new();
    random.expect_token().returning(|| crate::OpaqueToken::new("invite-token".into()));
    let mut audit = MockAuditLog::new();
    audit.expect_record().returning(|_, _| Ok(()));
    let ports = AdminPorts {
        store: Arc::new(store),
        writes: Arc::new(writes),
        accounts: Arc::new(accounts),
        sessions: Arc::new(sessions),
        audit: Arc::new(audit),
        hasher: Arc::new(MockPasswordHasher::new()),
        random: Arc::new(random),
        clock: Arc::new(clock),
        mfa: Arc::new(crate::mfa::MockMfaStore::new()),
    };
    AdminService::new(ports, Links::new("https://app.example.com"), Duration::hours(24))
}
use crate::session::SessionId;

fn caller() -> Principal {
    Principal { user_id: UserId::new(7), session_id: SessionId::new(uuid::Uuid::from_u128(1)) }
}

fn grants(is_superuser: bool, permissions: &[Permission]) -> Grants {
    Grants { is_active: true, is_superuser, permissions: permissions.iter().copied().collect() }
}

#[test]
fn superusers_hold_everything_and_staff_nothing() {
    assert!(grants(true, &[]).allows(Permission::AuditView));
    assert!(!grants(false, &[]).allows(Permission::UsersView));
    assert!(grants(false, &[Permission::UsersView]).allows(Permission::UsersView));
    assert!(!grants(false, &[Permission::UsersView]).allows(Permission::UsersChange));
    let disabled = Grants { is_active: false, ..grants(true, &[]) };
    assert!(!disabled.allows(Permission::UsersView));
}

#[test]
fn permissions_round_trip_their_code_names() {
    for permission in Permission::ALL {
        assert_eq!(Permission::parse(permission.as_str()), Some(permission));
    }
    assert_eq!(Permission::parse("users.fly"), None);
}

#[test]
fn the_query_follows_the_list_rules() {
    let query = UserQuery::parse(RawUserQuery {
        search: Some(" ada "),
        is_active: Some("true"),
        ordering: Some("-last_login"),
        page: Some("3"),
        page_size: Some("500"),
        ..RawUserQuery::default()
    })
    .unwrap();
    assert_eq!(query.search.as_deref(), Some("ada"));
    assert_eq!(query.is_active, Some(true));
    assert_eq!(query.ordering, UserOrdering { field: UserOrderField::LastLogin, descending: true });
    assert_eq!((query.page, query.page_size), (3, 100));
    assert_eq!(query.offset(), 200);
    let errors = UserQuery::parse(RawUserQuery {
        is_staff: Some("yes"),
        ordering: Some("password"),
        page: Some("0"),
        page_size: Some("x"),
        ..RawUserQuery::default()
    })
    .unwrap_err();
    for field in ["is_staff", "ordering", "page", "page_size"] {
        assert!(errors.contains(field), "{field}");
    }
    assert_eq!(UserQuery::parse(RawUserQuery::default()).unwrap(), UserQuery::default());
    let errors = UserQuery::parse(RawUserQuery { search: Some("a\u{0}b"), ..RawUserQuery::default() }).unwrap_err();
    assert!(errors.contains("search"));
}

#[tokio::test]
async fn every_call_checks_the_permission_from_current_data() {
    let mut store = MockAdminStore::new();
    let mut calls = 0;
    store.expect_grants_of().times(2).returning(move |_| {
        calls += 1;
        Ok(Some(if calls == 1 { grants(false, &[Permission::UsersView]) } else { grants(false, &[]) }))
    });
    store.expect_list_users().times(1).returning(|_| Ok(UserPage { count: 0, results: vec![] }));
    let service = service(store, MockAccountStore::new());
    assert!(service.list_users(caller(), RawUserQuery::default()).await.is_ok());
    let revoked = service.list_users(caller(), RawUserQuery::default()).await;
    assert!(matches!(revoked, Err(AdminError::PermissionDenied)));
}

#[tokio::test]
async fn a_missing_user_or_group_is_not_found() {
    let mut store = MockAdminStore::new();
    store.expect_grants_of().returning(|_| Ok(Some(grants(true, &[]))));
    store.expect_get_group().returning(|_| Ok(None));
    let mut accounts = MockAccountStore::new();
    accounts.expect_get_user().returning(|_| Ok(None));
    let service = service(store, accounts);
    assert!(matches!(service.get_user(caller(), "99").await, Err(AdminError::NotFound)));
    assert!(matches!(service.get_user(caller(), "abc").await, Err(AdminError::NotFound)));
    assert!(matches!(service.get_group(caller(), "99").await, Err(AdminError::NotFound)));
}

fn target() -> User {
    User {
        id: UserId::new(2),
        email: Email::parse("ada@example.com").unwrap(),
        first_name: String::new(),
        last_name: String::new(),
        is_active: true,
        is_staff: false,
        is_superuser: false,
        is_verified: true,
        mfa_enabled: false,
        date_joined: time::macros::datetime!(2026-11-21 10:00 UTC),
        last_login: None,
        groups: vec![REGULAR_USER_GROUP.into()],
        profile: crate::Profile::default(),
    }
}

fn admin_service(caller_grants: Grants, writes: MockAdminWrites) -> AdminService {
    let mut store = MockAdminStore::new();
    store.expect_grants_of().returning(move |_| Ok(Some(caller_grants.clone())));
    let mut accounts = MockAccountStore::new();
    accounts.expect_get_user().returning(|_| Ok(Some(target())));
    service_with(store, accounts, writes, MockSessionStore::new())
}

fn auditors_group() -> Group {
    Group { id: 3, name: "Auditors".into(), permissions: vec![Permission::UsersView, Permission::AuditView] }
}

#[tokio::test]
async fn nobody_grants_a_permission_they_do_not_hold() {
    let mut writes = MockAdminWrites::new();
    writes.expect_groups_named().returning(|_| Ok(vec![auditors_group()]));
    writes.expect_admin_update_user().never();
    let service = admin_service(grants(false, &[Permission::UsersChange, Permission::UsersView]), writes);
    let changes = AdminUserChanges { groups: Some(vec!["Auditors".into()]), ..AdminUserChanges::default() };
    assert!(matches!(
        service.update_user(caller(), "2", changes, &ClientInfo::default()).await,
        Err(AdminError::PermissionDenied)
    ));
}

#[tokio::test]
async fn a_group_within_the_callers_permissions_may_be_granted() {
    let mut writes = MockAdminWrites::new();
    writes.expect_groups_named().returning(|_| Ok(vec![auditors_group()]));
    writes.expect_admin_update_user().times(1).returning(|_, _, _| Ok(AdminWrite::Done(Some(Box::new(target())))));
    let held = [Permission::UsersChange, Permission::UsersView, Permission::AuditView];
    let service = admin_service(grants(false, &held), writes);
    let changes = AdminUserChanges { groups: Some(vec!["Auditors".into()]), ..AdminUserChanges::default() };
    assert!(service.update_user(caller(), "2", changes, &ClientInfo::default()).await.is_ok());
}

#[tokio::test]
async fn unknown_groups_are_refused_by_name() {
    let mut writes = MockAdminWrites::new();
    writes.expect_groups_named().returning(|_| Ok(vec![]));
    let service = admin_service(grants(true, &[]), writes);
    let changes = AdminUserChanges { groups: Some(vec!["Wizards".into()]), ..AdminUserChanges::default() };
    let Err(AdminError::Invalid(errors)) = service.update_user(caller(), "2", changes, &ClientInfo::default()).await
    else {
        panic!("expected a validation error");
    };
    assert!(errors.contains("groups"));
}

#[tokio::test]
async fn a_group_name_with_a_control_character_is_refused_without_a_lookup() {
    let mut writes = MockAdminWrites::new();
    writes.expect_groups_named().never();
    writes.expect_admin_update_user().never();
    let service = admin_service(grants(true, &[]), writes);
    let changes = AdminUserChanges { groups: Some(vec!["Wiz\u{0}ards".into()]), ..AdminUserChanges::default() };
    let Err(AdminError::Invalid(errors)) = service.update_user(caller(), "2", changes, &ClientInfo::default()).await
    else {
        panic!("expected a validation error");
    };
    assert!(errors.contains("groups"));
}

#[tokio::test]
async fn only_a_superuser_makes_a_superuser() {
    let mut writes = MockAdminWrites::new();
    writes.expect_admin_update_user().never();
    let service = admin_service(grants(false, &Permission::ALL), writes);
    let changes = AdminUserChanges { is_superuser: Some(true), ..AdminUserChanges::default() };
    assert!(matches!(
        service.update_user(caller(), "2", changes, &ClientInfo::default()).await,
        Err(AdminError::PermissionDenied)
    ));
}

#[tokio::test]
async fn the_last_superuser_is_reported_as_a_validation_error() {
    let mut writes = MockAdminWrites::new();
    writes.expect_admin_delete_user().returning(|_| Ok(AdminWrite::LastSuperuser));
    let service = admin_service(grants(true, &[]), writes);
    assert!(matches!(service.delete_user(caller(), "2", &ClientInfo::default()).await, Err(AdminError::Invalid(_))));
}

#[tokio::test]
async fn a_user_created_without_a_password_is_invited() {
    let mut writes = MockAdminWrites::new();
    writes.expect_groups_named().never();
    writes
        .expect_admin_create_user()
        .withf(|user, invitation| {
            user.password_hash.is_none()
                && user.groups == [REGULAR_USER_GROUP]
                && invitation.as_ref().is_some_and(|(token, mail)| {
                    token.purpose == TokenPurpose::ResetPassword
                        && token.expires_at - token.created_at == Duration::hours(24)
                        && mail.text.contains("reset-password?token=invite-token")
                })
        })
        .times(1)
        .returning(|_, _| Ok(AdminWrite::Done(Some(Box::new(target())))));
    let service = admin_service(grants(false, &[Permission::UsersAdd]), writes);
    let request = AdminCreateRequest {
        email: Email::parse("ada@example.com").unwrap(),
        password: None,
        first_name: String::new(),
        last_name: String::new(),
        is_active: true,
        is_staff: false,
        is_verified: false,
        groups: vec![],
    };
    assert!(service.create_user(caller(), request, &ClientInfo::default()).await.is_ok());
}
