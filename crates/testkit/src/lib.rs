//! What shoal's tests share.
//!
//! Some tests drive programs nobody here wrote (`b3sum`, headless Chromium,
//! schemathesis, netlab's network namespaces). On a machine without them a
//! plain `cargo test` skips those tests instead of failing, and says so: each
//! skip is printed when it happens (past the test harness's output capture)
//! and appended to `target/skipped-tests.txt`, which `./test.sh` prints at the
//! end. With `SHOAL_REQUIRE_ALL=1` (CI sets it) a skip is a failure, so CI
//! never skips silently.

use std::io::Write;
use std::path::PathBuf;

/// The variable that turns a skip into a failure.
pub const REQUIRE_ALL: &str = "SHOAL_REQUIRE_ALL";

/// Whether `test` can run: `missing` is `None` when everything it needs is
/// here, else what is missing and how to get it. When it cannot run: under
/// [`REQUIRE_ALL`] this panics with the reason; otherwise the skip is
/// reported (see the crate docs) and false is returned.
pub fn can_run(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    if std::env::var(REQUIRE_ALL).as_deref() == Ok("1") {
        panic!("{test} cannot run: {why} ({REQUIRE_ALL}=1 makes a skipped test a failure)");
    }
    let line = format!("SKIPPED {test}: {why}");
    // Once per process: a test may ask for a tool in a loop.
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    {
        let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
        if said.contains(&line) {
            return false;
        }
        said.push(line.clone());
    }
    // Straight to the process's stderr: the harness captures only `eprint!`.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(log) = skip_log() {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    false
}

/// `missing` for a skip asked for by setting `var` to 1, if it is set.
pub fn skip_requested(var: &str) -> Option<String> {
    (std::env::var(var).as_deref() == Ok("1")).then(|| format!("{var}=1 asks to skip it"))
}

/// `missing` for a program that is not an executable file on `PATH`, with
/// how to install it.
pub fn program(program: &str, install: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    (!found).then(|| format!("{program} is not on PATH ({install})"))
}

/// `target/skipped-tests.txt` of the build that made this test binary
/// (`target/<profile>/deps/<binary>`).
fn skip_log() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.ancestors().nth(3)?;
    Some(target.join("skipped-tests.txt"))
}
