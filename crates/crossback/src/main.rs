//! crossback: offline, full, verifiable backups of the Linux systems on one
//! machine. The binary is thin: the library (`crossback`) does the work.

use std::process::ExitCode;

use clap::Parser;
use crossback::{cli, layout};

fn main() -> ExitCode {
    // A child crossback started to look inside one filesystem in a private
    // mount namespace (see crossback_host::inspect): before any thread starts.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(crossback_host::inspect::CHILD_ARG) {
        return ExitCode::from(crossback_host::inspect::serve(&args, layout::inspect_slot) as u8);
    }
    if args.get(1).map(String::as_str) == Some(crossback_host::ns::GUARD_ARG) {
        return ExitCode::from(crossback_host::ns::serve_guard(&args) as u8);
    }
    crossback_host::ns::quiet_on_closed_pipe();
    let cli = cli::Cli::parse();
    let code = crossback::run(cli);
    // For tests and benchmarks: what the kernel counted this process reading.
    if std::env::var_os("CROSSBACK_REPORT_IO").is_some() {
        if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
            eprintln!("crossback-io: {}", io.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    code
}
