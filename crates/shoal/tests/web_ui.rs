//! The web UI end to end: two real `shoal daemon` processes on 127.0.0.1 (mDNS
//! and UPnP off), driven through their web pages by headless Chromium
//! (`e2e/ui.mjs`, playwright-core). A's page shares a generated file and makes
//! it private in the share's access panel; B's page is refused it with the
//! plain ticket, then downloads it with an invite ticket created and copied on
//! A's page (A's panel then shows the invite used up and B in the access log);
//! this test then checks the download byte for byte and that the screenshot was
//! saved.
//!
//! Needs node 20+, `e2e/node_modules/playwright-core` (`npm ci --prefix e2e`) and
//! `/usr/bin/chromium` (`apt-get install chromium`). Without them the test fails
//! and says so, unless `SHOAL_SKIP_BROWSER_TESTS=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{pseudo_random, repo_root, run_bounded, Daemon};

/// The browser script bounds itself at 170 s; this is the backstop.
const SCRIPT_LIMIT: Duration = Duration::from_secs(200);
const CHROMIUM: &str = "/usr/bin/chromium";

/// `None` if the browser tools are there; the reason otherwise.
fn missing_browser_tools(e2e: &Path) -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    let mut missing = Vec::new();
    match node {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            let major: u32 = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                missing.push(format!("node 20 or newer (found {})", v.trim()));
            }
        }
        _ => missing.push("node (apt-get install nodejs npm)".to_owned()),
    }
    if !e2e
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push(format!(
            "playwright-core ({} is missing: run `npm ci --prefix e2e` at the repository root)",
            e2e.join("node_modules/playwright-core").display()
        ));
    }
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("{CHROMIUM} (apt-get install chromium)"));
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "the web UI tests need {}; install them (./test.sh does)",
            missing.join(", ")
        ))
    }
}

/// Whether a browser test can run here (see `shoal_testkit::can_run`).
fn browser_tests_can_run(test: &str, e2e: &Path) -> bool {
    shoal_testkit::can_run(
        test,
        shoal_testkit::skip_requested("SHOAL_SKIP_BROWSER_TESTS")
            .or_else(|| missing_browser_tools(e2e)),
    )
}

#[test]
fn web_ui_shares_on_one_daemon_and_downloads_on_another_in_headless_chromium() {
    let e2e = repo_root().join("e2e");
    if !browser_tests_can_run(
        "web_ui_shares_on_one_daemon_and_downloads_on_another_in_headless_chromium",
        &e2e,
    ) {
        return;
    }

    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let file = root.join("ui-sample.bin");
    let content = pseudo_random(3 * 1024 * 1024 + 12_345, 0x9E37_79B9_7F4A_7C15);
    std::fs::write(&file, &content).expect("write the sample file");
    let output = root.join("b-downloads");
    std::fs::create_dir_all(&output).expect("create output dir");
    // A second file, picked in A's folder browser, whose root is its folder.
    let library = root.join("library");
    std::fs::create_dir_all(library.join("albums")).expect("create the library");
    let file2 = library.join("big-sample.bin");
    std::fs::write(&file2, pseudo_random(6 * 1024 * 1024, 0x5EED)).expect("write the second file");
    // A folder A shares and B downloads (the files' list in both UIs).
    let folder = library.join("albums");
    let folder_files = ["a/01 intro.flac", "a/02 theme.flac", "cover.jpg"];
    for (i, f) in folder_files.iter().enumerate() {
        let p = folder.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).expect("create a folder");
        std::fs::write(&p, pseudo_random(200_000 + i * 70_001, i as u64 + 1)).expect("write");
    }
    // An empty folder travels too (listed as one, made on B).
    let empty_folder = "b/empty";
    std::fs::create_dir_all(folder.join(empty_folder)).expect("create the empty folder");
    let artifacts = std::env::var_os("SHOAL_E2E_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-web-ui"));
    let screenshot = artifacts.join("transfers-b.png");
    let _ = std::fs::remove_file(&screenshot);

    let browse_root = library.to_str().expect("a UTF-8 path");
    let a = Daemon::start(&root.join("a"), &[("SHOAL_BROWSE_ROOT", browse_root)]);
    let b = Daemon::start(&root.join("b"), &[]);

    let mut node = Command::new("node");
    node.arg(e2e.join("ui.mjs"))
        .current_dir(&e2e)
        .env("SHOAL_UI_A", a.ui_url())
        .env("SHOAL_UI_B", b.ui_url())
        .env("SHOAL_E2E_FILE", &file)
        .env("SHOAL_E2E_FILE2", &file2)
        .env("SHOAL_E2E_FOLDER", &folder)
        .env("SHOAL_E2E_FOLDER_FILES", folder_files.join(","))
        .env("SHOAL_E2E_FOLDER_EMPTY", empty_folder)
        .env("SHOAL_E2E_OUTPUT", &output)
        .env("SHOAL_E2E_ARTIFACTS", &artifacts)
        .env("CHROMIUM", CHROMIUM);
    let (status, log) = run_bounded(node, &root.join("ui.log"), SCRIPT_LIMIT);
    println!("{log}");
    let explain = || {
        format!(
            "browser test log:\n{log}\n--- daemon A:\n{}\n--- daemon B:\n{}\nscreenshots in {}",
            a.output(),
            b.output(),
            artifacts.display()
        )
    };
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("e2e/ui.mjs failed ({s}); {}", explain()),
        None => panic!(
            "e2e/ui.mjs did not finish within {SCRIPT_LIMIT:?}; {}",
            explain()
        ),
    }

    let downloaded = output.join("ui-sample.bin");
    let got = std::fs::read(&downloaded).unwrap_or_else(|e| {
        let listing: Vec<_> = std::fs::read_dir(&output)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!(
            "the UI showed the download complete but {} cannot be read ({e}); {} holds {listing:?}; {}",
            downloaded.display(),
            output.display(),
            explain()
        )
    });
    assert!(
        got == content,
        "the downloaded file differs from the shared one ({} bytes, expected {})",
        got.len(),
        content.len()
    );
    // The last file was left out in B's download form.
    let (left_out, chosen) = folder_files.split_last().unwrap();
    assert!(!output.join("albums").join(left_out).exists());
    for f in chosen {
        let got = std::fs::read(output.join("albums").join(f)).unwrap_or_else(|e| {
            panic!("B's copy of albums/{f} cannot be read: {e}; {}", explain())
        });
        assert!(
            got == std::fs::read(folder.join(f)).unwrap(),
            "B's copy of albums/{f} differs from A's"
        );
    }
    let shot = std::fs::metadata(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(
        shot.len() > 1000,
        "the screenshot {} is empty",
        screenshot.display()
    );
}

/// Restart the daemon under an open page: the page reconnects by itself with
/// the token it kept (the daemon keeps its token), and a bookmark of the bare
/// address opens too (`e2e/restart.mjs`).
#[test]
fn the_open_ui_reconnects_after_a_daemon_restart_without_a_new_token() {
    use std::io::Write;
    use std::process::Stdio;
    let e2e = repo_root().join("e2e");
    if !browser_tests_can_run(
        "the_open_ui_reconnects_after_a_daemon_restart_without_a_new_token",
        &e2e,
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let artifacts = std::env::var_os("SHOAL_E2E_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-web-ui"));
    let file = root.join("kept-across-restarts.bin");
    std::fs::write(&file, pseudo_random(100_000, 7)).expect("write the sample file");
    // A fixed port, so that the restarted daemon is the page's origin again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let api = format!("127.0.0.1:{port}");
    let data = root.join("d");
    let daemon = Daemon::start_on(&data, &api, &[]);
    let share = support::shoal(&data)
        .args(["share"])
        .arg(&file)
        .arg("--json")
        .output()
        .expect("shoal share runs");
    assert!(
        share.status.success(),
        "shoal share through the daemon failed: {}",
        String::from_utf8_lossy(&share.stderr)
    );
    let token = daemon.token.clone();

    let mut node = Command::new("node")
        .arg(e2e.join("restart.mjs"))
        .current_dir(&e2e)
        .env("SHOAL_UI", daemon.ui_url())
        .env("SHOAL_E2E_SHARE", "kept-across-restarts.bin")
        .env("SHOAL_E2E_ARTIFACTS", &artifacts)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let out = support::lines(node.stdout.take().expect("stdout"));
    let err = support::lines(node.stderr.take().expect("stderr"));
    let mut stdin = node.stdin.take().expect("stdin");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let fail = |seen: &[String], why: &str| -> ! {
        let errs: Vec<String> = err.try_iter().collect();
        panic!(
            "{why}; e2e/restart.mjs said:\n{}\n{}",
            seen.join("\n"),
            errs.join("\n")
        )
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match out.recv_timeout(left) {
            Ok(l) if l == "READY" => break,
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = node.kill();
                fail(&seen, "the page never became ready");
            }
        }
    }
    // Stop it hard and start it again on the same data dir and address.
    drop(daemon);
    let daemon = Daemon::start_on(&data, &api, &[]);
    assert_eq!(
        daemon.token, token,
        "the daemon wrote a new token at its restart"
    );
    writeln!(stdin, "RESTARTED").expect("tell the script");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = node.try_wait().expect("wait for node") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = node.kill();
            let _ = node.wait();
            fail(&seen, "e2e/restart.mjs did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    seen.extend(out.try_iter());
    if !status.success() {
        fail(
            &seen,
            &format!(
                "e2e/restart.mjs failed ({status}); daemon:\n{}",
                daemon.output()
            ),
        );
    }
    assert!(seen.iter().any(|l| l == "PASS"), "{seen:?}");
}
