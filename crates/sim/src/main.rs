//! `shoal-sim`: runs a named swarm scenario on the simulator and prints the outcome.

use anyhow::Result;
use clap::{Parser, ValueEnum};
use shoal_sim::{run, scenario, Options, SCENARIOS};
use shoal_swarm::PickerMode;

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Picker {
    Rarest,
    Random,
    Sequential,
}

/// Simulate a shoal swarm (the real scheduler, a modelled network, a virtual clock).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Scenario name (see --list).
    #[arg(long, env = "SHOAL_SIM_SCENARIO", default_value = "flash-crowd-7")]
    scenario: String,
    /// Random seed.
    #[arg(long, env = "SHOAL_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Piece ordering (ablation).
    #[arg(long, value_enum, default_value = "rarest")]
    picker: Picker,
    /// Unchoke every interested peer (ablation).
    #[arg(long)]
    no_choke: bool,
    /// Seeders reveal everything at once (ablation).
    #[arg(long)]
    no_initial_seeding: bool,
    /// No endgame duplicates (ablation).
    #[arg(long)]
    no_endgame: bool,
    /// Check scheduler invariants after every event.
    #[arg(long)]
    check_invariants: bool,
    /// Probability that a message is delayed by a 200 ms retransmission.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Scheduler knob for experiments, `name=value` (repeatable), e.g.
    /// `max_active_uploads=1`.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

fn main() -> std::process::ExitCode {
    match run_cli(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, no backtrace: what failed and (in the message) what to do.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(args: Args) -> Result<()> {
    if args.list {
        for s in SCENARIOS {
            println!("{s}");
        }
        return Ok(());
    }
    let opts = Options {
        picker: match args.picker {
            Picker::Rarest => PickerMode::RarestFirst,
            Picker::Random => PickerMode::Random,
            Picker::Sequential => PickerMode::Sequential,
        },
        choke: !args.no_choke,
        initial_seeding: !args.no_initial_seeding,
        endgame: !args.no_endgame,
        check_invariants: args.check_invariants,
        settings: args.settings,
        loss: args.loss,
    };
    let sc = scenario(&args.scenario, &opts)?;
    let r = run(&sc, args.seed)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{}: completed={} last_finish={:.2}s bound={:.2}s ratio={:.3} bad_data_accepted={} wall={:.2}s events={}",
        r.scenario, r.completed, r.last_finish_s, r.bound_s, r.ratio_to_bound, r.bad_data_accepted, r.wall_s, r.events
    );
    println!(
        "  leecher upload utilisation={:.3} seeder copies={:.2} wasted={:.1}MiB hash_failures={} timeouts={} endgame_requests={} protocol_errors={}",
        r.leecher_upload_utilisation, r.seeder_upload_copies, r.wasted_mib, r.hash_failures, r.timeouts, r.endgame_requests, r.protocol_errors
    );
    if let Some(t) = r.initial_seeding_end_s {
        println!(
            "  initial seeding ended at {t:.2}s ({} duplicates before)",
            r.initial_seeding_duplicates
        );
    }
    if let Some(fr) = r.free_rider_ratio {
        println!("  free-rider download ratio vs reciprocating leechers: {fr:.3}");
    }
    for e in &r.invariant_errors {
        println!("  INVARIANT: {e}");
    }
    let mut finishes: Vec<f64> = r.finish_s.iter().flatten().copied().collect();
    finishes.sort_by(f64::total_cmp);
    if !finishes.is_empty() {
        let pick = |q: f64| finishes[((finishes.len() - 1) as f64 * q) as usize];
        println!(
            "  finish times: first={:.2}s median={:.2}s p90={:.2}s last={:.2}s",
            pick(0.0),
            pick(0.5),
            pick(0.9),
            pick(1.0)
        );
    }
    if r.peers.len() <= 40 {
        for p in &r.peers {
            println!(
                "  peer {:>3} {:<10} up={:>5.1}Mbit join={:>5.1}s finish={:>8} up={:>7.1}MiB down={:>7.1}MiB (from seeders {:>5.1}) banned_by={}",
                p.index,
                p.role,
                p.up_mbit,
                p.join_s,
                p.finish_s.map_or("-".to_string(), |f| format!("{f:.2}s")),
                p.uploaded_mib,
                p.downloaded_mib,
                p.from_seeders_mib,
                p.banned_by
            );
        }
    }
    Ok(())
}
