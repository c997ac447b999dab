//! The real `quaero-tui` dashboard in a real terminal (tmux) against a real daemon: keys go
//! in with `send-keys`, the screen comes back with `capture-pane`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use quaero_tests::{Daemon, bin_path};

/// A tmux server of our own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is required for this test and was not found: install it with `apt-get install -y tmux`"
        );
        let t = Tmux { socket: format!("quaero-test-{}", std::process::id()) };
        let out = t.tmux(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "30", cmd]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            // One key per call: tmux would otherwise send `Escape q` as Alt-q.
            self.tmux(&["send-keys", "-t", "tui", k]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "tui"]).stdout).into_owned()
    }

    /// Polls the screen until `pred` holds; fails with the last screen otherwise.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn the_dashboard_runs_a_job_and_shows_it_complete() {
    let d = Daemon::builder()
        .definition(
            "demo.toml",
            "id = \"demo\"\nname = \"Demo run\"\n\n[[steps]]\nname = \"greet\"\ntype = \"emit\"\n\
             [steps.config]\ncount = 40\ninterval_ms = 50\nmessage = \"hello {i} of {n}\"\n",
        )
        .start();
    // `; sleep` keeps the pane alive after exit so the exit status can be read.
    let cmd = format!("{} --server {}; echo quaero-tui exited $?; sleep 60", bin_path("quaero-tui").display(), d.base);
    let t = Tmux::start(&cmd);
    t.wait_for("the connected header", |s| s.contains("● connected"));

    // Run the definition from the picker.
    t.keys(&["r"]);
    t.wait_for("the run picker", |s| s.contains("Run a definition") && s.contains("demo"));
    t.keys(&["Enter"]);
    t.wait_for("the new manager in the table", |s| s.contains("Demo run") && s.contains("demo"));

    // Open it, then its step: the step's events, then its completed status.
    t.keys(&["Enter"]);
    t.wait_for("the step list", |s| s.contains("Step 1/1: greet"));
    t.keys(&["Enter"]);
    t.wait_for("the step's events", |s| s.contains("[greet/step] hello"));
    let s = t.wait_for("the completed status", |s| s.contains("Demo run completed") && s.contains("hello 40 of 40"));
    assert!(!s.contains('\u{1b}'));

    // Back to the list, which shows it completed too; then quit cleanly.
    // Esc leaves the events pane, a second Esc the manager.
    t.keys(&["Escape", "Escape"]);
    t.wait_for("the list with the completed job", |s| {
        s.contains("Managers") && s.lines().any(|l| l.contains("completed") && l.contains("Demo run"))
    });
    t.keys(&["q"]);
    t.wait_for("a clean exit", |s| s.contains("quaero-tui exited 0"));
}
