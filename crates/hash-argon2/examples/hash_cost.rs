//! Prints the wall time of one argon2id hash with the given parameters (the
//! defaults when none are given): `cargo run --release --example hash_cost -- [m_kib t p]`.
//! The login ceiling of a machine is its core count divided by this time.

use std::time::Instant;

use gatehouse_domain::ports::PasswordHasher;
use gatehouse_domain::PlainPassword;
use gatehouse_hash_argon2::{Argon2Hasher, HashParams};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let params = match args.as_slice() {
        [m, t, p] => HashParams { memory_kib: *m, iterations: *t, parallelism: *p },
        _ => HashParams::default(),
    };
    let hasher = Argon2Hasher::new(params, 1, 1)?;
    let password = PlainPassword::parse("correct horse battery staple")?;
    hasher.hash(&password).await?; // warm-up
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        hasher.hash(&password).await?;
    }
    let per_hash = started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    println!(
        "argon2id m={} KiB t={} p={}: {per_hash:.1} ms per hash ({rounds} rounds)",
        params.memory_kib, params.iterations, params.parallelism
    );
    Ok(())
}
