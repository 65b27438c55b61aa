//! The `wspipe` binary: parse flags, validate, serve.

use std::process::ExitCode;

use clap::error::ErrorKind;
use wspipe::config::file::{self, LoadError};
use wspipe::config::{Config, ReloadSource};

fn main() -> ExitCode {
    // `wspipe ctl ...` is the control client; anything else runs a server.
    // (A program literally named "ctl" can still be served as ./ctl.)
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "ctl") {
        return wspipe::control::client::main(args[1..].to_vec());
    }
    let loaded = match file::load(args.clone()) {
        Ok(loaded) => loaded,
        Err(LoadError::Clap(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(LoadError::Clap(e)) => return usage_error(&first_line(&e.to_string())),
        // Already names the file, line and key.
        Err(LoadError::File(msg)) => {
            eprintln!("wspipe: {msg}");
            return ExitCode::from(2);
        }
    };
    let cli = loaded.cli;
    if cli.print_config {
        print!("{}", file::render(&loaded.effective));
        return ExitCode::SUCCESS;
    }
    if let Some(kind) = cli.generate {
        return generate(kind);
    }
    if cli.license {
        // websocketd --license: name, version, license; no COMMAND needed.
        println!(
            "wspipe {}\nLicensed under {} (see Cargo.toml).",
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_LICENSE")
        );
        return ExitCode::SUCCESS;
    }
    let reload = cli.config.clone().map(|path| ReloadSource {
        path,
        args,
        effective: loaded.effective,
    });
    let mut config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) if e.exit_status() == 2 => return usage_error(&e.to_string()),
        Err(e) => {
            eprintln!("wspipe: {e}");
            return ExitCode::from(e.exit_status());
        }
    };
    config.reload = reload;
    // Before any thread: it edits the environment.
    let passed = match wspipe::systemd::take_listen_fds() {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("wspipe: sockets passed by the service manager: {e}");
            return ExitCode::FAILURE;
        }
    };
    wspipe::logging::init(config.log_level, config.log_format);
    wspipe::limits::raise_nofile();
    close_inherited_fds_on_exec();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wspipe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wspipe::server::run(config, passed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wspipe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--generate KIND`: the man page or a completion script on stdout.
fn generate(kind: wspipe::cli::Generate) -> ExitCode {
    use std::io::Write;
    let written = wspipe::generate::render(kind).and_then(|text| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&text)?;
        stdout.flush()
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // `wspipe --generate man | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wspipe: --generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bad flags: one line on stderr, exit status 2.
fn usage_error(msg: &str) -> ExitCode {
    eprintln!("wspipe: {msg} (see wspipe --help)");
    ExitCode::from(2)
}

fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg);
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// Descriptors wspipe itself inherited (from a shell, a supervisor, a test
/// runner) must not reach the children: mark every fd above stderr
/// close-on-exec. wspipe's own are close-on-exec already.
fn close_inherited_fds_on_exec() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11: one fcntl per open descriptor.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a descriptor number; harmless if closed.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
