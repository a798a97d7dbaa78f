//! API tokens end to end: `jobctl token create|list|revoke` on a real dev cell,
//! a revoked token failing on its next call, jobctl finding a token by itself
//! (`~/.config/borg/token`, a dev cell's `admin.token`), and a master with no
//! token that refuses to start unless `--insecure`.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{stderr, stdout, wait_for, Cell, JOBCTL};

/// `jobctl` against the cell with `token` (none: whatever jobctl finds from
/// `cwd` with `home` as its home directory).
fn jobctl_as(cell: &Cell, token: Option<&str>, cwd: &Path, home: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(JOBCTL);
    c.arg("--master")
        .arg(&cell.master)
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("BORG_TOKEN");
    if let Some(t) = token {
        c.env("BORG_TOKEN", t);
    }
    c.output().unwrap()
}

#[test]
fn tokens_are_made_listed_and_revoked_and_a_revoked_one_fails_at_once() {
    let cell = Cell::start(1);
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    let out = cell.jobctl(&[
        "token", "create", "ci", "--owner", "alice", "--role", "user",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("token/ci created (owner alice, role user)"),
        "{}",
        stderr(&out)
    );
    let secret = stdout(&out).trim().to_string();
    assert!(secret.starts_with("borg_"), "{secret}");

    // Alice submits (her job is hers) and may not manage tokens.
    let spec = scratch.path().join("mine.yaml");
    std::fs::write(&spec, "name: mine\ntask:\n  command: [\"/bin/true\"]\n").unwrap();
    let out = jobctl_as(
        &cell,
        Some(&secret),
        scratch.path(),
        &home,
        &["run", "-f", spec.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = jobctl_as(
        &cell,
        Some(&secret),
        scratch.path(),
        &home,
        &["get", "jobs", "-o", "json"],
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs["jobs"][0]["owner"], "alice", "{jobs}");
    let out = jobctl_as(
        &cell,
        Some(&secret),
        scratch.path(),
        &home,
        &["token", "list"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(forbidden)"), "{}", stderr(&out));

    // Found in ~/.config/borg/token without BORG_TOKEN.
    let config = home.join(".config").join("borg");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("token"), format!("{secret}\n")).unwrap();
    let out = jobctl_as(&cell, None, scratch.path(), &home, &["get", "jobs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(config.join("token")).unwrap();

    let out = cell.jobctl(&["token", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "OWNER", "ROLE", "AGE", "REVOKED"],
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l[..3] == ["bootstrap", "default", "admin"] && l[4] == "-"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l[..3] == ["ci", "alice", "user"] && l[4] == "-"),
        "{table}"
    );
    assert!(!table.contains(&secret), "a secret in the list");

    let out = cell.jobctl(&["token", "revoke", "ci"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "token/ci revoked");
    // Its very next call fails.
    let out = jobctl_as(
        &cell,
        Some(&secret),
        scratch.path(),
        &home,
        &["get", "jobs"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: the token is not valid: unknown or revoked (unauthorized)"),
        "{err}"
    );
    let out = cell.jobctl(&["token", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ci = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert!(ci["revoked_at"].is_string(), "{ci}");
    // Names are not reused.
    let out = cell.jobctl(&["token", "create", "ci", "--owner", "bob", "--role", "user"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(conflict)"), "{}", stderr(&out));
}

#[test]
fn jobctl_finds_the_dev_cells_admin_token_from_where_the_cell_was_started() {
    // A dev cell started with its default data dir `.borg-dev` under `top`.
    let cell = Cell::start_at(1, ".borg-dev");
    let top = cell.data_dir.parent().unwrap().to_path_buf();
    let below = top.join("src").join("deep");
    std::fs::create_dir_all(&below).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = jobctl_as(&cell, None, &below, home.path(), &["token", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("bootstrap"), "{}", stdout(&out));
    // Elsewhere, with no token anywhere: refused, saying how to give one.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = jobctl_as(&cell, None, elsewhere.path(), home.path(), &["get", "jobs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("BORG_TOKEN"), "{}", stderr(&out));
    // The file is the owner's alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cell.data_dir.join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Start `jobctl component borgmaster` on a fresh database with `env`.
fn master(database_url: &str, env: &[(&str, &str)], log: &Path) -> std::process::Child {
    let mut c = Command::new(JOBCTL);
    c.args(["component", "borgmaster", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("BORG") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    c.spawn().unwrap()
}

#[test]
fn a_master_with_no_token_refuses_to_start_unless_insecure() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt
        .block_on(devpg::testing::fresh_database(&borg_store::MIGRATOR))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("refused.log");
    let mut refused = master(&url, &[], &log);
    let status = wait_for("the master to refuse", Duration::from_secs(60), || {
        refused.try_wait().unwrap()
    });
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        // (`jobctl component` says `error:` where the borgmaster binary says `borgmaster:`)
        "error: no live admin token in the database: start with --bootstrap-token-file FILE \
         (or BORG_BOOTSTRAP_TOKEN) to make one, or with --insecure to run without authentication",
        "{text}"
    );

    let log = dir.path().join("insecure.log");
    let mut open = master(&url, &[("BORG_INSECURE", "true")], &log);
    wait_for("the insecure warning", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("borgmaster serving").then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("running INSECURE"), "{text}");
    assert!(
        open.try_wait().unwrap().is_none(),
        "the insecure master exited: {text}"
    );
    let _ = open.kill();
    let _ = open.wait();
}
