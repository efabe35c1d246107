//! Prints the wall time of one argon2id hash with the given parameters (the
//! defaults when none are given), first on one thread, then with every core
//! hashing at once: `cargo run --release --example hash_cost -- [rounds] [m_kib t p]`.
//! The login ceiling of a machine is its core count divided by the second
//! time. The two differ where the cores share a cache that holds one hash's
//! memory but not one per core. More rounds (default 20) average out a
//! machine whose speed drifts from one second to the next.
//!
//! `hash_cost verify [rounds]` instead checks a stored hash (an imported
//! Django one, say) with every core checking at once: the password and the
//! hash are the two lines of standard input.

use std::time::Instant;

use futures_util::future::try_join_all;
use gatehouse_domain::ports::PasswordHasher;
use gatehouse_domain::PlainPassword;
use gatehouse_hash_argon2::{Argon2Hasher, HashParams};

const DEFAULT_ROUNDS: usize = 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("verify") {
        let rounds = std::env::args().nth(2).map_or(Ok(DEFAULT_ROUNDS), |r| r.parse())?;
        return verify_cost(rounds).await;
    }
    let args: Vec<u32> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (rounds, params) = match args.as_slice() {
        [m, t, p] => (DEFAULT_ROUNDS, HashParams { memory_kib: *m, iterations: *t, parallelism: *p }),
        [r, m, t, p] => (*r as usize, HashParams { memory_kib: *m, iterations: *t, parallelism: *p }),
        [r] => (*r as usize, HashParams::default()),
        _ => (DEFAULT_ROUNDS, HashParams::default()),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let password = PlainPassword::parse("correct horse battery staple")?;
    let describe = format!("argon2id m={} KiB t={} p={}", params.memory_kib, params.iterations, params.parallelism);

    let one = Argon2Hasher::new(params, 1, rounds)?;
    one.hash(&password).await?; // warm-up: the thread's memory is allocated once
    let started = Instant::now();
    for _ in 0..rounds {
        one.hash(&password).await?;
    }
    let single = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    println!("{describe}: {single:.1} ms per hash on one thread ({rounds} rounds)");

    let all = Argon2Hasher::new(params, cores, cores * rounds)?;
    // Every round is queued at once: none may be refused for waiting.
    all.set_queue_deadline(std::time::Duration::ZERO);
    try_join_all((0..cores).map(|_| all.hash(&password))).await?;
    let started = Instant::now();
    try_join_all((0..cores * rounds).map(|_| all.hash(&password))).await?;
    let parallel = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    println!("{describe}: {parallel:.1} ms per hash with {cores} threads hashing at once ({rounds} rounds each)");
    Ok(())
}

async fn verify_cost(rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut lines = std::io::stdin().lines();
    let password = PlainPassword::parse(&lines.next().ok_or("no password line")??)?;
    let hash = gatehouse_domain::PasswordHash::new(lines.next().ok_or("no hash line")??);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = Argon2Hasher::new(HashParams::default(), cores, cores * rounds)?;
    all.set_queue_deadline(std::time::Duration::ZERO);
    let started = Instant::now();
    try_join_all((0..cores * rounds).map(|_| all.verify(&password, &hash))).await?;
    let parallel = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    println!(
        "{parallel:.1} ms per check of the stored hash with {cores} threads checking at once ({rounds} rounds each)"
    );
    Ok(())
}
