//! Prints the wall time of one argon2id hash with the given parameters (the
//! defaults when none are given), first on one thread, then with every core
//! hashing at once: `cargo run --release --example hash_cost -- [m_kib t p]`.
//! The login ceiling of a machine is its core count divided by the second
//! time. The two differ where the cores share a cache that holds one hash's
//! memory but not one per core.

use std::time::Instant;

use futures_util::future::try_join_all;
use gatehouse_domain::ports::PasswordHasher;
use gatehouse_domain::PlainPassword;
use gatehouse_hash_argon2::{Argon2Hasher, HashParams};

const ROUNDS: usize = 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let params = match args.as_slice() {
        [m, t, p] => HashParams { memory_kib: *m, iterations: *t, parallelism: *p },
        _ => HashParams::default(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let password = PlainPassword::parse("correct horse battery staple")?;
    let describe = format!("argon2id m={} KiB t={} p={}", params.memory_kib, params.iterations, params.parallelism);

    let one = Argon2Hasher::new(params, 1, ROUNDS)?;
    one.hash(&password).await?; // warm-up: the thread's memory is allocated once
    let started = Instant::now();
    for _ in 0..ROUNDS {
        one.hash(&password).await?;
    }
    let single = started.elapsed().as_secs_f64() * 1000.0 / ROUNDS as f64;
    println!("{describe}: {single:.1} ms per hash on one thread ({ROUNDS} rounds)");

    let all = Argon2Hasher::new(params, cores, cores * ROUNDS)?;
    try_join_all((0..cores).map(|_| all.hash(&password))).await?;
    let started = Instant::now();
    try_join_all((0..cores * ROUNDS).map(|_| all.hash(&password))).await?;
    let parallel = started.elapsed().as_secs_f64() * 1000.0 / ROUNDS as f64;
    println!("{describe}: {parallel:.1} ms per hash with {cores} threads hashing at once ({ROUNDS} rounds each)");
    Ok(())
}
