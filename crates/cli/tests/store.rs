//! The shared token store through the `modelauth` binary: one token and one command run
//! for every process of a user, and nothing in the store trusted blindly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::TokenScript;

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

/// A config whose token command counts its runs and prints `tok-<run>-<nonce>`, and a store
/// folder for it.
struct Setup {
    script: TokenScript,
    store: PathBuf,
}

impl Setup {
    /// Every run also appends its pid to `pids`.
    fn new(body: &str, refresh_interval_ms: u64) -> Self {
        let script = TokenScript::new(&format!(
            "echo $$ >> \"$D/pids\"\n{body}\necho tok-$N-x7Qk2"
        ));
        script.write(
            "config.toml",
            &format!(
                "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                 [model_providers.corp.auth]\ncommand = \"./token.sh\"\ntimeout_ms = 20000\nrefresh_interval_ms = {refresh_interval_ms}\n"
            ),
        );
        let store = script.dir().join("store");
        Self { script, store }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--config", "config.toml"])
            .args(args)
            .current_dir(self.dir())
            .env("MODELAUTH_CACHE_DIR", &self.store)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn dir(&self) -> &Path {
        self.script.dir()
    }

    fn runs(&self) -> usize {
        self.script.runs()
    }

    fn entry(&self) -> PathBuf {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.store)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.pop().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `count` concurrent `modelauth token --show`; their outputs.
fn wave(s: &Setup, count: usize) -> Vec<String> {
    let children: Vec<_> = (0..count)
        .map(|_| {
            s.command(&["token", "--show"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        })
        .collect()
}

#[test]
fn fifty_concurrent_processes_share_one_run_and_a_second_wave_after_the_lifetime_one_more() {
    let s = Setup::new("sleep 0.3", 3000);
    let tokens = wave(&s, 50);
    assert_eq!(
        s.runs(),
        1,
        "50 processes ran the command {} times",
        s.runs()
    );
    assert!(tokens.iter().all(|t| t == "tok-1-x7Qk2\n"), "{tokens:?}");
    // The second wave, after the token's lifetime (it was obtained before the first wave
    // ended): one more run, shared again.
    std::thread::sleep(Duration::from_millis(3100));
    let tokens = wave(&s, 50);
    assert_eq!(s.runs(), 2);
    assert!(tokens.iter().all(|t| t == "tok-2-x7Qk2\n"), "{tokens:?}");
}

#[test]
fn the_store_is_private_and_its_entry_reveals_nothing() {
    let s = Setup::new("", 300_000);
    assert!(s.run(&["token"]).status.success());
    let dir_mode = std::fs::metadata(&s.store).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let entry = s.entry();
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let name = entry.file_stem().unwrap().to_str().unwrap();
    assert!(
        name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    // A second process reads it: no run.
    let out = s.run(&["token"]);
    assert!(
        text(&out.stdout).contains("token from the shared store"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(s.runs(), 1);
}

#[test]
fn a_process_killed_while_holding_the_lock_does_not_block_the_next() {
    let s = Setup::new(
        "[ -f slow ] && { sleep 30 & echo $! > sleeper; wait; }",
        300_000,
    );
    std::fs::write(s.dir().join("slow"), "").unwrap();
    let mut holder = s
        .command(&["token", "--show"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleeper = s.dir().join("sleeper");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&sleeper).is_ok_and(|p| p.ends_with('\n')) {
        assert!(Instant::now() < deadline, "the first command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL: no cleanup at all; the kernel releases the lock.
    holder.kill().unwrap();
    holder.wait().unwrap();
    std::fs::remove_file(s.dir().join("slow")).unwrap();
    let started = Instant::now();
    let out = s.run(&["token", "--show"]);
    let waited = started.elapsed();
    // The killed process's command is an orphan now: end it and its child, by pid.
    let orphans: Vec<String> = std::fs::read_to_string(s.dir().join("pids"))
        .unwrap()
        .lines()
        .take(1)
        .chain(std::fs::read_to_string(&sleeper).unwrap().lines())
        .map(|p| p.trim().to_owned())
        .filter(|p| p.parse::<u32>().is_ok_and(|n| n > 1))
        .collect();
    for pid in &orphans {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    assert_eq!(text(&out.stdout), "tok-2-x7Qk2\n", "{}", text(&out.stderr));
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn entries_that_are_links_foreign_or_readable_by_others_are_ignored_and_reported() {
    let s = Setup::new("", 300_000);
    assert!(s.run(&["token"]).status.success());
    let entry = s.entry();
    let planted = s.dir().join("planted.json");
    let forged = std::fs::read_to_string(&entry)
        .unwrap()
        .replace("tok-1-x7Qk2", "forged-token-99");
    std::fs::write(&planted, &forged).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A link to a forged entry: never followed.
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&planted, &entry).unwrap();
    let out = s.run(&["-v", "token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-2-x7Qk2\n");
    assert!(
        text(&out.stderr).contains("is a link"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !std::fs::symlink_metadata(&entry)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a real entry"
    );

    // Readable by others: ignored.
    std::fs::write(&entry, &forged).unwrap();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.run(&["-v", "token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-3-x7Qk2\n");
    assert!(
        text(&out.stderr).contains("readable by others"),
        "{}",
        text(&out.stderr)
    );

    // Another user's: ignored (the tests run as root, which can hand a file to nobody).
    if nix_is_root() {
        std::fs::write(&entry, &forged).unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        let chown = Command::new("chown")
            .args(["65534", entry.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success());
        let out = s.run(&["-v", "token", "--show"]);
        assert_eq!(text(&out.stdout), "tok-4-x7Qk2\n");
        assert!(
            text(&out.stderr).contains("belongs to another user"),
            "{}",
            text(&out.stderr)
        );
    }

    // Corrupt: replaced.
    std::fs::write(&entry, "{not json").unwrap();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = s.runs();
    assert!(s.run(&["token", "--show"]).status.success());
    assert_eq!(s.runs(), before + 1);
    assert!(
        std::fs::read_to_string(&entry)
            .unwrap()
            .contains("\"token\"")
    );
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn a_store_folder_open_to_others_is_not_used() {
    let s = Setup::new("", 300_000);
    std::fs::create_dir(&s.store).unwrap();
    std::fs::set_permissions(&s.store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = s.run(&["-v", "token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-1-x7Qk2\n");
    assert!(
        text(&out.stderr).contains("no shared token store"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("it must be 0700"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&s.store).unwrap().count(),
        0,
        "nothing written there"
    );
}

#[test]
fn forget_no_shared_cache_and_no_store_at_all() {
    let s = Setup::new("", 300_000);
    assert_eq!(
        text(&s.run(&["token", "--forget"]).stdout),
        "corp: no shared token to forget\n"
    );
    assert!(s.run(&["token"]).status.success());
    assert_eq!(
        text(&s.run(&["token", "--forget"]).stdout),
        "corp: shared token forgotten\n"
    );
    assert!(s.run(&["token"]).status.success());
    assert_eq!(s.runs(), 2, "forgotten: the next call runs the command");
    // --no-shared-cache: neither read nor written.
    let out = s.run(&["--no-shared-cache", "token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-3-x7Qk2\n");
    assert_eq!(text(&s.run(&["token", "--show"]).stdout), "tok-2-x7Qk2\n");
    // No folder for a store at all (no variable, no HOME): in-process only, said at
    // default verbosity.
    let out = s
        .command(&["token", "--show"])
        .env_remove("MODELAUTH_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "tok-4-x7Qk2\n");
    insta::assert_snapshot!(text(&out.stderr), @"warning: no shared token store (no folder for it: MODELAUTH_CACHE_DIR, XDG_RUNTIME_DIR and HOME are unset); tokens stay in this process, so every call runs the token command");
}

#[test]
fn json_and_exec_credential_outputs() {
    let s = Setup::new("", 300_000);
    let out = s.run(&["token", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["provider"], "corp");
    assert_eq!(v["source"], "command");
    assert!(v.get("token").is_none(), "{v}");
    for field in ["expires_at", "obtained_at"] {
        let t = v[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{field}: {t}"
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&s.run(&["token", "--json", "--show"]).stdout).unwrap();
    assert_eq!(v["token"], "tok-1-x7Qk2");
    assert_eq!(v["source"], "shared_store");
    // Kubernetes client.authentication.k8s.io/v1 ExecCredential.
    let v: serde_json::Value =
        serde_json::from_slice(&s.run(&["token", "--exec-credential"]).stdout).unwrap();
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    assert_eq!(v["status"]["token"], "tok-1-x7Qk2");
    let expiry = v["status"]["expirationTimestamp"].as_str().unwrap();
    assert!(
        expiry.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(expiry).is_ok(),
        "{expiry}"
    );
    assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
    assert_eq!(s.runs(), 1);
}

#[test]
fn a_waiter_gives_up_on_a_stuck_lock_after_the_commands_bound_and_runs_without_the_store() {
    let s = Setup::new("", 300_000);
    std::fs::write(
        s.dir().join("config.toml"),
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [model_providers.corp.auth]\ncommand = \"./token.sh\"\ntimeout_ms = 500\n",
    )
    .unwrap();
    // Learn the entry's name, then empty the store and hold the entry's lock elsewhere.
    assert!(s.run(&["token"]).status.success());
    let entry = s.entry();
    std::fs::remove_file(&entry).unwrap();
    let lock = entry.with_extension("lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // flock has the lock once it runs sleep.
    let deadline = Instant::now() + Duration::from_secs(5);
    let held = || {
        Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .code()
            .is_some_and(|c| c != 0)
    };
    while !held() {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let out = s.run(&["token", "--show"]);
    let waited = started.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "tok-2-x7Qk2\n");
    assert!(
        waited >= Duration::from_millis(5500) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
    let stderr = text(&out.stderr).replace(&lock.display().to_string(), "[LOCK]");
    insta::assert_snapshot!(stderr, @"WARN shared token store: another process has held the lock [LOCK] for more than 5500 ms (its command's time limit plus 5 s); running the command without the store");
    assert_eq!(s.runs(), 2, "the command ran, without the store");
    assert!(!entry.exists(), "nothing was written without the lock");
}

#[test]
fn a_folder_or_a_dangling_link_where_the_lock_should_be_is_replaced() {
    let s = Setup::new("", 300_000);
    assert!(s.run(&["token"]).status.success());
    let entry = s.entry();
    let lock = entry.with_extension("lock");
    for make in [
        (|p: &Path| std::fs::create_dir(p).unwrap()) as fn(&Path),
        |p: &Path| std::os::unix::fs::symlink("/nonexistent/modelauth-lock", p).unwrap(),
    ] {
        std::fs::remove_file(&entry).unwrap();
        let _ = std::fs::remove_file(&lock);
        make(&lock);
        let out = s.run(&["token", "--show"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("was a link or a folder; replaced it"),
            "{}",
            text(&out.stderr)
        );
        let meta = std::fs::symlink_metadata(&lock).unwrap();
        assert!(meta.is_file(), "the lock is a plain file again");
        assert!(entry.exists(), "the store is used again");
    }
    assert_eq!(s.runs(), 3);
}

/// Found in trial: an entry naming `Host: evil.example` reached the gateway, and a FIFO in
/// an entry's place blocked every reader. Neither is trusted: the command runs instead and
/// the entry is replaced.
#[test]
fn an_entry_with_a_reserved_header_or_a_fifo_in_its_place_is_not_used() {
    let s = Setup::new("", 300_000);
    assert!(s.run(&["token"]).status.success());
    let entry = s.entry();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(
        &entry,
        format!(
            "{{\"version\":1,\"token\":\"planted-token\",\"obtained_at_ms\":{now_ms},\"expires_at_ms\":null,\"headers\":{{\"Host\":\"evil.example\"}}}}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.run(&["token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-2-x7Qk2\n", "{}", text(&out.stderr));
    std::fs::remove_file(&entry).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&entry)
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let out = s.run(&["token", "--show"]);
    assert_eq!(text(&out.stdout), "tok-3-x7Qk2\n", "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        std::fs::symlink_metadata(&entry).unwrap().is_file(),
        "replaced"
    );
}
