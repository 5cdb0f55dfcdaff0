//! Records the commit the binary is built from, for `shoal --version`:
//! `git rev-parse --short=12 HEAD` (with `-dirty` when the work tree has
//! changes), or "unknown commit" outside a git checkout.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("commit {c}-dirty")
            } else {
                format!("commit {c}")
            }
        }
        _ => "unknown commit".to_owned(),
    };
    println!("cargo:rustc-env=SHOAL_COMMIT={commit}");
    // Built again when HEAD moves (a new commit, another branch).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(r).display());
        }
        println!("cargo:rerun-if-changed={}", dir.join("index").display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
