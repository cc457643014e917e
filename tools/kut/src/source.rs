//! The kvm-unit-tests tree: a source tarball unpacked and built once into a
//! cache keyed by the tarball's name (`target/kut/build/<name>/`), or a
//! source directory built in place when it has not been built yet.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Written into the tree after a successful build.
const STAMP: &str = ".berth-kut-built";

/// Returns a built KUT tree (the directory holding `run_tests.sh`,
/// `config.mak` and `x86/*.flat`), building it if needed.
pub fn prepare(src: &Path, cache: &Path) -> Result<PathBuf, String> {
    if src.is_dir() {
        if !src.join("run_tests.sh").is_file() {
            return Err(format!(
                "{}: not a kvm-unit-tests source tree (no run_tests.sh)",
                src.display()
            ));
        }
        let dir = src
            .canonicalize()
            .map_err(|e| format!("{}: {e}", src.display()))?;
        if !dir.join(STAMP).exists() && !dir.join("x86/dummy.flat").exists() {
            build(&dir)?;
        }
        return Ok(dir);
    }
    if !src.is_file() {
        return Err(format!(
            "kvm-unit-tests source not found at {} (set KUT_SRC to its tarball or source directory)",
            src.display()
        ));
    }
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.trim_end_matches(".tar.gz")
                .trim_end_matches(".tgz")
                .trim_end_matches(".tar")
        })
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: cannot name a cache directory after it", src.display()))?;
    let dir = cache.join(name);
    if dir.join(STAMP).exists() {
        return dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()));
    }
    let tmp = cache.join(format!("{name}.unpack"));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    eprintln!("kut: unpacking {} into {}", src.display(), dir.display());
    sh(Command::new("tar").arg("xzf").arg(src).arg("-C").arg(&tmp), "tar")?;
    // The tarball holds one top directory (kvm-unit-tests/), or the tree itself.
    let entries: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let top = match entries.as_slice() {
        [one] if one.is_dir() => one.clone(),
        _ => tmp.clone(),
    };
    if !top.join("run_tests.sh").is_file() {
        return Err(format!(
            "{}: no kvm-unit-tests tree inside (no run_tests.sh)",
            src.display()
        ));
    }
    std::fs::rename(&top, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    build(&dir)?;
    Ok(dir)
}

/// `./configure && make -j2`, output in `build.log` in the tree.
fn build(dir: &Path) -> Result<(), String> {
    let log = dir.join("build.log");
    eprintln!(
        "kut: building kvm-unit-tests in {} (./configure && make -j2, a few minutes; log {})",
        dir.display(),
        log.display()
    );
    let cmd = "./configure && make -j2";
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("sh: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`{cmd}` failed in {} ({status}); see {}",
            dir.display(),
            log.display()
        ));
    }
    std::fs::write(dir.join(STAMP), "").map_err(|e| e.to_string())
}

fn sh(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {status}"))
    }
}
