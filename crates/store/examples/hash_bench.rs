//! Hashes a file with the store's hasher and prints the id and throughput:
//! `cargo run --release -p shoal-store --example hash_bench -- FILE [THREADS]`.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: hash_bench FILE [THREADS]");
        std::process::exit(2);
    };
    let threads = args
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(shoal_store::hash::default_threads);
    let start = Instant::now();
    match shoal_store::hash::hash_file_with(path.as_ref(), None, threads, &|_| {}) {
        Ok(ob) => {
            let secs = start.elapsed().as_secs_f64();
            let len = ob.layout().len() as f64;
            println!(
                "{}  {path}\n{:.3} s, {:.0} MB/s, {threads} threads",
                ob.root(),
                secs,
                len / secs / 1e6
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
