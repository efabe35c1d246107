//! `gatehouse import-django` on real Django 5.2 databases (`../shared/fixtures/django`):
//! each fixture read from SQLite and from its PostgreSQL dump, imported into
//! both stores, then every importable user logs in over HTTP with the
//! password they had in Django.

use std::path::PathBuf;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::helpers::{assert_error, database_url, run_cli, spawn_app, Backend, PASSWORD};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/django").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
}

/// A scratch PostgreSQL database holding the fixture's dump, loaded by psql as its README says.
async fn postgres_copy(name: &str) -> String {
    let url = database_url(Backend::Postgres).await;
    let dump = fixture(name).join("postgres.sql");
    let loaded = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-f"])
        .arg(&dump)
        .output()
        .expect("psql runs");
    assert!(loaded.status.success(), "psql -f {}: {}", dump.display(), String::from_utf8_lossy(&loaded.stderr));
    url
}

fn sqlite_copy(name: &str) -> String {
    format!("sqlite://{}", fixture(name).join("db.sqlite3").display())
}

/// Every row `sql` selects from a store, each value as text.
pub async fn rows(database_url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let connection = rusqlite::Connection::open(path).unwrap();
        let mut statement = connection.prepare(sql).unwrap();
        let width = statement.column_count();
        let mut found = Vec::new();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            found.push(
                (0..width)
                    .map(|i| match row.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                        rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8(t.to_vec()).unwrap()),
                        other => panic!("unexpected value {other:?}"),
                    })
                    .collect(),
            );
        }
        return found;
    }
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Everything an import writes, as text.
async fn snapshot(database_url: &str) -> Vec<Vec<Option<String>>> {
    let mut all = rows(
        database_url,
        "SELECT u.id, u.email, u.password_hash, u.first_name, u.last_name, u.is_active, u.is_staff, \
         u.is_superuser, u.is_verified, u.date_joined, p.phone, p.gender, p.bio \
         FROM users u JOIN profiles p ON p.user_id = u.id ORDER BY u.id",
    )
    .await;
    all.extend(
        rows(
            database_url,
            "SELECT ug.user_id, g.name FROM user_groups ug JOIN groups g ON g.id = ug.group_id ORDER BY 1, 2",
        )
        .await,
    );
    all.extend(rows(database_url, "SELECT name FROM groups ORDER BY name").await);
    all
}

fn time_of(value: &Value) -> Option<OffsetDateTime> {
    value.as_str().map(|text| OffsetDateTime::parse(text, &Rfc3339).unwrap())
}

fn import(database_url: &str, source: &str) -> String {
    let output = run_cli(database_url, &["import-django", "--from", source], "");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "import failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

async fn imports_and_logs_in(name: &str, source: String, backend: Backend) {
    let expected = expected(name);
    let users = expected["users"].as_array().unwrap();
    let app = spawn_app(backend).await;
    let report = import(&app.database_url, &source);
    let importable = expected["counts"]["importable"].as_u64().unwrap();
    assert!(report.contains(&format!("users imported: {importable} ({importable} added, 0 updated")), "{report}");

    for user in users {
        let id = user["id"].as_i64().unwrap();
        let email = user["email"].as_str().unwrap();
        let password = user["password"].as_str().unwrap_or("no password works");
        if user["skip"].as_bool().unwrap() {
            let reason = user["skip_reason"].as_str().unwrap();
            assert!(
                report.contains(&format!("id {id} ")) && report.contains(reason),
                "{id} skipped for {reason}: {report}"
            );
            if !matches!(reason, "empty_email" | "invalid_email") {
                assert_error(app.login(email, password).await, 401, "invalid_credentials").await;
            }
            continue;
        }
        let import = &user["import"];
        let login = app.login(email, password).await;
        match import["login"].as_str().unwrap() {
            "inactive" => {
                assert_error(login, 403, "account_disabled").await;
                continue;
            }
            "unusable_password" => {
                assert_error(login, 401, "invalid_credentials").await;
                continue;
            }
            "ok" => assert_eq!(login.status(), 200, "{name}: {email} logs in with their Django password"),
            other => panic!("unknown login outcome {other}"),
        }
        let body: Value = login.json().await.unwrap();
        let got = &body["user"];
        assert_eq!(got["id"].as_i64(), Some(id), "{email} keeps their id");
        for field in ["first_name", "last_name", "is_active", "is_staff", "is_superuser", "is_verified", "groups"] {
            assert_eq!(got[field], import[field], "{name}: {email}'s {field}");
        }
        assert_eq!(time_of(&got["date_joined"]), time_of(&import["date_joined"]), "{email}'s date joined");
        let profile = if import["profile"].is_null() {
            serde_json::json!({ "phone": null, "gender": null, "bio": "" })
        } else {
            import["profile"].clone()
        };
        assert_eq!(got["profile"], profile, "{name}: {email}'s profile");
    }

    // Hashes that logged in became argon2id; the others stay as Django wrote them.
    for user in users.iter().filter(|u| !u["skip"].as_bool().unwrap()) {
        let id = user["id"].as_i64().unwrap();
        let stored = rows(&app.database_url, &format!("SELECT password_hash FROM users WHERE id = {id}")).await;
        let stored = stored[0][0].clone().unwrap_or_default();
        if user["import"]["login"] == "ok" {
            assert!(stored.starts_with("$argon2id$v=19$"), "{id}'s hash was upgraded: {stored}");
        } else {
            assert_eq!(stored, user["password_hash"].as_str().unwrap(), "{id}'s hash is kept");
        }
    }

    // A second run changes nothing, and keeps the passwords upgraded since.
    let before = snapshot(&app.database_url).await;
    let ids: Vec<i64> =
        before.iter().take(importable as usize).map(|r| r[0].as_ref().unwrap().parse().unwrap()).collect();
    let wanted: Vec<i64> =
        users.iter().filter(|u| !u["skip"].as_bool().unwrap()).map(|u| u["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, wanted, "exactly the importable users are there");
    let again = import(&app.database_url, &source);
    assert!(again.contains(&format!("(0 added, {importable} updated")), "{again}");
    assert_eq!(snapshot(&app.database_url).await, before, "a second import changes nothing");

    // New accounts come after the imported ids.
    assert_eq!(app.signup("newcomer@example.com").await.status(), 201);
    let newcomer = rows(&app.database_url, "SELECT id FROM users WHERE email = 'newcomer@example.com'").await;
    let newcomer: i64 = newcomer[0][0].as_ref().unwrap().parse().unwrap();
    assert!(newcomer > expected["counts"]["max_user_id"].as_i64().unwrap(), "a signup gets id {newcomer}");
    let made = run_cli(
        &app.database_url,
        &["create-superuser", "--email", "new.admin@example.com", "--password-stdin"],
        PASSWORD,
    );
    let printed = String::from_utf8_lossy(&made.stdout);
    let new_id: i64 = printed.split("(id ").nth(1).and_then(|rest| rest.split(')').next()).unwrap().parse().unwrap();
    assert!(new_id > expected["counts"]["max_user_id"].as_i64().unwrap(), "{printed}");
}

macro_rules! import_tests {
    ($($test:ident: $fixture:literal from $source:ident into $backend:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let source = import_tests!(@source $source, $fixture);
            imports_and_logs_in($fixture, source, Backend::$backend).await;
        }
    )*};
    (@source sqlite, $fixture:literal) => { sqlite_copy($fixture) };
    (@source postgres, $fixture:literal) => { postgres_copy($fixture).await };
}

import_tests! {
    django_default_from_sqlite_into_sqlite: "django_default" from sqlite into Sqlite;
    django_default_from_postgres_into_postgres: "django_default" from postgres into Postgres;
    seed_accounts_from_sqlite_into_postgres: "seed_accounts" from sqlite into Postgres;
    seed_accounts_from_postgres_into_sqlite: "seed_accounts" from postgres into Sqlite;
    seed_profiles_from_sqlite_into_sqlite: "seed_profiles" from sqlite into Sqlite;
    seed_profiles_from_postgres_into_postgres: "seed_profiles" from postgres into Postgres;
}

/// A scratch SQLite database made by `sql`, as a `sqlite://` URL.
fn sqlite_made_of(sql: &str) -> String {
    let dir = std::env::temp_dir().join("gatehouse-api-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("django-{}.sqlite3", uuid::Uuid::new_v4()));
    rusqlite::Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    format!("sqlite://{}", path.display())
}

const USER_TABLE: &str = "CREATE TABLE app_user (id INTEGER PRIMARY KEY, email TEXT, password TEXT, \
                          last_login TEXT, first_name TEXT, last_name TEXT, is_active BOOL);";

/// The command's exit status and its output, both streams.
fn import_failing(database_url: &str, args: &[&str]) -> String {
    let mut all = vec!["import-django"];
    all.extend(args);
    let output = run_cli(database_url, &all, "");
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "the import should fail: {printed}");
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_that_cannot_be_imported_are_refused_with_a_clear_message() {
    let app = spawn_app(Backend::Sqlite).await;
    let db = &app.database_url;
    let unreachable = import_failing(db, &["--from", "postgres://nobody@127.0.0.1:1/django"]);
    assert!(unreachable.contains("cannot open the Django database"), "{unreachable}");
    let missing = import_failing(db, &["--from", "sqlite:///nonexistent/dir/db.sqlite3"]);
    assert!(missing.contains("cannot open the Django database"), "{missing}");
    let garbage = std::env::temp_dir().join(format!("garbage-{}.sqlite3", uuid::Uuid::new_v4()));
    std::fs::write(&garbage, "this is not a database, only text that goes on long enough to be read").unwrap();
    let not_sqlite = import_failing(db, &["--from", &format!("sqlite://{}", garbage.display())]);
    assert!(not_sqlite.contains("not a database"), "{not_sqlite}");
    let not_django = sqlite_made_of("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL);");
    let printed = import_failing(db, &["--from", &not_django]);
    assert!(printed.contains("no table has the columns email, password and last_login"), "{printed}");
    let printed = import_failing(db, &["--from", &not_django, "--user-table", "orders"]);
    assert!(printed.contains("the user table orders has no email column"), "{printed}");
    let two = sqlite_made_of(&format!("{USER_TABLE} {}", USER_TABLE.replace("app_user", "old_user")));
    let printed = import_failing(db, &["--from", &two]);
    assert!(
        printed.contains("old_user") && printed.contains("app_user") && printed.contains("--user-table"),
        "{printed}"
    );
    let printed = import_failing(db, &["--from", &two, "--user-table", "no_such_table"]);
    assert!(printed.contains("no table no_such_table"), "{printed}");
    let nobody = sqlite_made_of(&format!(
        "{USER_TABLE} INSERT INTO app_user (id, email, password) VALUES (1, '', 'x'), (2, 'no-at-sign', 'y');"
    ));
    let printed = import_failing(db, &["--from", &nobody]);
    assert!(
        printed.contains("empty_email") && printed.contains("invalid_email") && printed.contains("no user of app_user"),
        "{printed}"
    );
    assert!(rows(db, "SELECT id FROM users").await.is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_named_and_skipped_while_the_others_are_imported() {
    let grace = &expected("django_default")["users"][11];
    let good = grace["password_hash"].as_str().unwrap();
    let source = sqlite_made_of(&format!(
        "{USER_TABLE} INSERT INTO app_user (id, email, password, first_name, is_active) VALUES \
         (1, 'fields@example.com', 'pbkdf2_sha256$1000$salt', '', 1), \
         (2, 'base64@example.com', 'pbkdf2_sha256$1000$salt$not*base64', '', 1), \
         (3, 'costly@example.com', 'pbkdf2_sha256$999999999$salt$AAAA', '', 1), \
         (4, 'memory@example.com', 'argon2$argon2id$v=19$m=4194304,t=2,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', '', 1), \
         (5, 'nul@example.com', '!unusable', 'a' || char(0) || 'b', 1), \
         (6, 'long@example.com', '!unusable', '{long}', 1), \
         (7, 'flag@example.com', '!unusable', '', 'maybe'), \
         (8, 'fine@example.com', '{good}', 'Fine', 1);",
        long = "n".repeat(151)
    ));
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app(backend).await;
        let report = import(&app.database_url, &source);
        for (id, reason) in [
            (1, "malformed_password_hash"),
            (2, "malformed_password_hash"),
            (3, "malformed_password_hash"),
            (4, "malformed_password_hash"),
            (5, "invalid_field"),
            (6, "invalid_field"),
            (7, "unreadable_row"),
        ] {
            assert!(
                report.contains(&format!("id {id} "))
                    && report.lines().any(|l| l.contains(&format!("id {id} ")) && l.contains(reason)),
                "{id}: {reason}: {report}"
            );
        }
        assert!(report.contains("users imported: 1 (1 added"), "{report}");
        let ids = rows(&app.database_url, "SELECT id, first_name FROM users").await;
        assert_eq!(ids, [vec![Some("8".to_owned()), Some("Fine".to_owned())]]);
        assert_eq!(app.login("fine@example.com", grace["password"].as_str().unwrap()).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_and_accounts_that_were_not_imported_are_never_taken_over() {
    let app = spawn_app(Backend::Sqlite).await;
    let source = sqlite_copy("django_default");
    let output = run_cli(&app.database_url, &["import-django", "--from", &source, "--dry-run"], "");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.contains("8 added") && report.contains("dry run: nothing was written"),
        "{report}"
    );
    assert!(rows(&app.database_url, "SELECT id FROM users").await.is_empty());

    // A Gatehouse account made before the import has id 1 and user 2's address.
    app.superuser_login("mod.staff@example.net").await;
    let report = import(&app.database_url, &source);
    assert!(report.lines().any(|l| l.contains("id 1 ") && l.contains("id_taken")), "{report}");
    assert!(report.lines().any(|l| l.contains("id 2 ") && l.contains("email_taken")), "{report}");
    assert_eq!(app.login("mod.staff@example.net", PASSWORD).await.status(), 200, "the account keeps its password");
    let expected = expected("django_default");
    let bea = &expected["users"][3];
    assert_eq!(app.login(bea["email"].as_str().unwrap(), bea["password"].as_str().unwrap()).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_takes_a_password_changed_in_django_but_not_over_one_changed_in_gatehouse() {
    let app = spawn_app(Backend::Sqlite).await;
    let copy = std::env::temp_dir().join(format!("django-{}.sqlite3", uuid::Uuid::new_v4()));
    std::fs::copy(fixture("seed_accounts").join("db.sqlite3"), &copy).unwrap();
    let source = format!("sqlite://{}", copy.display());
    import(&app.database_url, &source);
    let expected = expected("seed_accounts");
    let user = |id: i64| expected["users"].as_array().unwrap().iter().find(|u| u["id"] == id).unwrap().clone();
    let (ravi, no_password) = (user(2), user(8));
    // Ravi logs in (his hash becomes argon2id); then both get another password in Django.
    let ravi_password = ravi["password"].as_str().unwrap();
    assert_eq!(app.login(ravi["email"].as_str().unwrap(), ravi_password).await.status(), 200);
    let other_hash = user(11)["password_hash"].as_str().unwrap().to_owned();
    let django = rusqlite::Connection::open(&copy).unwrap();
    django.execute("UPDATE accounts_user SET password = ?1 WHERE id IN (2, 8)", [&other_hash]).unwrap();
    let report = import(&app.database_url, &source);
    assert!(report.contains("1 kept the password they have set in Gatehouse since"), "{report}");
    let legacy = user(11);
    let other_password = legacy["password"].as_str().unwrap();
    assert_eq!(
        app.login(no_password["email"].as_str().unwrap(), other_password).await.status(),
        200,
        "took Django's new password"
    );
    assert_eq!(app.login(ravi["email"].as_str().unwrap(), ravi_password).await.status(), 200, "kept Gatehouse's");
}
