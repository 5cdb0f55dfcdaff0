//! End-to-end tests of the `shoal` binary: real processes, real files, and
//! `b3sum` (Debian package `b3sum`, installed by `./test.sh`) as the reference.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shoal_core::{ContentId, Kind, Provider, Ticket};
use support::pseudo_random;

fn shoal(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env("SHOAL_DATA_DIR", data_dir)
        .env_remove("RUST_BACKTRACE");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the shoal binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// Asserts the command failed with exactly one `error:` line and no panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got {out:?}");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains(needle),
        "{err:?} should mention {needle:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// What `b3sum` prints for `args`; `None` when it is not installed (the
/// comparison is skipped and reported, see `shoal_testkit::can_run`).
fn b3sum(args: &[PathBuf]) -> Option<String> {
    let test = std::thread::current().name().map_or_else(
        || "a b3sum comparison".to_owned(),
        |n| format!("{n} (its b3sum comparison)"),
    );
    if !shoal_testkit::can_run(
        &test,
        shoal_testkit::program("b3sum", "apt-get install b3sum; ./test.sh does"),
    ) {
        return None;
    }
    let out = Command::new("b3sum")
        .args(args)
        .output()
        .expect("b3sum runs");
    assert!(out.status.success(), "b3sum failed: {out:?}");
    Some(String::from_utf8(out.stdout).expect("b3sum prints UTF-8"))
}

#[test]
fn hash_equals_b3sum_for_edge_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let k = 1024;
    let sizes = [
        0,
        1,
        1023,
        1024,
        1025,
        16 * k - 1,
        16 * k,
        16 * k + 1,
        256 * k - 1,
        256 * k,
        256 * k + 1,
        1024 * k + 7,
        20 * 1024 * k + 12345,
    ];
    let mut paths = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let path = dir.path().join(format!("file-{size}.bin"));
        std::fs::write(&path, pseudo_random(*size, i as u64 + 1)).unwrap();
        paths.push(path);
    }
    let out = run(shoal(&dir.path().join("data")).arg("hash").args(&paths));
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(expected) = b3sum(&paths) {
        assert_eq!(stdout(&out), expected);
    }
}

#[test]
fn hash_escapes_odd_names_like_b3sum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("back\\slash and space.txt");
    std::fs::write(&path, b"odd").unwrap();
    let out = run(shoal(&dir.path().join("data")).arg("hash").arg(&path));
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(expected) = b3sum(std::slice::from_ref(&path)) {
        assert_eq!(stdout(&out), expected);
    }
}

#[test]
fn hash_folder_prints_each_file_then_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("photos");
    std::fs::create_dir_all(folder.join("2024/summer")).unwrap();
    std::fs::write(folder.join("a.txt"), b"alpha").unwrap();
    std::fs::write(
        folder.join("2024/summer/beach.jpg"),
        pseudo_random(70_000, 9),
    )
    .unwrap();
    std::fs::write(folder.join("empty"), b"").unwrap();

    let out = run(shoal(&dir.path().join("data")).arg("hash").arg(&folder));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");

    // Every file line is exactly what b3sum prints for that file.
    let files = [
        folder.join("2024/summer/beach.jpg"),
        folder.join("a.txt"),
        folder.join("empty"),
    ];
    if let Some(expected) = b3sum(&files) {
        assert_eq!(lines[..3].join("\n") + "\n", expected);
    }

    // The last line names the folder with a trailing slash and a collection id
    // that does not depend on how the folder was spelled.
    let base = folder.display().to_string();
    let (id, name) = lines[3].split_once("  ").unwrap();
    assert_eq!(name, format!("{base}/"));
    id.parse::<ContentId>().unwrap();
    let again = run(shoal(&dir.path().join("data"))
        .arg("hash")
        .arg(format!("{base}/")));
    assert_eq!(stdout(&again).lines().last().unwrap(), lines[3]);
}

#[test]
fn hash_reports_a_missing_path_and_still_hashes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, b"good").unwrap();
    let missing = dir.path().join("missing");
    let out = run(shoal(&dir.path().join("data"))
        .arg("hash")
        .arg(&missing)
        .arg(&good));
    assert!(!out.status.success());
    if let Some(expected) = b3sum(std::slice::from_ref(&good)) {
        assert_eq!(stdout(&out), expected);
    }
    let err = stderr(&out);
    assert!(err.contains("missing"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn add_list_and_remove_never_touch_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("report final.pdf");
    std::fs::write(&file, pseudo_random(300_000, 3)).unwrap();
    let folder = dir.path().join("música");
    std::fs::create_dir_all(folder.join("álbum uno")).unwrap();
    std::fs::write(
        folder.join("álbum uno/canción 1.mp3"),
        pseudo_random(5000, 4),
    )
    .unwrap();
    std::fs::write(folder.join("vacío.txt"), b"").unwrap();

    let out = run(shoal(&data).arg("add").arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    let file_id = stdout(&out).trim().to_owned();
    if let Some(expected) = b3sum(std::slice::from_ref(&file)) {
        assert_eq!(format!("{file_id}  {}\n", file.display()), expected);
    }

    let out = run(shoal(&data)
        .arg("add")
        .arg(&folder)
        .arg("--name")
        .arg("my music"));
    assert!(out.status.success(), "{}", stderr(&out));
    let folder_id = stdout(&out).trim().to_owned();
    let hashed = run(shoal(&data).arg("hash").arg(&folder));
    let collection_line = stdout(&hashed).lines().last().unwrap().to_owned();
    assert!(collection_line.starts_with(&folder_id), "{collection_line}");

    // Adding the same content again does not duplicate it.
    let out = run(shoal(&data).arg("add").arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), file_id);

    let out = run(shoal(&data).arg("shares").arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let shares: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let shares = shares.as_array().unwrap();
    assert_eq!(shares.len(), 2, "{shares:?}");
    let music = shares
        .iter()
        .find(|s| s["id"] == folder_id.as_str())
        .unwrap();
    assert_eq!(music["name"], "my music");
    assert_eq!(music["kind"], "folder");
    assert_eq!(music["files"], 2);
    assert_eq!(music["size"], 5000);
    let pdf = shares.iter().find(|s| s["id"] == file_id.as_str()).unwrap();
    assert_eq!(pdf["kind"], "file");
    assert_eq!(pdf["size"], 300_000);
    assert_eq!(pdf["name"], "report final.pdf");

    let out = run(shoal(&data).arg("shares"));
    assert!(out.status.success());
    let table = stdout(&out);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("my music") && table.contains("report final.pdf"),
        "{table}"
    );

    // Remove by unique prefix; the user's files stay.
    let out = run(shoal(&data).arg("rm").arg(&folder_id[..12]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(folder.join("álbum uno/canción 1.mp3").exists());
    let out = run(shoal(&data).arg("rm").arg(&file_id));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(file.exists());
    let out = run(shoal(&data).arg("shares").arg("--json"));
    let shares: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shares.as_array().unwrap().len(), 0);

    // Removing again says what is wrong.
    let out = run(shoal(&data).arg("rm").arg(&file_id));
    assert_one_line_error(&out, "no share with id");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_one_line_error(
        &run(shoal(&data).arg("add").arg(dir.path().join("nope"))),
        "nope",
    );
    assert_one_line_error(&run(shoal(&data).arg("rm").arg("xyz")), "not a share id");
    assert_one_line_error(
        &run(shoal(&data).arg("rm").arg("abcdef0123")),
        "no share id starts with",
    );
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    assert_one_line_error(
        &run(shoal(&data).arg("add").arg(&file).arg("--name").arg("a\nb")),
        "control character",
    );
}

#[test]
fn data_dir_that_is_a_file_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("occupied");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let out = run(shoal(&not_a_dir).arg("shares"));
    assert_one_line_error(&out, "occupied");
}

fn sample_ticket() -> Ticket {
    let peer = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32])
        .expect("32 bytes make an ed25519 key")
        .public()
        .to_peer_id();
    Ticket {
        id: ContentId::of(b"hello"),
        kind: Kind::File,
        providers: vec![Provider {
            peer,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        }],
        capability: None,
        name: Some("hello.txt".into()),
    }
}

#[test]
fn ticket_inspect_shows_what_it_carries() {
    let dir = tempfile::tempdir().unwrap();
    let ticket = sample_ticket();
    let text = ticket.to_string();
    let out = run(shoal(dir.path())
        .args(["ticket", "inspect", "--json"])
        .arg(&text));
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["id"], ticket.id.to_string());
    assert_eq!(json["kind"], "file");
    assert_eq!(
        json["providers"][0]["peer"],
        ticket.providers[0].peer.to_string()
    );
    assert_eq!(json["providers"][0]["addrs"][0], "/ip4/127.0.0.1/tcp/4001");
    assert_eq!(json["name"], "hello.txt");

    let out = run(shoal(dir.path()).args(["ticket", "inspect"]).arg(&text));
    assert!(out.status.success(), "{}", stderr(&out));
    let human = stdout(&out);
    assert!(human.contains(&ticket.id.to_string()), "{human}");
    assert!(human.contains("/ip4/127.0.0.1/tcp/4001"), "{human}");
    assert!(human.contains("name      hello.txt"), "{human}");
}

#[test]
fn ticket_inspect_catches_a_typo() {
    let dir = tempfile::tempdir().unwrap();
    let text = sample_ticket().to_string();
    // Change one character in the middle to another base32 character.
    let mut chars: Vec<char> = text.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'a' { 'b' } else { 'a' };
    let typo: String = chars.into_iter().collect();
    let out = run(shoal(dir.path()).args(["ticket", "inspect"]).arg(&typo));
    assert_one_line_error(&out, "checksum");

    let out = run(shoal(dir.path())
        .args(["ticket", "inspect"])
        .arg("hello world"));
    assert_one_line_error(&out, "shoal1");
}

/// `shoal share` of a folder it indexed before reads only what changed, says
/// so, and still gives the same ticket id for the same bytes.
#[test]
fn sharing_the_same_folder_again_reads_only_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("album");
    std::fs::create_dir_all(&dir).unwrap();
    // Written `secs` ago: old enough for its time to be trusted.
    let write_old = |name: &str, data: &[u8], secs: u64| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
            .unwrap();
    };
    write_old("a.bin", &pseudo_random(600_000, 1), 3600);
    write_old("b.bin", &pseudo_random(400_000, 2), 3600);
    let data = t.path().join("data");
    let share = || {
        let out = run(support::shoal(&data).arg("share").arg(&dir).args([
            "--json",
            "--for",
            "0s",
            "--no-daemon",
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().next().expect("a line")).unwrap();
        (v["id"].as_str().unwrap().to_string(), stderr(&out))
    };
    let (id1, err1) = share();
    assert!(!err1.contains("unchanged"), "{err1}");
    let (id2, err2) = share();
    assert_eq!(id2, id1);
    assert!(
        err2.contains("; unchanged since it was last indexed"),
        "{err2}"
    );
    write_old("b.bin", &pseudo_random(400_000, 8), 60);
    let (id3, err3) = share();
    assert_ne!(id3, id1, "the changed file changes the collection");
    assert!(
        err3.contains("; 585.9 KiB unchanged since it was last indexed"),
        "{err3}"
    );
}

/// `shoal ticket qr` prints a QR code a reader nobody here wrote (rqrr)
/// decodes back to the ticket; `--svg` prints an SVG image; a text that is
/// not a ticket is refused.
#[test]
fn ticket_qr_prints_a_code_that_reads_back_as_the_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let text = sample_ticket().to_string();
    let out = run(shoal(dir.path()).args(["ticket", "qr"]).arg(&text));
    assert!(out.status.success(), "{}", stderr(&out));
    // Light on dark: a space is a dark module pair, '█' two light ones, '▀'
    // light above dark, '▄' dark above light.
    let rows: Vec<Vec<char>> = stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.chars().collect())
        .collect();
    let w = rows.iter().map(Vec::len).max().unwrap();
    let h = rows.len() * 2;
    let dark = |x: usize, y: usize| -> bool {
        let c = rows[y / 2].get(x).copied().unwrap_or('█');
        let (top_light, bottom_light) = match c {
            '█' => (true, true),
            '▀' => (true, false),
            '▄' => (false, true),
            _ => (false, false),
        };
        !(if y.is_multiple_of(2) {
            top_light
        } else {
            bottom_light
        })
    };
    // Each module as 4x4 pixels.
    let scale = 4;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * scale, h * scale, |x, y| {
        if dark(x / scale, y / scale) {
            0
        } else {
            255
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in {} rows", rows.len());
    let (_, content) = grids[0].decode().expect("the QR code decodes");
    assert_eq!(content, text);

    let out = run(shoal(dir.path()).args(["ticket", "qr", "--svg"]).arg(&text));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("<svg"), "{}", stdout(&out));
    let out = run(shoal(dir.path()).args(["ticket", "qr", "shoal1nope"]));
    assert_one_line_error(&out, "not a valid ticket");
}

/// `shoal files` without a daemon: a folder share's files with their ids,
/// each the id `b3sum` prints for that file.
#[test]
fn files_of_a_folder_share_carry_the_ids_b3sum_prints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let folder = dir.path().join("photos");
    std::fs::create_dir_all(folder.join("2025")).unwrap();
    std::fs::write(folder.join("2025/b.jpg"), pseudo_random(200_000, 8)).unwrap();
    std::fs::write(folder.join("a.jpg"), pseudo_random(1_100_000, 9)).unwrap();
    std::fs::create_dir_all(folder.join("2026/empty")).unwrap();
    let out = run(shoal(&data).arg("add").arg(&folder));
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let out = run(shoal(&data).args(["files", &id, "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{v}");
    assert_eq!(files[0]["path"], "2025/b.jpg");
    assert_eq!(files[1]["path"], "a.jpg");
    assert_eq!(v["empty_folders"], serde_json::json!(["2026/empty"]), "{v}");
    assert_eq!(v["total_empty_folders"], 1, "{v}");
    let table = stdout(&run(shoal(&data).args(["files", &id])));
    assert!(table.contains("2026/empty/"), "{table}");
    let paths = [folder.join("2025/b.jpg"), folder.join("a.jpg")];
    if let Some(sums) = b3sum(&paths) {
        for (line, f) in sums.lines().zip(files) {
            assert_eq!(
                line.split_whitespace().next(),
                f["id"].as_str(),
                "{sums} vs {v}"
            );
        }
    }
    // A file share has no list of files.
    let file = dir.path().join("one.txt");
    std::fs::write(&file, b"one").unwrap();
    let out = run(shoal(&data).arg("add").arg(&file));
    let fid = stdout(&out).trim().to_owned();
    assert_one_line_error(
        &run(shoal(&data).args(["files", &fid])),
        "is a file, not a folder",
    );
}
