//! The binary reads a `.env` file in its working directory, as a Django
//! tutorial's project keeps one; variables already set win.

#[test]
fn the_binary_reads_dot_env_and_the_environment_wins() {
    let dir = std::env::temp_dir().join("gatehouse-api-tests").join(format!("dotenv-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "# from a tutorial\nDATABASE_URL=sqlite://from-dotenv.db\nDEBUG=True\n").unwrap();
    let migrate = |database_url: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command.arg("migrate").current_dir(&dir).env_remove("DATABASE_URL").env("RUST_LOG", "warn");
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    migrate(None);
    assert!(dir.join("from-dotenv.db").exists(), "DATABASE_URL came from .env");
    migrate(Some("sqlite://from-environment.db"));
    assert!(dir.join("from-environment.db").exists(), "the environment wins over .env");
}
