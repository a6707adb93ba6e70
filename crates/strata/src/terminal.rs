//! Asking the user for a secret on the terminal.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

/// Is standard input a terminal we can ask on?
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal()
}

/// Print `prompt` on stderr and read one line from the terminal on stdin with echo off (the
/// terminal's settings are put back whatever happens while reading).
pub fn read_secret(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // ECHONL: the Enter key still moves to the next line.
    quiet.local_modes.insert(LocalModes::ECHONL);
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    tcsetattr(&stdin, OptionalActions::Flush, &quiet).context("turning off the echo")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    read.context("reading the password")?;
    restored.context("restoring the terminal settings")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Print `prompt` on stderr and read one line from stdin (echoed).
pub fn read_line(prompt: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
