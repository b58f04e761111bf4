//! The `tigel` binary of this build, run the way the command-line tests run it.

use std::process::Command;

/// The binary, with the environment's backend and adapter choice removed so that a test's own flags
/// decide.
pub fn tigel_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tigel"));
    c.env_remove("TIGEL_BACKEND").env_remove("TIGEL_ADAPTER");
    c
}

/// Runs a command to its end: the exit code (-1 when a signal ended it), stdout and stderr.
pub fn output_of(c: &mut Command) -> (i32, String, String) {
    let o = c.output().expect("run tigel");
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    (o.status.code().unwrap_or(-1), text(&o.stdout), text(&o.stderr))
}
